"""Recommendations from liked and disliked tracks against Qdrant's own recommend API (issue 18).

The store is built as for the query benchmark (benchmarks/query.py): tracks that string together
runs of real clip embeddings of `collap synth` songs with noise, their song and first-stage
vectors from the model over those clips, in an embedded Qdrant Edge store optimised as at the
end of `indexer index`. A request likes three tracks (one drawn at random and two of its 20
nearest by song vector, as a listener's liked tracks resemble each other) and dislikes one
(drawn the same way elsewhere), limit 10.

Measured on the same store and requests:
- `Searcher.recommend` through the store (what `indexer recommend` runs): union first stage,
  clip-level re-rank; and over the resident index `indexer serve` keeps for `POST /recommend`
  (indexer/resident.py; its cold-cache figures are benchmarks/cold.py's);
- Qdrant's recommend strategies on the `song` vectors, as a Qdrant server would run them for
  ids: average vector (a nearest search for 2·mean(liked) − mean(disliked)), best score and
  sum of scores (Qdrant Edge's RecommendBestScore / RecommendSumScores), the liked and disliked
  ids excluded by a filter, their vectors read by id first (inside the timing, as the server
  does for ids);
- the reference: exhaustive clip-level scoring of every track with the recommend score
  (mean Chamfer similarity to the liked tracks − NEGATIVE_WEIGHT x the highest to a disliked
  one), from the float16 clips the store holds; each method's recall@10 against its top 10.
Latency runs in a process of its own with one torch thread, as `indexer serve` sets it up,
after the store's files were read once (in the OS page cache).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.query import (
    CACHE,
    build_store,
    percentiles,
    synthesise,
    warm_page_cache,
)

POOL_SONGS = 24
POOL_SEED = 6_000_000
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
TRACKS = int(os.environ.get("RECOMMEND_BENCH_TRACKS", "10000"))
REQUESTS = 40
LIKED, DISLIKED, NEAR = 3, 1, 20
WARM_UP = 5
METHODS = ("ours", "ours_wide", "resident", "average_vector", "best_score", "sum_scores")
WIDE = 200  # INDEXER_CANDIDATES of the second row of ours (the default is 100)


def pool(model: Any) -> list[np.ndarray]:
    """Real clip embeddings (N_i, D) of the pool songs (30-90 s each)."""
    from collap_model.synth.dataset import generate_dataset, read_manifest
    from indexer.decode import AudioDecoder

    out = CACHE / "recommend-pool"
    if not (out / "manifest.jsonl").exists():
        generate_dataset(
            out, POOL_SONGS, seed=POOL_SEED, soundfont=SOUNDFONT, min_seconds=30, max_seconds=90
        )
    clips = []
    for row in read_manifest(out / "manifest.jsonl"):
        with AudioDecoder(str(row.audio_path), model.sample_rate) as dec:
            wave = np.concatenate(list(dec.chunks()))
        clips.append(model.encode_audio(wave, model.sample_rate).clips.numpy())
    return clips


def requests(songs: np.ndarray, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """n (liked, disliked) track index lists: each side a random track and some of its NEAR
    nearest by song vector."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked: list[list[int]] = []
        for count in (LIKED, DISLIKED):
            while True:
                anchor = int(rng.integers(len(songs)))
                if all(anchor not in p for p in picked):
                    break
            near = np.argsort(-(songs @ songs[anchor]))[1 : NEAR + 1]
            taken = {i for p in picked for i in p}
            near = [int(i) for i in near if int(i) not in taken]
            picked.append([anchor, *rng.choice(near, size=count - 1, replace=False).tolist()])
        out.append((picked[0], picked[1]))
    return out


def exhaustive(
    tracks: list[np.ndarray], stored: np.ndarray, sizes: np.ndarray, liked: list[int],
    disliked: list[int],
) -> list[int]:  # fmt: skip
    """The top 10 track indices by the recommend score over every track (named ones out)."""
    from indexer.search import NEGATIVE_WEIGHT

    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def to_all(seed: np.ndarray) -> np.ndarray:  # (n,) Chamfer similarity to every track
        sim = seed @ stored.T  # (N_s, ΣN)
        forward = np.maximum.reduceat(sim, starts, axis=1).mean(axis=0)
        backward = np.add.reduceat(sim.max(axis=0), starts) / sizes
        result: np.ndarray = 0.5 * (forward + backward)
        return result

    scores = np.mean([to_all(tracks[i]) for i in liked], axis=0)
    if disliked:
        scores -= NEGATIVE_WEIGHT * np.max([to_all(tracks[i]) for i in disliked], axis=0)
    scores[[*liked, *disliked]] = -np.inf
    return [int(i) for i in np.argsort(-scores)[:10]]


