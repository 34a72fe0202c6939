"""The training recipe: contrastive pairs (song, caption or query) from a manifest.

Audio and (frozen-backbone) text features are cached once; each step samples B songs and one
text per song (the long caption with probability `caption_prob`, else one of its short
queries), embeds the songs' clips with the audio encoder, and minimises the CoLLAP loss plus,
where the manifest says what plays when (synthetic data), a per-clip attribute loss
(attributes.py). Clip features are augmented with a noise floor and gain (augment.py).
Everything random is seeded per step, and the state is saved every `eval_every` steps, so an
interrupted run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from collap_model.audio_encoder import CompactAudioEncoder, TaggedAudioEncoder
from collap_model.checkpoint import resolve_device, save_checkpoint
from collap_model.config import load_preset
from collap_model.model import CoLLAP, TrainingBatch
from collap_model.outputs import ClipBatch
from collap_model.text_encoder import TextStates
from collap_model.training.attributes import (
    AttributeHead,
    Attributes,
    batch_targets,
    clip_attributes,
)
from collap_model.training.augment import LogMelAugment
from collap_model.training.cache import (
    DATA_CACHE,
    AudioCache,
    TextCache,
    audio_cache,
    concat_caches,
    text_cache,
)
from collap_model.training.calibrate import calibrate
from collap_model.training.evaluate import both_ways, embed_songs, fusion_scores
from collap_model.training.timing import target_clip, timed_texts

log = logging.getLogger("collap.train")
STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class Recipe:
    preset: str = "collap-mini"  # model to train (a preset name)
    steps: int = 2400  # optimiser steps
    batch: int = 32  # songs per step (each with one text)
    lr: float = 2e-3  # peak learning rate (AdamW), cosine decay after warm-up
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.01
    caption_prob: float = 0.3  # chance a song's text is its long caption, else a short query
    # train on every k-th clip of a song (and its last): with 10 s clips every 5 s, k = 2
    # still covers the whole song and halves the audio encoder's work per step
    clip_stride: int = 2
    attribute_weight: float = 1.0  # weight of the per-clip attribute loss (0: contrastive only)
    augment: bool = True  # noise floor and gain on log-mel features (compact encoder only)
    val_songs: int = 50  # songs held out of training for the validation recall
    eval_every: int = 250  # steps between validation, logging of recall, and state saves
    seed: int = 0
    device: str = "auto"
    # a trained compact model (name or folder) whose convolution stages a tagged model takes
    # and keeps fixed: their pools are computed once, so a step trains only the heads (~100x
    # cheaper on a CPU), and the dynamics the compact model learned come along
    compact_from: str | None = None
    # the tagger's z-score statistics come from the recorded songs' training clips when the
    # data has any ("recordings": real music, the kind a catalog holds), else from all ("all")
    tag_statistics: str = "recordings"
    # weight of the localisation loss of presets with a locator (fusion.locator): each song's
    # timed texts (caption sentences without their time, timed queries) against its clips
    where_weight: float = 0.5
    # share of each batch drawn from the recorded songs (the rest from the synthetic ones);
    # None draws every training song alike, so more synthetic songs also mean less real music
    # per step
    real_share: float | None = None
    # chance each token of a training text is hidden from the learned token path, so it learns
    # to rank from whichever words a text has; the pooled state (the tag bridge, the sentence)
    # reads the whole text
    word_dropout: float = 0.0


@dataclass
class Data:
    audio: AudioCache
    texts: TextCache
    captions: list[int]  # text index of each song's caption
    queries: list[list[int]]  # text indices of each song's queries
    attributes: Attributes  # per-clip targets from the manifest's sections (may have no labels)
    first_songs: int  # songs of the first manifest (validation comes from its end)
    recorded: np.ndarray  # (S,) bool: the song is a recording (its entry names a `source`)
    timed: list[list[tuple[int, float]]]  # per song: (text index, the second it states)
    pools: np.ndarray | None = None  # (M, 2 C) fixed compact pools (Recipe.compact_from)


def prepare(
    model: CoLLAP,
    manifest: Path | Sequence[Path],
    cache_dir: Path | None = None,
    text_dir: Path | None = None,
) -> Data:
    """Caches and texts of one or several manifests, their songs one after another. Each
    manifest's audio features are cached in `cache_dir`, or beside it (DATA/.collap-cache,
    where `collap eval` and `collap recordings` keep theirs) when None; texts in `text_dir`,
    else `cache_dir`, else beside the first manifest."""
    from collap_model.synth.dataset import read_manifest

    manifests = [manifest] if isinstance(manifest, Path) else list(manifest)
    cap = model.config.frontend.max_seconds
    entries = []
    caches = []
    for path in manifests:
        part = read_manifest(path)
        entries.extend(part)
        folder = cache_dir if cache_dir is not None else path.parent / DATA_CACHE
        caches.append(audio_cache(model, [e.audio_path for e in part], folder, cap))
    if len(entries) < 4:
        raise ValueError(f"{manifests[0]}: {len(entries)} songs; training needs at least 4")
    audio = concat_caches(caches)
    texts: list[str] = []
    captions: list[int] = []
    queries: list[list[int]] = []
    timed: list[list[tuple[int, float]]] = []
    for e in entries:
        captions.append(len(texts))
        texts.append(e.caption)
        queries.append(list(range(len(texts), len(texts) + len(e.queries))))
        texts.extend(e.queries)
        stated = timed_texts(e)
        timed.append([(len(texts) + i, seconds) for i, (_, seconds) in enumerate(stated)])
        texts.extend(text for text, _ in stated)
    attributes = clip_attributes(entries, np.asarray(audio.times), np.asarray(audio.offsets))
    text_folder = text_dir or cache_dir or manifests[0].parent / DATA_CACHE
    tcache = text_cache(model, texts, text_folder)
    first = len(audio) if len(manifests) == 1 else int(caches[0].offsets.shape[0] - 1)
    recorded = np.array([getattr(e, "source", None) is not None for e in entries])
    return Data(audio, tcache, captions, queries, attributes, first, recorded, timed)


def make_batch(
    data: Data,
    songs: list[int],
    rng: np.random.Generator,
    caption_prob: float,
    clip_stride: int = 1,
) -> tuple[TrainingBatch, np.ndarray]:
    """B songs with one text each, and the cache rows (M,) of the clips taken (every
    `clip_stride`-th from a random first one, and the last)."""
    feats, masks, times, counts, text_idx, rows = [], [], [], [], [], []
    tagger: list[np.ndarray] = []
    pools: list[np.ndarray] = []
    for s in songs:
        f, m, t = data.audio.song(s)
        first = int(rng.integers(clip_stride)) if len(t) > clip_stride else 0
        keep = sorted({*range(first, len(t), clip_stride), len(t) - 1})
        rows.append(int(data.audio.offsets[s]) + np.asarray(keep, dtype=np.int64))
        f, m, t = f[keep], m[keep], t[keep]
        song_tagger = data.audio.song_tagger(s)
        if data.pools is not None:
            pools.append(data.pools[rows[-1]])
        if song_tagger is not None:
            tagger.append(np.asarray(song_tagger[keep], dtype=np.float32))
        feats.append(np.asarray(f, dtype=np.float32))
        masks.append(np.asarray(m))
        times.append(np.asarray(t))
        counts.append(len(t))
        qs = data.queries[s]
        text_idx.append(
            data.captions[s] if not qs or rng.random() < caption_prob else int(rng.choice(qs))
        )
    batch = TrainingBatch(
        texts=data.texts.states(text_idx),
        features=torch.from_numpy(np.concatenate(feats)),
        feature_mask=torch.from_numpy(np.concatenate(masks)),
        clip_times=torch.from_numpy(np.concatenate(times)),
        clip_counts=counts,
        tagger=torch.from_numpy(np.concatenate(tagger)) if tagger else None,
        pooled=torch.from_numpy(np.concatenate(pools)) if pools else None,
    )
    return batch, np.concatenate(rows)


def where_loss(
    model: CoLLAP,
    data: Data,
    batch: TrainingBatch,
    clips: torch.Tensor,
    songs: list[int],
    rng: np.random.Generator,
) -> torch.Tensor | None:
    """Cross-entropy of the locator's evidence over each song's clips against the clip of one
    of its timed texts (drawn by `rng`); None when no song of the batch has one."""
    where = model.fusion.where
    if where is None:
        return None
    picked, targets, owners = [], [], []
    times = batch.clip_times.split(batch.clip_counts)
    for i, s in enumerate(songs):
        if data.timed[s]:
            text, seconds = data.timed[s][int(rng.integers(len(data.timed[s])))]
            picked.append(text)
            targets.append(target_clip(seconds, times[i]))
            owners.append(i)
    if not picked:
        return None
    per_song = clips.split(batch.clip_counts)
    chosen = [per_song[i] for i in owners]
    n = max(c.shape[0] for c in chosen)
    dev = clips.device
    padded = torch.zeros(len(chosen), n, clips.shape[1], device=dev)
    span = torch.zeros(len(chosen), n, 2, device=dev)
    mask = torch.zeros(len(chosen), n, dtype=torch.bool, device=dev)
    for j, i in enumerate(owners):
        k = per_song[i].shape[0]
        padded[j, :k], span[j, :k], mask[j, :k] = per_song[i], times[i].to(dev), True
    text = model.text_encoder(data.texts.states(picked))
    evidence = where(text, ClipBatch(padded, span, mask))  # (T, T, N); its own song: diagonal
    own = evidence[torch.arange(len(picked)), torch.arange(len(picked))]  # (T, N)
    return F.cross_entropy(own.float(), torch.tensor(targets, device=dev))


def keep_compact(model: CoLLAP, source: str) -> None:
    """Copy the convolution stages and attention pool of the compact model `source` into the
    tagged `model` and freeze them (Recipe.compact_from)."""
    from collap_model.checkpoint import load_model

    encoder = model.audio_encoder
    if not isinstance(encoder, TaggedAudioEncoder):
        raise ValueError("--compact-from needs a tagged preset (its compact stages are kept)")
    donor_model = load_model(source, device="cpu")
    donor = donor_model.audio_encoder
    if not isinstance(donor, CompactAudioEncoder) or isinstance(donor, TaggedAudioEncoder):
        raise ValueError(f"{source}: not a compact model")
    if donor_model.config.frontend != model.config.frontend:
        raise ValueError(f"{source}: its front-end differs from {model.config.name}'s")
    for part in ("stages", "pool_logit"):
        getattr(encoder, part).load_state_dict(getattr(donor, part).state_dict())
        getattr(encoder, part).requires_grad_(False)


@torch.inference_mode()
def compact_pools(model: CoLLAP, audio: AudioCache, chunk: int = 256) -> np.ndarray:
    """The fixed compact stages' pools of every cached clip, (M, 2 C) float32."""
    encoder = model.audio_encoder
    assert isinstance(encoder, CompactAudioEncoder)
    was = encoder.training
    encoder.eval()
    out = []
    for i in range(0, len(audio.times), chunk):
        f = torch.from_numpy(np.asarray(audio.features[i : i + chunk], dtype=np.float32))
        m = torch.from_numpy(np.asarray(audio.masks[i : i + chunk]))
        out.append(encoder.pooled(f.to(model.device), m.to(model.device)).float().cpu().numpy())
    encoder.train(was)
    return np.concatenate(out)


