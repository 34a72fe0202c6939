"""What a perfect audio encoder would reach with this text side, against issue 3's bars.

The audio encoder is replaced by each clip's true attributes, read off the synthetic manifest
(training/attributes.py: instruments, groove, section kind, density, style, loudness, tempo and
mode during the clip) through a small trained map to the joint space. The text side and the
fusion then train as the default recipe trains them (same steps, batches, texts and schedule),
and two held-out sets are scored: the held-out phrasings, and the same songs asked with the
training phrasings. The shipped model is scored on the same two sets in the same run. The gap
between the oracle and the shipped model is the audio encoder's; the gap between the two
phrasings is the text side's.

Data: $COLLAP_TRAIN_DATA (the recipe's training set), $COLLAP_EVAL_DATA (held-out phrasings, as
the retrieval benchmark) and $COLLAP_EVAL_TRAINWORDS_DATA (the same seed, training phrasings);
each one not given is generated into benchmarks/.cache (the training set takes ~10 minutes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import retrieval

TRAIN_SONGS = 1500
TRAIN_MAX_SECONDS = 150.0
TRAIN_QUERIES = 10


def datasets() -> tuple[Path, Path, Path]:
    train = retrieval.synth_set(
        "COLLAP_TRAIN_DATA",
        "train",
        songs=TRAIN_SONGS,
        seed=0,
        max_seconds=TRAIN_MAX_SECONDS,
        queries=TRAIN_QUERIES,
    )
    heldout = retrieval.dataset()
    trainwords = retrieval.synth_set(
        "COLLAP_EVAL_TRAINWORDS_DATA",
        "eval-trainwords",
        songs=retrieval.SONGS,
        seed=retrieval.SEED,
        phrasings="train",
    )
    return train, heldout, trainwords


def oracle_encoder(labels: int, dim: int) -> Any:
    import torch.nn.functional as F
    from torch import Tensor, nn

    class Oracle(nn.Module):
        """The clip's attribute vector (its "features") -> a unit vector of the joint space."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(labels, 512), nn.GELU(), nn.Linear(512, dim))

        def embed(self, features: Tensor, mask: Tensor) -> Tensor:
            return F.normalize(self.net(features.float()), dim=-1)

    return Oracle()


def _as_features(audio: Any, targets: np.ndarray) -> Any:
    from collap_model.training.cache import AudioCache

    rows = targets.shape[0]
    times, offsets = np.asarray(audio.times), np.asarray(audio.offsets)
    return AudioCache(targets.astype(np.float32), np.ones((rows, 1), bool), times, offsets)


def train_oracle(manifest: Path, cache: Path) -> tuple[Any, list[str], float]:
    """The recipe with attribute "audio"; returns the model, its label order, seconds taken."""
    import torch

    from collap_model.config import load_preset
    from collap_model.model import CoLLAP
    from collap_model.training import train as recipe_steps

    recipe = recipe_steps.Recipe()
    torch.manual_seed(recipe.seed)
    model = CoLLAP(load_preset(recipe.preset))
    data = recipe_steps.prepare(model, manifest, cache)
    labels = data.attributes.labels
    data.audio = _as_features(data.audio, data.attributes.targets)
    model.audio_encoder = oracle_encoder(len(labels), model.config.embed_dim)
    songs = list(range(len(data.audio) - recipe.val_songs))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.train()
    began = time.monotonic()
    for step in range(recipe.steps):
        rng = np.random.default_rng([recipe.seed, step])
        chosen = [int(s) for s in rng.choice(songs, size=recipe.batch, replace=False)]
        batch, _ = recipe_steps.make_batch(
            data, chosen, rng, recipe.caption_prob, recipe.clip_stride
        )
        for group in opt.param_groups:
            group["lr"] = recipe_steps.lr_at(step, recipe)
        loss = model(batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    model.eval()
    return model, labels, time.monotonic() - began


def score_oracle(
    model: Any, labels: list[str], clipping: Any, manifest: Path, cache: Path
) -> dict[str, Any]:
    """Queries and captions, text->audio, of the oracle on a set: its clips as `clipping` (a
    real model of the same front end) cuts them, their attributes in the training label order."""
    from collap_model.synth.dataset import read_manifest
    from collap_model.training.attributes import clip_attributes
    from collap_model.training.cache import audio_cache, text_cache
    from collap_model.training.evaluate import both_ways, collect_texts, embed_songs, fusion_scores

    entries = read_manifest(manifest)
    audio = audio_cache(clipping, [e.audio_path for e in entries], cache, None)
    attrs = clip_attributes(entries, np.asarray(audio.times), np.asarray(audio.offsets))
    column = {name: k for k, name in enumerate(labels)}
    targets = np.zeros((attrs.targets.shape[0], len(labels)), np.float32)
    for j, name in enumerate(attrs.labels):
        if name in column:  # a label the training set never saw has no column to fill
            targets[:, column[name]] = attrs.targets[:, j]
    songs = embed_songs(model, _as_features(audio, targets))
    texts = collect_texts(entries)
    index = list(range(len(texts.texts)))
    scores = fusion_scores(model, text_cache(model, texts.texts, cache), index, songs)
    out = {}
    for kind, label in (("query", "queries"), ("caption", "captions")):
        rows = [i for i in index if texts.kind[i] == kind]
        out[label] = both_ways(scores[rows], [texts.song[i] for i in rows])["text_to_audio"]
    return out


def run() -> str:
    from collap_model.checkpoint import load_model
    from collap_model.training.evaluate import evaluate

    train, heldout, trainwords = datasets()
    shipped = load_model(device="auto")
    model, labels, seconds = train_oracle(train / "manifest.jsonl", train / ".collap-cache")
    scored = {}
    for words, data in (("held-out", heldout), ("training", trainwords)):
        cache = data / ".collap-cache"
        real = evaluate(shipped, data / "manifest.jsonl", cache)["fusion"]
        # the shipped model cuts the clips: its front end's cache was just built by evaluate
        oracle = score_oracle(model, labels, shipped, data / "manifest.jsonl", cache)
        for kind in ("queries", "captions"):
            scored[words, kind, "shipped model"] = real[kind]["text_to_audio"]
            scored[words, kind, "oracle"] = oracle[kind]
    rows = [
        f"| {words} | {kind} | {side} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | "
        f"{m['MedR']:.0f} |"
        for (words, kind, side), m in scored.items()
    ]
    table = "| phrasings | texts | audio side | R@1 | R@5 | R@10 | MedR |\n"
    table += "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    best = scored["held-out", "queries", "oracle"]
    return f"""## Ceiling with perfect audio (issue 3)

`python -m benchmarks.run ceiling`: the audio encoder replaced by each clip's true attributes
from the manifest ({len(labels)} labels) through a trained 2-layer map; text side and fusion
trained by the default recipe on the recipe's {TRAIN_SONGS} training songs ({seconds / 60:.1f}
minutes of steps). The same {retrieval.SONGS} held-out songs (seed {retrieval.SEED}+) asked
with the held-out and with the training phrasings; text->audio. Shipped model
`{shipped.fingerprint}` on the same sets. Held-out short queries with perfect audio:
R@10 {best["R@10"]:.3f} (bar >= 0.8), R@1 {best["R@1"]:.3f} (bar >= 0.4).

{table}
"""
