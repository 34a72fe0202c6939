"""`collap locator`: train a checkpoint's locator (fusion.WhereHead) alone, on timed texts.

Everything else of the model stays as it is, so its scores, first-stage vectors and the
indexes built with them do not move; only where a hit's best moment lies does (a new
fingerprint all the same: the weights changed). The clips' embeddings are computed once
(the audio caches beside each data set, as `collap train` and `collap eval` keep them), then
each step takes B timed texts (caption sentences without their time, timed short queries;
timing.py) with their own songs at the full clip grid, the one `indexer locate` reads, and
minimises the cross-entropy of the evidence over the song's clips against the clip of the
stated time, with `neighbour` of the target's mass on each adjacent clip (a time near a clip
edge is heard in both). The last `val_songs` songs of the first data set are held out; the
state with the best validation localisation is kept. Seeded per step and resumable.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collap_model.checkpoint import load_model, save_checkpoint
from collap_model.config import ModelConfig, TextPooling
from collap_model.fusion import WhereHead
from collap_model.model import CoLLAP
from collap_model.outputs import ClipBatch
from collap_model.text_encoder import TextStates
from collap_model.training.cache import DATA_CACHE, TextCache, audio_cache, text_cache
from collap_model.training.evaluate import embed_songs, localisation
from collap_model.training.timing import target_clip, timed_texts
from collap_model.training.train import lr_at

log = logging.getLogger("collap.train")
STATE_FILE = "locator_state.pt"


@dataclass(frozen=True)
class LocatorRecipe:
    layers: int = 2  # fusion.locator_layers of the trained head
    steps: int = 2000
    batch: int = 64  # timed texts per step, each with its own song
    lr: float = 1e-3  # peak (AdamW), cosine decay after warm-up
    warmup: int = 100
    weight_decay: float = 0.01
    neighbour: float = 0.2  # target mass on each clip next to the stated one
    # chance each word of a training text is hidden from the locator (at least one stays):
    # evaluation texts are worded otherwise, so no single word may carry a placement
    word_dropout: float = 0.0
    # chance each word's backbone state is swapped for a random word's of another text: a word
    # the locator never saw in that place reads as such, where hiding it leaves the rest
    word_swap: float = 0.0
    # the locator also reads each text's sentence embedding (fusion.locator_sentence)
    sentence: bool = False
    # chance a training text's section names (the training phrasebooks': "chorus", "outro",
    # ...) read as random words of other texts: a listener's name for a section may be one the
    # locator never heard, and then what the text says of the music has to place it
    name_swap: float = 0.0
    val_songs: int = 40
    eval_every: int = 250
    seed: int = 0
    device: str = "auto"


@dataclass
class TimedData:
    clips: list[np.ndarray]  # per song (N, D) float32 clip embeddings
    times: list[np.ndarray]  # per song (N, 2) float32 seconds
    song: list[int]  # per timed text: its song
    seconds: list[float]  # per timed text: the time it states
    texts: TextCache  # the timed texts, in order
    first_songs: int  # songs of the first data set (validation comes from its end)
    # per timed text: which of its tokens spell a training phrasebook's section name (only
    # when prepared for `name_swap`)
    names: list[np.ndarray] = field(default_factory=list)


def with_locator(model: CoLLAP, layers: int, seed: int, sentence: bool = False) -> CoLLAP:
    """`model` with a locator of `layers` context layers (reading each text's sentence
    embedding too with `sentence`): a new head (seeded), whose direct part starts from the
    model's own locator when it has one."""
    data = model.config.model_dump(mode="json")
    data["fusion"].update(locator=True, locator_layers=layers, locator_sentence=sentence)
    config = ModelConfig.model_validate(data)
    old = model.fusion.where
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = WhereHead(config)
    if old is not None:
        head.load_state_dict(old.state_dict(), strict=False)
    model.config = config
    model.fusion.where = head.to(model.device).train(model.training)
    model._fingerprint = None
    return model


def prepare_timed(
    model: CoLLAP, manifests: Sequence[Path], text_dir: Path, section_names: bool = False
) -> TimedData:
    """The clips and timed texts of `manifests` (with `section_names`, which tokens of each
    text spell a section name: what `name_swap` reads)."""
    from collap_model.synth.dataset import read_manifest

    clips: list[np.ndarray] = []
    times: list[np.ndarray] = []
    song: list[int] = []
    seconds: list[float] = []
    texts: list[str] = []
    first = 0
    for path in manifests:
        entries = read_manifest(path)
        if not entries:
            raise ValueError(f"{path}: no songs")
        first = first or len(entries)
        # whole songs, as `indexer locate` reads them (the caches `collap eval` keeps)
        cache = audio_cache(model, [e.audio_path for e in entries], path.parent / DATA_CACHE, None)
        batch = embed_songs(model, cache)
        for s, e in enumerate(entries):
            n = int(batch.mask[s].sum())
            clips.append(batch.clips[s, :n].numpy())
            times.append(batch.clip_times[s, :n].numpy())
            for text, t in timed_texts(e):
                song.append(len(clips) - 1)
                seconds.append(t)
                texts.append(text)
    if not texts:
        raise ValueError("no timed texts in the data: the locator learns from them")
    names = section_tokens(model, texts) if section_names else []
    return TimedData(clips, times, song, seconds, text_cache(model, texts, text_dir), first, names)