class Schedule(Protocol):
    """What a learning-rate schedule reads of a recipe (Recipe, locator.LocatorRecipe)."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def steps(self) -> int: ...


def lr_at(step: int, recipe: Schedule) -> float:
    """Linear warm-up to `recipe.lr`, then cosine decay to 0 at `recipe.steps`."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def validate(model: CoLLAP, data: Data, songs: Sequence[int]) -> dict[str, float]:
    model.eval()
    batch = embed_songs(model, data.audio.subset(songs))
    idx = [q for s in songs for q in data.queries[s]] or [data.captions[s] for s in songs]
    owner = [i for i, s in enumerate(songs) for _ in (data.queries[s] or [0])]
    metrics = both_ways(fusion_scores(model, data.texts, idx, batch), owner)["text_to_audio"]
    model.train()
    return metrics


def draw_songs(
    songs: Sequence[int],
    recorded: np.ndarray,
    batch: int,
    rng: np.random.Generator,
    real_share: float | None = None,
) -> list[int]:
    """One step's songs, without repeats: drawn alike from `songs`, or with `real_share` of the
    batch from the recorded ones (rounded) and the rest from the others, as far as each has
    songs to give."""
    size = min(batch, len(songs))
    if real_share is None:
        return [int(s) for s in rng.choice(songs, size=size, replace=False)]
    real = [s for s in songs if recorded[s]]
    other = [s for s in songs if not recorded[s]]
    n_real = min(len(real), max(size - len(other), round(real_share * size)))
    picked = [*rng.choice(real, size=n_real, replace=False)]
    picked += [*rng.choice(other, size=size - n_real, replace=False)]
    return [int(s) for s in picked]


