"""Query latency and two-stage recall at catalog scale (issue 6).

The store is filled with tracks of the real shape, derived from real embeddings: a pool of
`collap synth` songs (held-out seeds and phrasings) is embedded with the shipped model; each
synthetic track strings together runs of clips from 2-4 pool songs (in their time order) with
per-clip noise, and its song and first-stage vectors come from the model over those clips. So
the vectors and the clips relate as in a real index, and fusion scores vary across tracks.

Measured in one run, per scale (10k and 100k tracks):
- warm `Searcher.search` latency (text encoding, first stage re-ranking 100 candidates by the
  exact fusion score, the hits' clips scored again with segments) p50/p99, through the Python
  API and through HTTP (`indexer serve`, one kept-alive connection);
- the peer: exhaustive fusion scoring of every track for the same queries, its latency, and the
  recall@10 of the two-stage search against it.
Stores are cached in benchmarks/.cache (several GB at 100k).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
POOL_SONGS = 48
POOL_SEED = 5_000_000
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SCALES = tuple(int(s) for s in os.environ.get("QUERY_BENCH_SCALES", "10000,100000").split(","))
NOISE = 0.6  # per-clip noise norm relative to the unit clip vector (cosine ~0.85 to the source)
LATENCY_QUERIES = 200  # p99 from 200 samples is not just the slowest one
RECALL_QUERIES = 20


def pool(model: Any) -> tuple[list[np.ndarray], list[str]]:
    """Real clip embeddings (N_i, D) of the pool songs, and their held-out queries."""
    from collap_model.synth.dataset import generate_dataset, read_manifest
    from indexer.decode import AudioDecoder

    out = CACHE / "query-pool"
    if not (out / "manifest.jsonl").exists():
        generate_dataset(out, POOL_SONGS, seed=POOL_SEED, soundfont=SOUNDFONT, phrasings="heldout")
    rows = read_manifest(out / "manifest.jsonl")
    clips, queries = [], []
    for row in rows:
        with AudioDecoder(str(row.audio_path), model.sample_rate) as dec:
            wave = np.concatenate(list(dec.chunks()))
        clips.append(model.encode_audio(wave, model.sample_rate).clips.numpy())
        queries.extend(row.queries)
    return clips, queries


def synthesise(
    model: Any, sources: list[np.ndarray], n: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    """n tracks: clips (N_i, D), song vectors (n, D), first-stage vectors (n, m·D), clip
    times (N_i, 2)."""
    import torch

    from collap_model.outputs import ClipBatch

    rng = np.random.default_rng(seed)
    dim = sources[0].shape[1]
    tracks, times = [], []
    for _ in range(n):
        parts = []
        for src in rng.choice(len(sources), size=rng.integers(2, 5), replace=False):
            song = sources[src]
            length = int(rng.integers(2, max(3, song.shape[0] // 2)))
            start = int(rng.integers(0, max(1, song.shape[0] - length)))
            parts.append(song[start : start + length])
        c = np.concatenate(parts)[:60]
        c = c + NOISE * rng.standard_normal(c.shape).astype(np.float32) / np.sqrt(dim)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        tracks.append(c.astype(np.float32))
        starts = 5.0 * np.arange(c.shape[0], dtype=np.float32)
        times.append(np.stack([starts, starts + 10.0], axis=1))
    songs, first = [], []
    with torch.inference_mode():
        for i in range(0, n, 512):
            batch = ClipBatch.of_arrays(tracks[i : i + 512], times[i : i + 512])
            songs.append(model.song_pool(batch.to(model.device)).float().cpu().numpy())
            first.append(model.first_stage_batch(batch).numpy())
    return tracks, np.concatenate(songs), np.concatenate(first), times


def build_store(
    data_dir: Path,
    model: Any,
    tracks: list[np.ndarray],
    songs: np.ndarray,
    first: np.ndarray,
    times: list[np.ndarray],
) -> float:
    """The store at data_dir, built unless cached; returns the seconds its build took (kept in
    the cache's marker, so a cached store still reports what building it cost)."""
    from indexer.store.base import CLIP_VECTORS, TrackPoint, collection_name, encode_clips
    from indexer.store.edge import EdgeStore

    done = data_dir / "complete"
    recorded = done.read_text().strip() if done.exists() else ""
    if recorded:  # (an empty marker is a cache from before the build time was kept: rebuilt)
        return float(recorded)
    began = time.monotonic()
    shutil.rmtree(data_dir, ignore_errors=True)
    store = EdgeStore(data_dir / "qdrant", "tracks")
    name = collection_name("tracks", model.fingerprint)
    store.ensure_collection(name, model.config.embed_dim, first.shape[1])
    for i in range(0, len(tracks), 500):
        points = []
        for j in range(i, min(len(tracks), i + 500)):
            payload = {
                "path": f"/catalog/{j:06d}.flac",
                "title": f"track {j}",
                "duration": float(times[j][-1, 1]),
                "clip_times": times[j].tolist(),
                "n_clips": int(tracks[j].shape[0]),
                CLIP_VECTORS: encode_clips(tracks[j]),
            }
            pid = str(uuid.UUID(int=j))
            point = TrackPoint(
                pid, songs[j].tolist(), tracks[j].tolist(), first[j].tolist(), payload
            )
            points.append(point)
        store.upsert(name, points)
    store.optimize(name)  # as `indexer index` does at the end of a run
    store.switch_alias(name)
    store.close()
    built = time.monotonic() - began
    done.write_text(f"{built:.1f}\n")
    return built


def exhaustive(
    model: Any, text: Any, tracks: list[np.ndarray], times: list[np.ndarray]
) -> np.ndarray:
    """Fusion score of one text against every track: (n,)."""
    from collap_model.outputs import ClipBatch

    out = []
    for i in range(0, len(tracks), 4096):
        batch = ClipBatch.of_arrays(tracks[i : i + 4096], times[i : i + 4096])
        out.append(model.score_only(text, batch)[0].float().cpu().numpy())
    return np.concatenate(out)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def warm_page_cache(data_dir: Path) -> None:
    """Read the store's files once, so that timing starts with them in the OS page cache, as for
    a server that has been up a while (a 100k-track store is ~4 GB; building the tracks in this
    process may have pushed it out). Nothing is kept in this process."""
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 24):
                    pass


