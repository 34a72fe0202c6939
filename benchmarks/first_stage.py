"""How well the text search's first stage approximates fusion, by design (issue 6).

The first stage must find, among all tracks, the ones fusion would rank highest, with one dot
product per track (collap_model/fusion.py derives the approximation). This measures recall@10
against exhaustive fusion of the top-K candidates for several first stages, on the query
benchmark's tracks (benchmarks/query.py: runs of real clip embeddings of held-out songs):
- the mean clip (flat attention; what a model without fitted prototypes searches);
- m attention prototypes fitted on training-phrasing texts, m = 1, 2, 4, 8 (the shipped model
  uses 2), searching the prototype nearest to the text's attention query;
- the ceiling of this family: each text's own single attention query (not storable: it needs
  every track's clips at query time).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

TRACKS = int(os.environ.get("FIRST_STAGE_BENCH_TRACKS", "10000"))
QUERIES = 20
FIT_SONGS = range(0, 950, 4)  # training-phrasing texts of collap-mini's training songs
PROTOTYPES = (1, 2, 4, 8)
KS = (100, 200)


def fit_texts() -> list[str]:
    from collap_model.synth.captions import describe
    from collap_model.synth.structure import plan_song

    texts = []
    for seed in FIT_SONGS:
        t = describe(plan_song(seed, 30.0, 150.0), "train")
        texts += [t.caption, *t.queries]
    return texts


def pooled(model: Any, tracks: list[np.ndarray], times: list[np.ndarray]) -> np.ndarray:
    from collap_model.outputs import ClipBatch

    return np.concatenate(
        [
            model.first_stage_batch(
                ClipBatch.of_arrays(tracks[i : i + 512], times[i : i + 512])
            ).numpy()
            for i in range(0, len(tracks), 512)
        ]
    )


def run() -> str:
    import torch

    from benchmarks import query as bq
    from collap_model.checkpoint import load_model
    from collap_model.fusion import fit_prototypes

    model = load_model(device="cpu")
    texts = fit_texts()
    with torch.inference_mode():
        z = torch.cat(
            [
                model.fusion.attention_query(model.encode_text(texts[i : i + 64]))
                for i in range(0, len(texts), 64)
            ]
        )
    sources, all_queries = bq.pool(model)
    rng = np.random.default_rng(0)
    queries = [all_queries[i] for i in rng.permutation(len(all_queries))[:QUERIES]]
    tracks, _, _, times = bq.synthesise(model, sources, TRACKS, seed=TRACKS)
    means = np.stack([t.mean(axis=0) for t in tracks])
    fitted = {}
    for m in PROTOTYPES:
        protos = fit_prototypes(z, m, seed=0)
        model.fusion.prototypes = protos  # a different m than the checkpoint's: set, not copied
        fitted[m] = (protos, pooled(model, tracks, times))
    recall: dict[str, list[float]] = {}
    for q in queries:
        text = model.encode_text([q])
        best = set(np.argsort(-bq.exhaustive(model, text, tracks, times))[:10].tolist())
        vector = model.first_stage_query(text)[0][0].numpy()
        with torch.inference_mode():
            own = model.fusion.attention_query(text)
        scored = {"mean clip": means @ vector}
        for m, (protos, vectors) in fitted.items():
            j = int(torch.cdist(own, protos).argmin())
            scored[f"{m} prototype{'s' if m > 1 else ''}"] = vectors[:, j] @ vector
        model.fusion.prototypes = own
        scored["own attention query (ceiling)"] = pooled(model, tracks, times)[:, 0] @ vector
        for name, scores in scored.items():
            order = np.argsort(-scores)
            for k in KS:
                hit = len(best & set(order[:k].tolist())) / 10
                recall.setdefault(f"{name}|{k}", []).append(hit)
    rows = []
    for name in dict.fromkeys(key.split("|")[0] for key in recall):
        cells = " | ".join(f"{np.mean(recall[f'{name}|{k}']):.3f}" for k in KS)
        rows.append(f"| {name} | {cells} |")
    return (
        "## First-stage design (`python -m benchmarks.run first_stage`)\n\n"
        f"Recall@10 of the first stage's top-K against exhaustive fusion, {TRACKS:,} tracks of the "
        f"query benchmark, {QUERIES} held-out queries; prototypes fitted on "
        f"{len(texts)} training-phrasing texts (see the module docstring).\n\n"
        "| first stage | " + " | ".join(f"top-{k}" for k in KS) + " |\n"
        "|---|" + "---|" * len(KS) + "\n" + "\n".join(rows)
    )
