"""The tagger's cost and what each way of running it keeps (issue 15, speed).

Options, each timed on the same clips (10 s every 5 s, as the indexer cuts them) of the
external-dev recordings, on the CPU with every thread, beside the compact encoder alone (the
whole clip encoder of `collap-mini`, the peer):
- musicnn in float32 (the exact port), one 3 s patch per clip;
- musicnn with bfloat16 matrix products where the CPU multiplies them natively (the default);
- the same with three patches per clip (90% of each clip heard instead of 30%);
- the same with shared patches: one patch centred in the overlap of clips 2j and 2j + 1 of a
  song, which both use (the same clips tagged with half the work; tagger.py).
Quality of each: the training-free tag bridge on external-dev (text -> clip R@1 / R@10, per
distinct text, a hit is any clip of that text), from that option's tags.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.retrieval import external


def _clips(folder: Path) -> tuple[Any, Any, Any, list[int], list[str]]:
    import torch

    from collap_model.audio_io import read_audio
    from collap_model.config import load_preset
    from collap_model.frontend import clip_spans, cut_clips
    from collap_model.synth.dataset import read_manifest

    fe = load_preset("collap-tagger").frontend
    entries = read_manifest(folder / "manifest.jsonl")
    waves, valids, starts, counts = [], [], [], []
    for e in entries:
        wave = torch.from_numpy(read_audio(e.audio_path, fe.sample_rate))
        spans = clip_spans(wave.shape[0], fe)
        clips, valid = cut_clips(wave, spans, fe.clip_samples)
        waves.append(clips)
        valids.append(valid)
        starts.append(torch.tensor([s for s, _ in spans]))
        counts.append(clips.shape[0])
    captions = [e.caption for e in entries]
    return torch.cat(waves), torch.cat(valids), torch.cat(starts), counts, captions


def _bridge(
    model: Any, tags: np.ndarray, counts: list[int], captions: list[str]
) -> dict[str, float]:
    import torch

    from collap_model.training.evaluate import retrieval_metrics

    offsets = np.cumsum([0, *counts])
    songs = np.stack([tags[offsets[i] : offsets[i + 1]].mean(axis=0) for i in range(len(counts))])
    z = (songs - songs.mean(axis=0)) / (songs.std(axis=0) + 1e-6)
    texts = sorted(set(captions))
    with torch.inference_mode():
        _, pooled = model.text_encoder.hidden_states(texts)
        bridge = model.text_encoder.bridge(torch.stack(pooled)).float().numpy()
    relevant = [{i for i, c in enumerate(captions) if c == t} for t in texts]
    return retrieval_metrics(torch.from_numpy(bridge @ z.T), relevant)


def run() -> str:
    import torch

    from collap_model.checkpoint import load_model

    folder = external()
    if folder is None:
        return "## Tagger speed and quality\n\nexternal-dev not found (set COLLAP_EXTERNAL_DEV).\n"
    clips, valid, starts, counts, captions = _clips(folder)
    audio = float(valid.sum()) / 16_000
    model = load_model("collap-tagger", device="cpu")
    tagger = model.audio_encoder.tagger
    peer = load_model("collap-mini", device="cpu")
    rows = []

    def timed(fn: Any) -> tuple[Any, float]:
        fn(clips[:8], valid[:8], starts[:8])  # warm-up
        began = time.perf_counter()
        out = fn(clips, valid, starts)
        return out, time.perf_counter() - began

    grid = (model.config.frontend.clip_samples, model.config.frontend.hop_samples)
    shipped = (tagger.patches_per_clip, tagger.grid)
    with torch.inference_mode():
        _, peer_s = timed(lambda c, v, s: peer.encode_clips(c, v, s))
        options = [("musicnn float32, 1 patch per clip", 1, False, None),
                   ("musicnn bfloat16 where native, 1 patch per clip", 1, True, None),
                   ("musicnn bfloat16 where native, 3 patches per clip", 3, True, None),
                   ("musicnn bfloat16 where native, shared patches", 1, True, grid)]  # fmt: skip
        for name, patches, fast, placement in options:
            tagger.patches_per_clip, tagger.grid = patches, placement
            if (patches, placement) == shipped and fast:
                name += " (default)"
            out, secs = timed(lambda c, v, s, fast=fast: tagger(c, v, s, fast=fast))
            m = _bridge(model, out.tags.numpy(), counts, captions)
            rows.append(
                f"| {name} | {audio / secs:.0f} | {peer_s / secs:.3f} | {m['R@1']:.3f} | "
                f"{m['R@10']:.3f} |"
            )
        tagger.patches_per_clip, tagger.grid = shipped
    return f"""## Tagger speed and quality (issue 15)

`python -m benchmarks.run tagger`: the {len(counts)} external-dev clips cut as the indexer cuts
them ({clips.shape[0]} clips of 10 s every 5 s, {audio / 60:.0f} min of clip audio), CPU, every
thread. Peer: `collap-mini`'s whole clip encoder (log-mel + compact encoder) on the same clips,
{audio / peer_s:.0f} audio s / wall s. Quality: the training-free tag bridge from each option's
tags, external-dev text -> clip.

| tagger (MTT + MSD musicnn) | audio s / wall s | speed / peer | bridge R@1 | bridge R@10 |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
