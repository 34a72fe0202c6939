"""Similar tracks and recommendations with a cold OS page cache (issue 18).

The store is the recommend benchmark's (benchmarks/recommend.py: runs of real clip embeddings
of 24 `collap synth` songs with noise, built as benchmarks/query.py's `build_store` does, cached),
at COLD_BENCH_TRACKS tracks (100,000 by default). Each path runs in a fresh process of its own
with one torch thread and the model loaded, as `indexer serve` sets it up (Qdrant Edge keeps
what it read in its own memory, so a pass over one path in the same process would warm the
other):
- the store path (the peer): `song` HNSW first stage in Qdrant Edge, the candidates' clips read
  from their payloads;
- the resident index that `indexer serve` keeps (indexer/resident.py), built first: clip
  centroids scanned and int8 clips re-ranked in memory, only the page's hits read from the store.
Each answers `Searcher.similar` (40 seeds) and `Searcher.recommend` (40 requests of 3 liked and
1 disliked track, as benchmarks/recommend.py draws them), limit 10: a first pass with
`sync; echo 3 > /proc/sys/vm/drop_caches` before each request (root only), the process staying
up; a warm pass; a cold pass again. Recall@10 against exhaustive clip-level scoring of every
track: the Chamfer similarity `indexer.search.chamfer` computes, and for recommend the
recommend score (benchmarks/recommend.py's `exhaustive`), from the float16 clips the store holds.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
from typing import Any

import numpy as np

from benchmarks.query import percentiles
from benchmarks.recommend import exhaustive, store_and_requests

TRACKS = int(os.environ.get("COLD_BENCH_TRACKS", "100000"))
REQUESTS = 40
WARM_UP = 5


def drop_page_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def anonymous_mb() -> float:
    """This process's resident anonymous memory (not the store's mapped files, which count
    in its RSS while their pages are cached)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _measure(
    settings: Any, resident: bool, seeds: list[str], asked: list[tuple[list[str], list[str]]]
) -> dict[Any, Any]:
    """One path in a fresh process: first passes with the page cache dropped before each
    request (what a server meets after it started or idled), then warm ones, then cold ones
    again (what it meets once the store's own in-process caches have filled)."""
    from indexer import service
    from indexer.search import Page, Searcher

    out: dict[Any, Any] = {}
    with service.searcher(settings) as s:
        s.size()  # opens the shard, as `indexer serve`'s readiness check does before traffic
        if resident:
            drop_page_cache()
            before = anonymous_mb()
            began = time.perf_counter()
            index = s.keep_resident(settings.resident_mb << 20)
            out["build_s"] = time.perf_counter() - began
            out["anon_mb"] = anonymous_mb() - before
            assert index is not None, "the resident index did not fit INDEXER_RESIDENT_MB"
            out["nbytes"], out["tracks"] = index.nbytes, len(index)

        def similar(i: int, s: Searcher = s) -> list[str]:
            return [h.id for h in s.similar(seeds[i], page=Page(10))]

        def recommend(i: int, s: Searcher = s) -> list[str]:
            liked, disliked = asked[i]
            return [h.id for h in s.recommend(liked, disliked, page=Page(10))]

        for mode in ("first", "warm", "cold"):
            for route, call in (("similar", similar), ("recommend", recommend)):
                took, ids = [], []
                for i in range(REQUESTS):
                    if mode != "warm":
                        drop_page_cache()
                    t0 = time.perf_counter()
                    ids.append(call(i))
                    took.append(time.perf_counter() - t0)
                out[route, mode] = took, ids
    return out