def drop_words(states: TextStates, chance: float, rng: np.random.Generator) -> TextStates:
    """`states` with each token's row dropped with `chance` (a text keeps at least its first
    token); the pooled states stay whole."""
    tokens = []
    for t in states.tokens:
        keep = rng.random(t.shape[0]) >= chance
        keep[0] = keep[0] or not keep.any()
        tokens.append(t[torch.from_numpy(keep)])
    return TextStates(tokens, states.pooled)


def train(
    manifest: Path | Sequence[Path], out: Path, recipe: Recipe, stop_after: int | None = None
) -> dict[str, Any]:
    """Train (or resume) into `out` on one or several manifests (validation songs are the
    last `val_songs` of the first); returns the validation history and timings.

    stop_after: run at most this many steps now (the state is saved), to continue later.
    """
    began = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    # from the preset's architecture with a seeded initialisation, never from shipped weights:
    # the recipe reproduces them from nothing
    model = CoLLAP(load_preset(recipe.preset)).to(resolve_device(recipe.device))
    model.prepare_new()
    if recipe.compact_from is not None:
        keep_compact(model, recipe.compact_from)
    # audio features beside each data set (shared with `collap recordings` and `collap eval`),
    # the texts of this run in its own folder
    data = prepare(model, manifest, None, out / "cache")
    n = len(data.audio)
    first = data.first_songs
    val = list(range(first - min(recipe.val_songs, first // 5), first))
    # every 10th recording after the first data set is held out too: the gain α beside the
    # tag bridge is chosen on real music as well (calibrate.py)
    real_val = [s for s in range(first, n) if data.recorded[s]][::10]
    held = set(val) | set(real_val)
    train_songs = [s for s in range(n) if s not in held]
    encoder = model.audio_encoder
    if isinstance(encoder, TaggedAudioEncoder) and data.audio.tagger is not None:
        # z-scores of the tagger's outputs, from the training clips (stored with the weights)
        real = [s for s in train_songs if data.recorded[s]]
        source = real if recipe.tag_statistics == "recordings" and real else train_songs
        rows = data.audio.subset(source).tagger
        assert rows is not None
        encoder.set_statistics(torch.from_numpy(np.asarray(rows, dtype=np.float32)))
    if recipe.compact_from is not None:
        data.pools = compact_pools(model, data.audio)
    head = AttributeHead(model.config.embed_dim, len(data.attributes.labels)).to(model.device)
    use_attributes = recipe.attribute_weight > 0 and bool(data.attributes.known.any())
    augment = (
        LogMelAugment(encoder.logmel, model.sample_rate)
        if recipe.augment and isinstance(encoder, CompactAudioEncoder) and data.pools is None
        else None
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if use_attributes:
        params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    start = 0
    state_path = out / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, map_location=model.device, weights_only=False)
        if state["recipe"] != asdict(recipe):
            raise ValueError(
                f"{state_path} was written by another recipe; use a new --out or the same options"
            )
        model.load_state_dict(state["model"], strict=False)
        head.load_state_dict(state["attributes"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log.info("resuming at step %d", start)
    model.train()
    history: list[dict[str, float]] = []
    prepared = time.monotonic()
    tick = time.monotonic()
    end = recipe.steps if stop_after is None else min(recipe.steps, start + stop_after)
    for step in range(start, end):
        rng = np.random.default_rng([recipe.seed, step])
        torch.manual_seed(recipe.seed * 1_000_003 + step)  # dropout too: a resumed run matches
        songs = draw_songs(train_songs, data.recorded, recipe.batch, rng, recipe.real_share)
        batch, rows = make_batch(data, songs, rng, recipe.caption_prob, recipe.clip_stride)
        if recipe.word_dropout > 0:  # its own generator: the other draws stay as they were
            words_rng = np.random.default_rng([recipe.seed, step, 2])
            assert isinstance(batch.texts, TextStates)
            batch = replace(batch, texts=drop_words(batch.texts, recipe.word_dropout, words_rng))
        if augment is not None:
            batch = replace(batch, features=augment(batch.features, batch.feature_mask))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        output = model(batch)
        loss = output.loss
        attr_loss = torch.zeros(())
        # the localisation loss draws from its own generator: the other draws stay as they were
        where_rng = np.random.default_rng([recipe.seed, step, 1])
        loc_loss = (
            where_loss(model, data, batch, output.clips, songs, where_rng)
            if recipe.where_weight > 0
            else None
        )
        if loc_loss is not None:
            loss = loss + recipe.where_weight * loc_loss
        if use_attributes:
            targets, known = batch_targets(data.attributes, rows)
            attr_loss = head.loss(output.clips, targets.to(model.device), known.to(model.device))
            loss = loss + recipe.attribute_weight * attr_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 25 == 0:
            log.info(
                "step %d/%d loss %.3f (fusion %.3f, global %.3f, attributes %.3f, where %.3f) "
                "%.2f s/step",
                step + 1, recipe.steps, loss.item(), output.fusion_loss.item(),
                output.global_loss.item(), attr_loss.item(),
                float("nan") if loc_loss is None else loc_loss.item(),
                (time.monotonic() - tick) / 25,
            )  # fmt: skip
            tick = time.monotonic()
        if (step + 1) % recipe.eval_every == 0 or step + 1 in (recipe.steps, end):
            metrics = validate(model, data, val) if val else {}
            if len(real_val) >= 2:
                on_real = validate(model, data, real_val)
                metrics.update({f"recordings {k}": v for k, v in on_real.items()})
            history.append({"step": step + 1, "loss": loss.item(), **metrics})
            log.info("step %d validation %s", step + 1, json.dumps(metrics))
            state = {
                "model": model.owned_state(),
                "attributes": head.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step + 1,
                "recipe": asdict(recipe),
            }
            torch.save(state, state_path)
    if end < recipe.steps:
        log.info("stopped at step %d of %d; run again to continue", end, recipe.steps)
        return {"stopped_at": end, "steps": recipe.steps, "history": history}
    model.eval()
    calibration = calibrate(
        model, {"synthetic": val, "recordings": real_val}, lambda m, songs: validate(m, data, songs)
    )
    if calibration:
        log.info("learned path weight %g", calibration["learned_gain"])
    model.eval()
    model.trained = True
    save_checkpoint(model, out)
    report = {
        "fingerprint": model.fingerprint,
        "steps": recipe.steps,
        "train_songs": len(train_songs),
        "val_songs": len(val),
        "val_recordings": len(real_val),
        "calibration": calibration,
        "history": history,
        "prepare_seconds": prepared - began,
        "train_seconds": time.monotonic() - prepared,
    }
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
