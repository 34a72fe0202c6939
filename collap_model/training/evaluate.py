"""Retrieval evaluation: text->audio and audio->text with captions and short queries, beside a
mean-pooled-clips cosine baseline (no fusion) and random scores, plus localisation.

JSON layout (`collap eval --json`): {"fusion" | "mean_pool" | "random": {"text_to_audio": M,
"audio_to_text": M, "captions": {"text_to_audio": M, "audio_to_text": M}, "queries": {...}}}
where M = {"R@1", "R@5", "R@10", "MedR", "mAP"}; the top-level text_to_audio/audio_to_text
are the short queries' (the harder, user-like case). "localisation": {"sentences" | "queries":
{"texts", "locate", "fusion_weight", "most_similar_clip", "uniform_chance"}}, for the caption
sentences that state a time (without it) and the timed short queries: the fraction of texts
whose chosen clip lies within one clip of the stated time, choosing by the model's `locate`
evidence, by the highest fusion weight, or training-free by the clip most similar to the text;
and the chance of a uniformly drawn clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from collap_model.model import CoLLAP
from collap_model.outputs import ClipBatch
from collap_model.training.cache import AudioCache, TextCache, audio_cache, text_cache
from collap_model.training.timing import caption_times, query_times, target_clip

# texts scored against every song per fusion call
_TEXT_CHUNK = 256


def per_text(scores: torch.Tensor, relevant: Sequence[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """scores (Q, C); relevant[q] the correct columns of row q -> (Q,) rank of each row's first
    correct column (1 = top) and (Q,) average precision of each row."""
    order = torch.argsort(scores, dim=1, descending=True).numpy()
    firsts, aps = [], []
    for q, rel in enumerate(relevant):
        ranks = np.sort(np.nonzero(np.isin(order[q], list(rel)))[0] + 1)
        firsts.append(ranks[0])
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return np.array(firsts), np.array(aps)


def retrieval_metrics(scores: torch.Tensor, relevant: Sequence[set[int]]) -> dict[str, float]:
    """scores (Q, C); relevant[q] the correct columns of row q -> R@1/5/10, MedR, mAP."""
    first, aps = per_text(scores, relevant)
    return {
        "R@1": float(np.mean(first <= 1)),
        "R@5": float(np.mean(first <= 5)),
        "R@10": float(np.mean(first <= 10)),
        "MedR": float(np.median(first)),
        "mAP": float(np.mean(aps)),
    }


def resampled_interval(
    scores: torch.Tensor,
    relevant: Sequence[set[int]],
    draws: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """How far R@1, R@10 and mAP could move on another set of texts of the same kind: the
    central `level` of their values over `draws` resamplings of the rows with replacement
    (a percentile bootstrap; seeded). It says nothing of how a model varies between trainings."""
    first, aps = per_text(scores, relevant)
    picks = np.random.default_rng(seed).integers(len(first), size=(draws, len(first)))
    values = {
        "R@1": (first[picks] <= 1).mean(axis=1),
        "R@10": (first[picks] <= 10).mean(axis=1),
        "mAP": aps[picks].mean(axis=1),
    }
    tail = (1 - level) / 2 * 100
    return {k: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
            for k, v in values.items()}  # fmt: skip


def both_ways(scores: torch.Tensor, song_of_text: Sequence[int]) -> dict[str, dict[str, float]]:
    """scores (texts, songs) -> text_to_audio and audio_to_text metrics."""
    texts_of: dict[int, set[int]] = {}
    for t, s in enumerate(song_of_text):
        texts_of.setdefault(s, set()).add(t)
    songs = sorted(texts_of)
    return {
        "text_to_audio": retrieval_metrics(scores, [{s} for s in song_of_text]),
        "audio_to_text": retrieval_metrics(scores.T[songs], [texts_of[s] for s in songs]),
    }


@torch.inference_mode()
def embed_songs(model: CoLLAP, cache: AudioCache) -> ClipBatch:
    """Every cached song's clip embeddings, padded into one ClipBatch (S, N, D)."""
    clips, times = [], []
    dev = model.device
    for s in range(len(cache)):
        f, m, t = cache.song(s)
        tagger = cache.song_tagger(s)
        emb = model.audio_encoder.embed(
            torch.from_numpy(np.asarray(f, dtype=np.float32)).to(dev),
            torch.from_numpy(np.asarray(m)).to(dev),
            None if tagger is None else torch.from_numpy(np.asarray(tagger, np.float32)).to(dev),
        )
        clips.append(emb.float().cpu())
        times.append(torch.from_numpy(np.asarray(t)))
    n = max(c.shape[0] for c in clips)
    out = torch.zeros(len(clips), n, clips[0].shape[1])
    tt = torch.zeros(len(clips), n, 2)
    mask = torch.zeros(len(clips), n, dtype=torch.bool)
    for i, (c, span) in enumerate(zip(clips, times, strict=True)):
        out[i, : c.shape[0]], tt[i, : c.shape[0]], mask[i, : c.shape[0]] = c, span, True
    return ClipBatch(out, tt, mask)