def run() -> str:
    from indexer.search import chamfer
    from indexer.settings import Settings

    tracks, data_dir, built, asked = store_and_requests(TRACKS, REQUESTS)
    stored = np.concatenate(tracks).astype(np.float16).astype(np.float32)
    sizes = np.array([t.shape[0] for t in tracks])
    del tracks
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    kept = [stored[a : a + n] for a, n in zip(starts, sizes, strict=True)]

    def name(i: int) -> str:
        return str(uuid.UUID(int=int(i)))

    truth: dict[str, list[set[str]]] = {"recommend": [], "similar": []}
    for liked, disliked in asked:
        truth["recommend"].append(
            {name(i) for i in exhaustive(kept, stored, sizes, liked, disliked)}
        )
        scores = chamfer([kept[liked[0]]], kept)[0][0]
        scores[liked[0]] = -np.inf
        truth["similar"].append({name(i) for i in np.argsort(-scores)[:10]})
    seeds = [name(liked[0]) for liked, _ in asked]
    named = [([name(i) for i in liked], [name(i) for i in disliked]) for liked, disliked in asked]
    del stored, kept
    settings = Settings(data_dir=data_dir, _env_file=None)
    got: dict[str, dict[Any, Any]] = {}
    for path in ("store", "resident"):
        with multiprocessing.get_context("spawn").Pool(1) as workers:
            got[path] = workers.apply(_measure, (settings, path == "resident", seeds, named))
    table = []
    for route in ("similar", "recommend"):
        peer = percentiles(got["store"][route, "first"][0])[1]
        for path in ("store", "resident"):
            m = got[path]
            recall = np.mean(
                [
                    len(t & set(g)) / 10
                    for t, g in zip(truth[route], m[route, "first"][1], strict=True)
                ]
            )
            f50, f99 = percentiles(m[route, "first"][0])
            w50, w99 = percentiles(m[route, "warm"][0])
            c50, c99 = percentiles(m[route, "cold"][0])
            label = {"store": "store path (peer)", "resident": "resident index"}[path]
            table.append(
                f"| `{route}` | {label} | {recall:.3f} | {f50:.1f} | {f99:.1f} | {w50:.1f} | "
                f"{w99:.1f} | {c50:.1f} | {c99:.1f} | {peer / f99:.1f}x |"
            )
            print(table[-1], file=sys.stderr)
    res = got["resident"]
    mb = res["nbytes"] / 2**20
    return (
        "## Similar tracks and recommendations with a cold page cache (`python -m benchmarks.run "
        "cold`)\n\n"
        f"{res['tracks']:,} tracks (the recommend benchmark's synthetic catalog, "
        f"{sizes.mean():.1f} clips per track; embedded Qdrant Edge store, optimised, built in "
        f"{built:.0f} s). `Searcher.similar` for {REQUESTS} seeds and `Searcher.recommend` for "
        f"{REQUESTS} requests of 3 liked and 1 disliked track, limit 10; each path in a fresh "
        "process of its own with one torch thread and the model loaded (the resident one builds "
        "its index first, as `indexer serve` does at start). First: the first pass over the "
        "requests, with `sync; echo 3 > /proc/sys/vm/drop_caches` before each request; warm: a "
        "second pass; cold again: a third, dropped before each again (by then Qdrant Edge keeps "
        "much of what the first passes read in its own memory, which dropping the page cache "
        "leaves alone). Recall@10 of the first pass against exhaustive clip-level scoring of "
        "every track (Chamfer similarity; for recommend the recommend score). The store path is "
        "the peer: HNSW over the song vectors, the candidates' clips read from their payloads. "
        "The resident index (`indexer serve`, `INDEXER_RESIDENT_MB`): clip centroids scanned and "
        "int8 clips re-ranked in memory, only the page's hits read from the store.\n\n"
        "| route | path | recall@10 | first p50 ms | first p99 ms | warm p50 ms | warm p99 ms "
        "| cold again p50 ms | cold again p99 ms | first p99 speed-up |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(table) + "\n\n"
        f"Resident index: built in {res['build_s']:.1f} s from one scan of the store, "
        f"{mb:.0f} MB ({mb / res['tracks'] * 1000:.2f} MB per 1k tracks at "
        f"{sizes.mean():.1f} clips per track); the process's anonymous memory grew by "
        f"{res['anon_mb']:.0f} MB while building it (the scan also fills Qdrant Edge's own "
        "caches). Targets on this 2-core CPU: first p99 <= 50 ms at 100k tracks, recall@10 >= "
        "0.95.\n"
    )