def python_latency(
    settings: Any, queries: list[str]
) -> tuple[list[float], list[list[str]], list[float]]:
    """`Searcher.search` as `indexer query` and `indexer serve` set it up (service.searcher), in
    a process of its own: this one holds every synthetic track (GBs of arrays at 100k), whose
    garbage-collector passes and memory traffic would land in the searcher's tail latency.
    Also the text encoding alone for the same queries: the part no store setting changes."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        took, ids, text = pool.apply(_search_all, (settings, queries))
    return took, ids, text


def _search_all(
    settings: Any, queries: list[str]
) -> tuple[list[float], list[list[str]], list[float]]:
    from indexer import service

    took, ids, text = [], [], []
    with service.searcher(settings) as searcher:
        for q in queries[:5]:
            searcher.search(q, 10)  # warm-up: first touches of the shard's pages, the model
        for q in queries:
            began = time.perf_counter()
            hits = searcher.search(q, 10)
            took.append(time.perf_counter() - began)
            ids.append([h.id for h in hits])
        for q in queries:
            began = time.perf_counter()
            searcher.model.encode_text([q])
            text.append(time.perf_counter() - began)
    return took, ids, text


def http_latency(data_dir: Path, queries: list[str]) -> list[float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "INDEXER_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    break
            except OSError:
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError("indexer serve did not become ready")
            time.sleep(0.5)
        took = []
        for i, q in enumerate([*queries[:5], *queries]):
            began = time.perf_counter()
            conn.request(
                "POST", "/search", json.dumps({"query": q, "limit": 10}),
                {"Content-Type": "application/json"},
            )  # fmt: skip
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"search failed: {response.status} {body[:200]!r}")
            if i >= 5:
                took.append(time.perf_counter() - began)
        return took
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def run() -> str:
    from collap_model.checkpoint import load_model
    from indexer.settings import Settings

    model = load_model(device="cpu")
    sources, all_queries = pool(model)
    rng = np.random.default_rng(0)
    queries = [all_queries[i] for i in rng.permutation(len(all_queries))[:LATENCY_QUERIES]]
    rows = []
    for n in SCALES:
        tracks, songs, first, times = synthesise(model, sources, n, seed=n)
        data_dir = CACHE / f"query-store-{n}-{model.fingerprint}"
        built = build_store(data_dir, model, tracks, songs, first, times)
        settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
        warm_page_cache(data_dir)
        py_took, two_stage, text_took = python_latency(settings, queries)
        http_took = http_latency(data_dir, queries)
        recalls, full_took = [], []
        for q, got in zip(queries[:RECALL_QUERIES], two_stage, strict=False):
            text = model.encode_text([q])
            t0 = time.perf_counter()
            scores = exhaustive(model, text, tracks, times)
            full_took.append(time.perf_counter() - t0)
            best = {str(uuid.UUID(int=int(j))) for j in np.argsort(-scores)[:10]}
            recalls.append(len(best & set(got)) / 10)
        p50, p99 = percentiles(py_took)
        h50, h99 = percentiles(http_took)
        f50, _ = percentiles(full_took)
        t50, t99 = percentiles(text_took)
        rows.append(
            f"| {n:,} | {p50:.1f} | {p99:.1f} | {t50:.1f} / {t99:.1f} | {h50:.1f} | {h99:.1f} | "
            f"{f50:.0f} | "
            f"{f50 / p50:.0f}x | {np.mean(recalls):.3f} | {built:.0f} |"
        )
        print(rows[-1], file=sys.stderr)
    return (
        "## Query latency and two-stage recall (`python -m benchmarks.run query`)\n\n"
        "Warm `indexer query` path (text encoding; first stage: inner-product scan of each "
        "track's clips pooled by the fusion's attention patterns, whose dot product with the "
        "text's vector is the fusion score, over their int8 copy for twice "
        f"{Settings().candidates} candidates, re-ranked by the exact fusion score from the "
        "float16 originals; the hits' clips read and scored again in float32, with segments), "
        "limit 10, "
        f"{LATENCY_QUERIES} held-out queries after 5 warm-up ones, with the store's files "
        "read once before (in the OS page cache, as for a server that has been up); beside it, "
        "exhaustive fusion scoring of every track (the peer) and the recall@10 of the two-stage "
        "search against it "
        f"({RECALL_QUERIES} queries). Tracks: runs of real clip embeddings of {POOL_SONGS} "
        "synthetic songs with noise, song vectors from the model's pooling (see the module "
        "docstring); embedded Qdrant Edge store, optimised as at the end of `indexer index` "
        "(build s includes it). The search runs as `indexer serve` sets it up, with one torch "
        "thread (`INDEXER_SEARCH_THREADS`), in a process of its own (Python) or behind "
        "`indexer serve` (HTTP); the exhaustive peer uses every thread.\n\n"
        "| tracks | Python p50 ms | Python p99 ms | text encoding alone p50 / p99 ms | "
        "HTTP p50 ms | HTTP p99 ms | exhaustive p50 ms | speed-up | recall@10 | build s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Targets on this 2-core CPU: p99 <= 50 ms at 100k tracks through the Python API, "
        "recall@10 >= 0.95."
    )