@torch.inference_mode()
def fusion_scores(
    model: CoLLAP, texts: TextCache, index: Sequence[int], songs: ClipBatch
) -> torch.Tensor:
    dev = model.device
    batch = songs.to(dev)
    rows = []
    for i in range(0, len(index), _TEXT_CHUNK):
        emb = model.text_encoder(texts.states(index[i : i + _TEXT_CHUNK]))
        rows.append(model.fusion.scores(emb, batch).float().cpu())
    return torch.cat(rows)


@torch.inference_mode()
def mean_pool_scores(
    model: CoLLAP, texts: TextCache, index: Sequence[int], songs: ClipBatch
) -> torch.Tensor:
    pooled = (songs.clips * songs.mask[..., None]).sum(1) / songs.mask.sum(1, keepdim=True)
    pooled = F.normalize(pooled, dim=-1)
    rows = []
    for i in range(0, len(index), 256):
        emb = model.text_encoder(texts.states(index[i : i + 256]))
        rows.append(emb.sentence.float().cpu() @ pooled.T)
    return torch.cat(rows)


@dataclass
class EvalTexts:
    texts: list[str]
    song: list[int]  # song index of each text
    kind: list[str]  # "caption" or "query"


def collect_texts(entries: Sequence[Any]) -> EvalTexts:
    out = EvalTexts([], [], [])
    for s, e in enumerate(entries):
        out.texts.append(e.caption)
        out.song.append(s)
        out.kind.append("caption")
        for q in e.queries:
            out.texts.append(q)
            out.song.append(s)
            out.kind.append("query")
    return out


def timed_sentences(entries: Sequence[Any]) -> list[tuple[int, str, float]]:
    """(song, sentence without its time, seconds) for caption sentences that state one time
    (m:ss; timing.strip_time), after the song's first second (a time of 0:00 is the opening,
    which the first clip finds without listening)."""
    return [
        (s, text, t) for s, e in enumerate(entries) for text, t in caption_times(e.caption) if t > 0
    ]


def timed_queries(entries: Sequence[Any]) -> list[tuple[int, str, float]]:
    """(song, query, seconds) for the entries' timed short queries (manifest `timed_queries`),
    after the song's first second, as for sentences."""
    return [(s, text, t) for s, e in enumerate(entries) for text, t in query_times(e) if t > 0]


@torch.inference_mode()
def localisation(
    model: CoLLAP, songs: ClipBatch, cache: TextCache, items: list[tuple[int, str, float]]
) -> dict[str, float]:
    """How often each way of choosing a clip lands within one clip of the stated time
    (timing.target_clip): the model's `locate` evidence (the WhereHead, or without one the
    fusion's clip match), the clip with the highest fusion weight, and training-free, the clip
    whose embedding is most similar to the text's sentence embedding (cosine); beside the
    chance that a uniformly drawn clip does. `cache` holds the items' texts in order."""
    by_song: dict[int, list[int]] = {}
    for k, (s, _, _) in enumerate(items):
        by_song.setdefault(s, []).append(k)
    found: dict[str, list[bool]] = {"locate": [], "fusion_weight": [], "most_similar_clip": []}
    chance = []
    for s, ks in by_song.items():
        n = int(songs.mask[s].sum())
        one = ClipBatch(
            songs.clips[s : s + 1, :n], songs.clip_times[s : s + 1, :n], songs.mask[s : s + 1, :n]
        ).to(model.device)
        emb = model.text_encoder(cache.states(ks))  # (len(ks), ...)
        choices = {
            "locate": model.fusion.locate(emb, one)[:, 0],  # (texts, n)
            "fusion_weight": model.fusion(emb, one).clip_weights[:, 0],
            "most_similar_clip": emb.sentence.float() @ one.clips[0].float().T,
        }
        best = {name: c.float().argmax(dim=1).cpu().tolist() for name, c in choices.items()}
        for row, k in enumerate(ks):
            target = target_clip(items[k][2], one.clip_times[0].cpu())
            for name in found:
                found[name].append(abs(best[name][row] - target) <= 1)
            chance.append(min(n, 3 if 0 < target < n - 1 else 2) / n)
    out = {name: float(np.mean(hits)) if hits else 0.0 for name, hits in found.items()}
    return {"texts": len(items), **out, "uniform_chance": float(np.mean(chance)) if chance else 0.0}