def section_tokens(model: CoLLAP, texts: Sequence[str]) -> list[np.ndarray]:
    """Per text, a mask over its tokens (the ones its backbone states stand for) of those that
    spell a section name of the training phrasebooks (TRAIN, TRAIN_ALT)."""
    from collap_model.synth.phrases import TRAIN, TRAIN_ALT

    enc = model.text_encoder
    names = sorted({n for book in (TRAIN, TRAIN_ALT) for ns in book.sections.values() for n in ns})
    spelled = [tuple(ids) for ids in enc.tokenize(names) if ids]
    out = []
    for ids in enc.tokenize(list(texts)):
        mask = np.zeros(len(ids), dtype=bool)
        for name in spelled:
            k = len(name)
            for i in range(len(ids) - k + 1):
                if tuple(ids[i : i + k]) == name:
                    mask[i : i + k] = True
        out.append(mask)
    return out


def soft_targets(
    targets: Sequence[int], counts: Sequence[int], n: int, neighbour: float
) -> torch.Tensor:
    """(B, n) target distributions: 1 - 2·neighbour on each target clip, `neighbour` on each
    real clip beside it (at a song's edge the missing side's share stays on the target)."""
    out = torch.zeros(len(targets), n)
    for i, (t, k) in enumerate(zip(targets, counts, strict=True)):
        out[i, t] = 1.0
        for j in (t - 1, t + 1):
            if 0 <= j < k:
                out[i, j] += neighbour
                out[i, t] -= neighbour
    return out