def _measure(settings: Any, asked: list[tuple[list[str], list[str]]]) -> dict[str, Any]:
    """Every method over every request, in this (spawned) process: latencies and hit ids."""
    import qdrant_edge as qe

    from indexer import service
    from indexer.search import Page, Searcher
    from indexer.store.base import SONG
    from indexer.store.edge import EdgeStore

    out: dict[str, Any] = {m: {"took": [], "ids": []} for m in METHODS}
    with service.searcher(settings) as searcher:
        store = searcher.store
        assert isinstance(store, EdgeStore)
        target = searcher.collection()
        shard = store._shard(target)

        def qdrant(method: str, liked: list[str], disliked: list[str]) -> list[str]:
            recs = {str(r.id): r for r in shard.retrieve([*liked, *disliked], False, [SONG])}
            pos = [list(recs[i].vector[SONG]) for i in liked]  # type: ignore[index]
            neg = [list(recs[i].vector[SONG]) for i in disliked]  # type: ignore[index]
            match method:
                case "average_vector":
                    avg = np.mean(pos, axis=0)
                    if neg:
                        avg = 2 * avg - np.mean(neg, axis=0)
                    query = qe.Query.Nearest(avg.tolist(), using=SONG)
                case "best_score":
                    query = qe.Query.RecommendBestScore(qe.RecommendQuery(pos, neg), using=SONG)
                case _:
                    query = qe.Query.RecommendSumScores(qe.RecommendQuery(pos, neg), using=SONG)
            named = qe.Filter(must_not=[qe.HasIdCondition({*liked, *disliked})])
            request = qe.QueryRequest(
                limit=10, query=query, filter=named, with_vector=False, with_payload=True
            )
            return [str(h.id) for h in shard.query(request)]

        wide = Searcher(store, searcher.model, WIDE, settings.max_query_chars)
        resident = Searcher(store, searcher.model, settings.candidates, settings.max_query_chars)
        assert resident.keep_resident(settings.resident_mb << 20) is not None

        def ours(liked: list[str], disliked: list[str], s: Searcher = searcher) -> list[str]:
            return [h.id for h in s.recommend(liked, disliked, page=Page(10))]

        for method in METHODS:
            match method:
                case "ours":
                    run = ours
                case "ours_wide":
                    run = lambda a, b: ours(a, b, wide)  # noqa: E731
                case "resident":
                    run = lambda a, b: ours(a, b, resident)  # noqa: E731
                case _:
                    run = lambda a, b, m=method: qdrant(m, a, b)  # noqa: E731
            for liked, disliked in asked[:WARM_UP]:
                run(liked, disliked)
            for liked, disliked in asked:
                began = time.perf_counter()
                ids = run(liked, disliked)
                out[method]["took"].append(time.perf_counter() - began)
                out[method]["ids"].append(ids)
        # /batch/similar against one /similar call per seed: the first liked track of each
        seeds = [liked[0] for liked, _ in asked]
        searcher.similar_many(seeds, page=Page(10))  # warm-up: both read the same pages
        for seed in seeds:
            searcher.similar(seed, page=Page(10))
        began = time.perf_counter()
        batch = searcher.similar_many(seeds, page=Page(10))
        out["batch_s"] = time.perf_counter() - began
        began = time.perf_counter()
        one_by_one = [searcher.similar(seed, page=Page(10)) for seed in seeds]
        out["one_by_one_s"] = time.perf_counter() - began
        out["batch_same"] = [[h.id for h in b] for b in batch] == [
            [h.id for h in o] for o in one_by_one
        ]
    return out


def store_and_requests(n: int, count: int) -> tuple[list[np.ndarray], Path, float, list[Any]]:
    """n tracks' clips (N_i, D) from the shipped model, their store (built unless cached), the
    seconds its build took, and `count` (liked, disliked) requests over them."""
    from collap_model.checkpoint import load_model

    model = load_model(device="cpu")
    tracks, songs, first, times = synthesise(model, pool(model), n, seed=n + 1)
    data_dir = CACHE / f"recommend-store-{n}-{model.fingerprint}"
    built = build_store(data_dir, model, tracks, songs, first, times)
    return tracks, data_dir, built, requests(songs, count, seed=1)


