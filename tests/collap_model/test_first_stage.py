"""The text search's first stage: fusion is exactly one dot product (collap_model/fusion.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from collap_model import load_model
from collap_model.config import load_preset
from collap_model.model import CoLLAP
from collap_model.outputs import ClipBatch


def songs(lengths: list[int], seed: int = 0) -> ClipBatch:
    gen = torch.Generator().manual_seed(seed)
    clips = [F.normalize(torch.randn(n, 256, generator=gen), dim=-1).numpy() for n in lengths]
    times = [
        torch.stack([torch.arange(n) * 5.0, torch.arange(n) * 5.0 + 10.0], 1).numpy()
        for n in lengths
    ]
    return ClipBatch.of_arrays(clips, times)


TEXTS = [
    "a quiet opening that swells into a loud chorus",
    "drums",
    "A long caption. " * 40 + "It ends on a held chord.",
]


def test_first_stage_dot_product_is_the_fusion_score(model: CoLLAP) -> None:
    text = model.encode_text(TEXTS)
    batch = songs([4, 12, 1, 60], seed=2)
    vectors = model.first_stage_query(text)
    stored = model.first_stage_batch(batch)
    dim = model.config.first_stage_dim
    assert vectors.shape == (3, dim) and stored.shape == (4, dim)
    exact = model.score(text, batch).scores
    assert torch.allclose(vectors @ stored.T, exact, atol=1e-5)
    # in the index the stored vectors are float16: the ranking of a text is kept
    half = vectors @ stored.half().float().T
    assert torch.equal(half.argsort(dim=1), exact.argsort(dim=1))


def test_exact_for_a_randomly_initialised_model_too() -> None:
    torch.manual_seed(5)
    model = CoLLAP(load_preset("collap-mini")).eval()
    with torch.no_grad():
        model.fusion.patterns.normal_(std=3.0)  # sharp, distinct attention patterns
    text = model.encode_text(TEXTS[:2])
    batch = songs([7, 3, 20], seed=4)
    exact = model.score(text, batch).scores
    assert torch.allclose(model.first_stage_query(text) @ model.first_stage_batch(batch).T, exact,
                          atol=1e-5)  # fmt: skip


def test_padding_changes_nothing() -> None:
    model = load_model("collap-mini", device="cpu")
    batch = songs([3, 9, 1])
    one = model.first_stage_vectors(batch.clips[1, :9], batch.clip_times[1, :9])
    assert torch.allclose(one, model.first_stage_batch(batch)[1], atol=1e-6)


def test_the_shipped_model_looks_through_distinct_patterns(model: CoLLAP) -> None:
    patterns = model.fusion.patterns
    assert patterns.shape[0] == model.config.fusion.patterns >= 2
    with torch.no_grad():
        attn = model.fusion.pattern_attention(songs([30], seed=6))[0]  # (m, N)
    assert float(torch.pdist(attn).min()) > 1e-3