def locator_loss(
    model: CoLLAP,
    data: TimedData,
    picked: Sequence[int],
    neighbour: float,
    word_dropout: float = 0.0,
    generator: torch.Generator | None = None,
    word_swap: float = 0.0,
    name_swap: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of the locator's evidence over each picked text's own song against
    its stated clip and, with `neighbour` of the mass each, the clips beside it; with
    `word_dropout`, each token hidden with that chance, and with `word_swap` each token's
    backbone state replaced by a random token's of the cache (both drawn from `generator`)."""
    where = model.fusion.where
    assert where is not None
    dev = model.device
    songs = [data.song[k] for k in picked]
    batch = ClipBatch.of_arrays([data.clips[s] for s in songs], [data.times[s] for s in songs])
    batch = batch.to(dev)
    counts = [data.clips[s].shape[0] for s in songs]
    targets = [target_clip(data.seconds[k], data.times[data.song[k]]) for k in picked]
    states = data.texts.states(list(picked))
    if name_swap > 0:
        names = [data.names[k] for k in picked]
        states = swap_names(states, names, data.texts, name_swap, generator)
    if word_swap > 0:
        states = swap_words(states, data.texts, word_swap, generator)
    with torch.no_grad():
        text = model.text_encoder(states)
    if word_dropout > 0:
        keep = torch.rand(text.mask.shape, generator=generator) >= word_dropout
        keep = keep.to(dev) & text.mask
        first = text.mask.float().argmax(dim=1)  # a text keeps at least its first token
        keep[torch.arange(len(picked), device=dev), first] = True
        text = replace(text, mask=keep)
        if where.w_sentence is not None and model.config.text.pooling is TextPooling.MEAN:
            text = replace(text, sentence=kept_sentences(model, states, keep))
    evidence = where.aligned(text, batch).float()  # (B, N)
    goal = soft_targets(targets, counts, evidence.shape[1], neighbour).to(dev)
    logp = torch.log_softmax(evidence, dim=1).masked_fill(~batch.mask, 0.0)
    return -(goal * logp).sum(dim=1).mean()


def kept_sentences(model: CoLLAP, states: TextStates, keep: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings (B, D) of the words `keep` (B, L) leaves of each text: the mean of
    their backbone states, as the backbone pools a whole text, so a hidden word is hidden from
    the sentence the locator reads too."""
    kept = keep.cpu()
    pooled = [t[kept[i, : t.shape[0]]].float().mean(dim=0) for i, t in enumerate(states.tokens)]
    with torch.no_grad():
        return model.text_encoder.sentence_of(torch.stack(pooled))


def swap_names(
    states: TextStates,
    names: Sequence[np.ndarray],
    cache: TextCache,
    chance: float,
    generator: torch.Generator | None,
) -> TextStates:
    """`states` where, with `chance` per text that has any, every token of its section names
    (`names`, masks per text) reads as a token drawn from the whole cache."""
    out = []
    for tokens, mask in zip(states.tokens, names, strict=True):
        if mask.any() and float(torch.rand((), generator=generator)) < chance:
            tokens = random_rows(tokens, torch.from_numpy(mask), cache, generator)
        out.append(tokens)
    return TextStates(out, states.pooled)


def swap_words(
    states: TextStates, cache: TextCache, chance: float, generator: torch.Generator | None
) -> TextStates:
    """`states` with each token's backbone state, with `chance`, that of a token drawn from
    the whole cache; the pooled states stay (the locator reads the tokens)."""
    out = []
    for tokens in states.tokens:
        hit = torch.rand(tokens.shape[0], generator=generator) < chance
        if hit.any():
            tokens = random_rows(tokens, hit, cache, generator)
        out.append(tokens)
    return TextStates(out, states.pooled)


def random_rows(
    tokens: torch.Tensor, hit: torch.Tensor, cache: TextCache, generator: torch.Generator | None
) -> torch.Tensor:
    """A copy of one text's token states (L, H) whose rows `hit` (L,) are tokens drawn from
    the whole cache."""
    rows = torch.randint(cache.tokens.shape[0], (int(hit.sum()),), generator=generator).numpy()
    tokens = tokens.clone()
    drawn = torch.from_numpy(np.asarray(cache.tokens[rows], dtype=np.float32))
    tokens[hit] = drawn.to(tokens.dtype)
    return tokens


def validate(model: CoLLAP, data: TimedData, songs: Sequence[int]) -> dict[str, float]:
    if not songs:
        return {}
    model.eval()
    rank = {s: i for i, s in enumerate(songs)}
    items = [(rank[s], "", t) for s, t in zip(data.song, data.seconds, strict=True) if s in rank]
    index = [k for k, s in enumerate(data.song) if s in rank]
    batch = ClipBatch.of_arrays([data.clips[s] for s in songs], [data.times[s] for s in songs])
    result = localisation(model, batch, data.texts.subset(index), items)
    where = model.fusion.where
    assert where is not None
    where.train()
    return result


def train_locator(
    checkpoint: str, manifests: Sequence[Path], out: Path, recipe: LocatorRecipe,
    stop_after: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) `checkpoint`'s locator into `out` (a checkpoint folder)."""
    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(None if checkpoint == "default" else checkpoint, device=recipe.device)
    source = model.fingerprint
    model = with_locator(model, recipe.layers, recipe.seed, recipe.sentence)
    data = prepare_timed(model, manifests, out / "cache", section_names=recipe.name_swap > 0)
    first = data.first_songs
    val = list(range(first - min(recipe.val_songs, first // 5), first))
    held = set(val)
    items = [k for k, s in enumerate(data.song) if s not in held]
    model.requires_grad_(False)
    where = model.fusion.where
    assert where is not None
    where.requires_grad_(True)
    params = list(where.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    start, best, best_state, history = 0, -1.0, None, []
    state_path = out / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, map_location=model.device, weights_only=False)
        if state["recipe"] != asdict(recipe) or state["source"] != source:
            raise ValueError(f"{state_path} was written by another recipe or checkpoint")
        where.load_state_dict(state["where"])
        opt.load_state_dict(state["optimizer"])
        start, best, best_state = int(state["step"]), state["best"], state["best_state"]
        history = state["history"]
        log.info("resuming at step %d", start)
    prepared = time.monotonic()
    model.eval()  # the frozen parts as they serve; only the locator trains (its dropout on)
    where.train()
    end = recipe.steps if stop_after is None else min(recipe.steps, start + stop_after)
    for step in range(start, end):
        rng = np.random.default_rng([recipe.seed, step])
        torch.manual_seed(recipe.seed * 1_000_003 + step)
        size = min(recipe.batch, len(items))
        picked = [int(k) for k in rng.choice(items, size=size, replace=False)]
        words = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        loss = locator_loss(
            model, data, picked, recipe.neighbour, recipe.word_dropout, words,
            word_swap=recipe.word_swap, name_swap=recipe.name_swap,
        )  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            log.info("locator step %d/%d loss %.3f", step + 1, recipe.steps, loss.item())
        if (step + 1) % recipe.eval_every == 0 or step + 1 in (recipe.steps, end):
            with torch.no_grad():
                metrics = validate(model, data, val)
            history.append({"step": step + 1, "loss": loss.item(), **metrics})
            log.info("locator step %d validation %s", step + 1, json.dumps(metrics))
            if metrics.get("locate", 0.0) > best or best_state is None:
                best = metrics.get("locate", 0.0)
                best_state = {k: v.detach().clone() for k, v in where.state_dict().items()}
            state = {
                "where": where.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                "recipe": asdict(recipe), "source": source, "best": best,
                "best_state": best_state, "history": history,
            }  # fmt: skip
            torch.save(state, state_path)
    if end < recipe.steps:
        log.info("stopped at step %d of %d; run again to continue", end, recipe.steps)
        return {"stopped_at": end, "steps": recipe.steps, "history": history}
    assert best_state is not None
    where.load_state_dict(best_state)
    model.eval()
    model.trained = True
    save_checkpoint(model, out)
    report = {
        "fingerprint": model.fingerprint,
        "source": source,
        "layers": recipe.layers,
        "steps": recipe.steps,
        "train_texts": len(items),
        "val_songs": len(val),
        "best_validation_locate": best,
        "history": history,
        "prepare_seconds": prepared - began,
        "train_seconds": time.monotonic() - prepared,
    }
    (out / "locator_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