def run() -> str:
    from indexer.settings import Settings

    tracks, data_dir, built, asked = store_and_requests(TRACKS, REQUESTS)
    name = [[str(uuid.UUID(int=i)) for i in side] for pair in asked for side in pair]
    named = [(name[2 * k], name[2 * k + 1]) for k in range(len(asked))]
    stored = np.concatenate(tracks).astype(np.float16).astype(np.float32)
    sizes = np.array([t.shape[0] for t in tracks])
    truth = [
        {str(uuid.UUID(int=i)) for i in exhaustive(tracks, stored, sizes, liked, disliked)}
        for liked, disliked in asked
    ]
    reference = []
    for liked, disliked in asked[:5]:
        began = time.perf_counter()
        exhaustive(tracks, stored, sizes, liked, disliked)
        reference.append(time.perf_counter() - began)
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    warm_page_cache(data_dir)
    with multiprocessing.get_context("spawn").Pool(1) as workers:
        measured = workers.apply(_measure, (settings, named))
    labels = {
        "ours": "`indexer recommend` (the store: union first stage, clip-level re-rank)",
        "ours_wide": f"`indexer recommend` with `INDEXER_CANDIDATES={WIDE}`",
        "resident": "`POST /recommend` (`indexer serve`'s resident index, benchmarks/cold.py)",
        "average_vector": "Qdrant recommend, average vector",
        "best_score": "Qdrant recommend, best score",
        "sum_scores": "Qdrant recommend, sum of scores",
    }
    rows = []
    for method in METHODS:
        got = measured[method]
        recall = np.mean([len(t & set(g)) / 10 for t, g in zip(truth, got["ids"], strict=True)])
        overlap = np.mean(
            [
                len(set(g) & set(o)) / 10
                for g, o in zip(got["ids"], measured["ours"]["ids"], strict=True)
            ]
        )
        p50, p99 = percentiles(got["took"])
        rows.append(f"| {labels[method]} | {recall:.3f} | {overlap:.2f} | {p50:.1f} | {p99:.1f} |")
        print(rows[-1], file=sys.stderr)
    r50, _ = percentiles(reference)
    return (
        "## Recommendations against Qdrant's recommend API (`python -m benchmarks.run "
        "recommend`)\n\n"
        f"{TRACKS:,} tracks (runs of real clip embeddings of {POOL_SONGS} synthetic songs with "
        "noise, as in the query benchmark; embedded Qdrant Edge store, optimised, built in "
        f"{built:.0f} s); {REQUESTS} requests of {LIKED} liked tracks (one at random and two of "
        f"its {NEAR} nearest by song vector) and {DISLIKED} disliked one, limit 10, after "
        f"{WARM_UP} warm-up ones, with the store's files in the OS page cache, one torch "
        "thread, in a process of their own. Recall@10 against exhaustive clip-level scoring of "
        "every track with the recommend score (mean Chamfer similarity to the liked tracks "
        "minus half the highest to a disliked one; "
        f"{r50:.0f} ms per request in NumPy); overlap: the share of our top 10 that "
        "each method also returns. The Qdrant rows rank by song vectors alone, as Qdrant's API "
        "can; their timing includes reading the named tracks' vectors by id. Ours re-ranks "
        "the union of the average-vector query's 2 x `INDEXER_CANDIDATES` nearest tracks and "
        "each liked track's share of `INDEXER_CANDIDATES`; the resident index gathers "
        "the same union over clip centroids, ten times as wide, and re-ranks it from int8 "
        "clips in memory.\n\n"
        "| method | recall@10 | overlap with ours | p50 ms | p99 ms |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"`POST /batch/similar` for {len(asked)} seeds (the first liked track of each request; "
        "what `Searcher.similar_many` runs): "
        f"{measured['batch_s'] * 1000:.0f} ms, against {measured['one_by_one_s'] * 1000:.0f} ms "
        f"for one `similar` per seed ({measured['one_by_one_s'] / measured['batch_s']:.1f}x; "
        f"same hits: {'yes' if measured['batch_same'] else 'no'}).\n"
    )