@torch.inference_mode()
def tag_bridge_scores(
    model: CoLLAP, texts: TextCache, index: Sequence[int], cache: AudioCache
) -> torch.Tensor | None:
    """The training-free tag bridge (texts, songs), None for a model without a tagger: each
    song's tag probabilities averaged over its clips and z-scored per tag over the songs
    scored, dotted with the text's tag vector (its cosine with every tag's prompt, z-scored
    over the tags; `TextEncoder.bridge`). No trained weight takes part."""
    k = model.config.tag_dims
    if not k or cache.tagger is None:
        return None
    tagged = np.asarray(cache.tagger[:, :k], dtype=np.float32)
    songs = np.stack([tagged[cache.offsets[s] : cache.offsets[s + 1]].mean(axis=0)
                      for s in range(len(cache))])  # fmt: skip
    z = torch.from_numpy((songs - songs.mean(axis=0)) / (songs.std(axis=0) + 1e-6))
    states = texts.states(index)
    bridge = model.text_encoder.bridge(torch.stack(states.pooled).to(model.device))
    assert bridge is not None
    return bridge.float().cpu() @ z.T


def evaluate_texts(
    model: CoLLAP, entries: Sequence[Any], cache_dir: Path, seed: int = 0
) -> dict[str, Any]:
    """Text -> audio over clips made for texts (several clips may share one text; a hit is any
    clip of that text), scored per distinct text: fusion beside the training-free tag bridge
    and random scores. JSON: {"fusion" | "tag_bridge" | "random": {"R@1", "R@5", "R@10",
    "MedR", "mAP"}, "fusion_interval": {"R@1" | "R@10" | "mAP": [low, high]} (95% of the
    fusion's figures over resampled texts, `resampled_interval`), "texts", "clips",
    "fingerprint"}."""
    cache = audio_cache(model, [e.audio_path for e in entries], cache_dir, None)
    songs = embed_songs(model, cache)
    texts = sorted({e.caption for e in entries})
    column = {t: i for i, t in enumerate(texts)}
    relevant: list[set[int]] = [set() for _ in texts]
    for clip, e in enumerate(entries):
        relevant[column[e.caption]].add(clip)
    tcache = text_cache(model, texts, cache_dir)
    index = list(range(len(texts)))
    fusion = fusion_scores(model, tcache, index, songs)
    scores = {
        "fusion": fusion,
        "tag_bridge": tag_bridge_scores(model, tcache, index, cache),
        "random": torch.rand(
            len(texts), len(entries), generator=torch.Generator().manual_seed(seed)
        ),
    }
    result: dict[str, Any] = {
        name: retrieval_metrics(s, relevant) for name, s in scores.items() if s is not None
    }
    # few texts (external-dev has 68: one is 0.015 of R@1), so say how far the figures could move
    result["fusion_interval"] = resampled_interval(fusion, relevant, seed=seed)
    result.update(texts=len(texts), clips=len(entries), fingerprint=model.fingerprint)
    return result


def evaluate(model: CoLLAP, manifest: Path, cache_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Retrieval metrics of `model` on a manifest: a synthetic one (captions with queries and
    timed sentences; see the module doc), or one of clips with the texts written for them
    (no entry has queries: `evaluate_texts`)."""
    from collap_model.synth.dataset import read_manifest

    entries = read_manifest(manifest)
    model.eval()
    if not any(e.queries for e in entries):
        return evaluate_texts(model, entries, cache_dir, seed)
    songs = embed_songs(model, audio_cache(model, [e.audio_path for e in entries], cache_dir, None))
    texts = collect_texts(entries)
    tcache = text_cache(model, texts.texts, cache_dir)
    all_idx = list(range(len(texts.texts)))
    full = {
        "fusion": fusion_scores(model, tcache, all_idx, songs),
        "mean_pool": mean_pool_scores(model, tcache, all_idx, songs),
        "random": torch.rand(
            len(all_idx), songs.clips.shape[0], generator=torch.Generator().manual_seed(seed)
        ),
    }
    result: dict[str, Any] = {}
    for name, scores in full.items():
        part: dict[str, Any] = {}
        for kind, label in (("caption", "captions"), ("query", "queries")):
            rows = [i for i in all_idx if texts.kind[i] == kind]
            if rows:
                part[label] = both_ways(scores[rows], [texts.song[i] for i in rows])
        headline = part.get("queries") or part["captions"]
        result[name] = {**headline, **part}
    located = {}
    timed = {"sentences": timed_sentences(entries), "queries": timed_queries(entries)}
    for kind, items in timed.items():
        if items:
            texts_of = text_cache(model, [x[1] for x in items], cache_dir)
            located[kind] = localisation(model, songs, texts_of, items)
    if located:
        result["localisation"] = located
    result["songs"] = len(entries)
    result["texts"] = {
        "captions": texts.kind.count("caption"),
        "queries": texts.kind.count("query"),
    }
    result["fingerprint"] = model.fingerprint
    return result
