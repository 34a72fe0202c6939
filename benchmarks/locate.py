"""`locate` latency for one 10-minute track (issue 16).

A 10-minute `collap synth` song (held-out phrasings) is indexed by the real pipeline into an
embedded store, once per model; then `Searcher.locate` runs as `indexer locate` and
`indexer serve` set it up (service.searcher: the store under its lock, one torch thread,
INDEXER_SEARCH_THREADS) for the song's own short queries and timed queries, and for its whole
caption (a paragraph, read in windows). Each call: text encoding, the track read from the
store, its float16 clips decoded, CoLLAP.locate over them, segments. Beside it, in the same
run: the text encoding alone and `CoLLAP.locate` alone (the parts no store setting changes),
for the shipped default (collap-tagger, with the text-dependent WhereHead) and for collap-mini
(no WhereHead: its evidence is the fusion's per-clip match).
Stores are cached in benchmarks/.cache.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SONG_SEED = 7_000_000
SECONDS = 600.0
SAMPLES = 200  # p99 from 200 samples is not just the slowest one
WARM_UP = 5
MODELS = (None, "collap-mini")  # None: the shipped default


def song() -> Any:
    """The 10-minute song's manifest row (rendered once)."""
    from collap_model.synth.dataset import generate_dataset, read_manifest

    out = CACHE / "locate-song"
    if not (out / "manifest.jsonl").exists():
        generate_dataset(
            out, 1, seed=SONG_SEED, soundfont=SOUNDFONT, phrasings="heldout",
            min_seconds=SECONDS, max_seconds=SECONDS,
        )  # fmt: skip
    return read_manifest(out / "manifest.jsonl")[0]


def indexed(model: str | None, row: Any) -> Any:
    """Settings of a data directory where `model` has indexed the song (indexed once)."""
    from indexer import service
    from indexer.settings import Settings

    data_dir = CACHE / f"locate-store-{model or 'default'}"
    settings = Settings(data_dir=data_dir, model=model, _env_file=None)  # type: ignore[call-arg]
    summary = service.index(settings, [row.audio_path])
    assert summary.failed == 0, f"{row.audio_path} did not index"
    return settings


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def measure(settings: Any, texts: list[str], track_id: str) -> dict[str, list[float]]:
    """Seconds per call: Searcher.locate, the text encoding alone, CoLLAP.locate alone."""
    from collap_model.outputs import ClipBatch
    from indexer import service

    out: dict[str, list[float]] = {"locate": [], "text": [], "model": []}
    with service.searcher(settings) as searcher:
        for text in texts[:WARM_UP]:
            searcher.locate(track_id, text)
        for text in texts:
            began = time.perf_counter()
            located = searcher.locate(track_id, text)
            out["locate"].append(time.perf_counter() - began)
        model = searcher.model
        times = np.array([[c.start, c.end] for c in located.clips], dtype=np.float32)
        track = searcher.store.retrieve(searcher.collection(), [track_id], with_vectors=True)[0]
        assert track.clips is not None
        batch = ClipBatch.of_arrays([np.asarray(track.clips, dtype=np.float32)], [times])
        for text in texts:
            began = time.perf_counter()
            emb = model.encode_text([text])
            out["text"].append(time.perf_counter() - began)
            began = time.perf_counter()
            model.locate(emb, batch)
            out["model"].append(time.perf_counter() - began)
    return out


def run() -> str:
    from indexer.scan import content_hash
    from indexer.store.base import point_id

    row = song()
    track_id = point_id(content_hash(str(row.audio_path)))
    short = [*row.queries, *(q["text"] for q in row.model_extra.get("timed_queries", []))]
    texts = [short[i % len(short)] for i in range(SAMPLES)]
    rows = []
    clips = 0
    for name in MODELS:
        settings = indexed(name, row)
        short_took = measure(settings, texts, track_id)
        long_took = measure(settings, [row.caption] * 50, track_id)
        from indexer import service

        with service.searcher(settings) as searcher:
            clips = len(searcher.locate(track_id, "drums").clips)
            label = searcher.model.fingerprint
        l50, l99 = percentiles(short_took["locate"])
        t50, t99 = percentiles(short_took["text"])
        m50, m99 = percentiles(short_took["model"])
        c50, c99 = percentiles(long_took["locate"])
        rows.append(
            f"| {label}{'' if name else ' (default)'} | {l50:.1f} | {l99:.1f} | "
            f"{t50:.1f} / {t99:.1f} | {m50:.2f} / {m99:.2f} | {c50:.1f} / {c99:.1f} |"
        )
        print(rows[-1], file=sys.stderr)
    words = len(row.caption.split())
    return (
        "## Locate latency, one 10-minute track (`python -m benchmarks.run locate`)\n\n"
        f"`Searcher.locate` (what `indexer locate` and `POST /tracks/{{id}}/locate` run) on a "
        f"{row.duration / 60:.0f}-minute synthetic song ({clips} clips of 10 s every 5 s) indexed "
        "by the real pipeline into an embedded Qdrant Edge store, set up as `indexer serve` "
        "sets it up (one torch thread): text encoding, the track read from the store, its "
        "float16 clips decoded, `CoLLAP.locate`, segments. "
        f"{SAMPLES} short queries (the song's own queries and timed queries, cycled) after "
        f"{WARM_UP} warm-up ones; beside them the text encoding alone and `CoLLAP.locate` alone "
        f"for the same texts, and the whole caption ({words} words, 50 times). The default, "
        "collap-tagger, has the text-dependent WhereHead (with its context layers, one pass "
        "over the track's clips per text); collap-mini's evidence is the fusion's per-clip "
        "match.\n\n"
        "| model | locate p50 ms | locate p99 ms | text encoding alone p50 / p99 ms | "
        "CoLLAP.locate alone p50 / p99 ms | locate, whole caption p50 / p99 ms |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Target on this 2-core CPU: locate p99 <= 50 ms for a 10-minute track through the "
        "Python API (short queries)."
    )
