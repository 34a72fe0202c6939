"""The text search's first stage: fusion turned into one dot product (collap_model/fusion.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from collap_model import load_model
from collap_model.checkpoint import save_checkpoint
from collap_model.fusion import fit_prototypes
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


def test_zero_prototypes_pool_the_plain_mean_clip() -> None:
    model = load_model("collap-mini", device="cpu")
    model.fusion.prototypes.zero_()
    batch = songs([3, 9, 1])
    first = model.first_stage_batch(batch)
    assert first.shape == (3, model.config.fusion.first_stage_prototypes, 256)
    for i, n in enumerate([3, 9, 1]):
        mean = batch.clips[i, :n].mean(dim=0)
        assert torch.allclose(first[i], mean.expand_as(first[i]), atol=1e-6)
    one = model.first_stage_vectors(batch.clips[1, :9], batch.clip_times[1, :9])
    assert torch.allclose(one, first[1], atol=1e-6)  # padding changes nothing


def test_first_stage_is_exact_when_every_token_attends_like_a_prototype() -> None:
    """With one attention query for every token, equal to prototype j, fusion is ū · p_j."""
    model = load_model("collap-mini", device="cpu")
    fusion = model.fusion
    gen = torch.Generator().manual_seed(1)
    fusion.prototypes.copy_(torch.randn(fusion.prototypes.shape, generator=gen) * 3)
    j = 1
    with torch.no_grad():
        fusion.w_q.weight.zero_()
        fusion.w_q.bias.copy_(fusion.prototypes[j])
    text = model.encode_text(["a quiet opening that swells into a loud chorus", "drums"])
    batch = songs([4, 12, 7], seed=2)
    vectors, prototype = model.first_stage_query(text)
    assert prototype.tolist() == [j, j]
    approx = vectors @ model.first_stage_batch(batch)[:, j].T  # (texts, songs)
    exact = model.score(text, batch).scores
    assert torch.allclose(approx, exact, atol=1e-5)
    assert not torch.allclose(
        approx,
        vectors @ torch.stack([batch.clips[i, :n].mean(0) for i, n in enumerate([4, 12, 7])]).T,
        atol=1e-3,
    )  # a flat mean would not have been exact


def test_fit_prototypes_finds_clusters_deterministically() -> None:
    gen = torch.Generator().manual_seed(3)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    z = torch.cat([c + 0.1 * torch.randn(40, 2, generator=gen) for c in centres])
    fitted = fit_prototypes(z, 3, seed=0)
    nearest = torch.cdist(centres, fitted).min(dim=1).values
    assert float(nearest.max()) < 0.1
    assert torch.equal(fitted, fit_prototypes(z, 3, seed=0))
    with pytest.raises(ValueError, match="at least 3 texts"):
        fit_prototypes(z[:2], 3)


def test_fitting_changes_the_fingerprint_and_is_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = load_model("collap-mini", device="cpu")
    before = model.fingerprint
    texts = ["soft piano intro", "loud drums at the end", "a bright brass chorus", "strings"]
    model.fit_first_stage([model.encode_text(texts[:2]), model.encode_text(texts[2:])])
    assert model.fingerprint != before
    loaded = load_model(save_checkpoint(model, tmp_path / "ckpt"), device="cpu")
    assert torch.equal(loaded.fusion.prototypes, model.fusion.prototypes)
    assert loaded.fingerprint == model.fingerprint


def test_checkpoint_without_prototypes_loads_with_flat_attention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    model = load_model("collap-mini", device="cpu")
    out = save_checkpoint(model, tmp_path / "old")
    state = load_file(str(out / "model.safetensors"))
    del state["fusion.prototypes"]  # as saved before the first stage had prototypes
    save_file(state, str(out / "model.safetensors"))
    reloaded = load_model(out, device="cpu")  # no "tensors missing" error
    assert float(reloaded.fusion.prototypes.abs().sum()) == 0.0
    clips = songs([5])
    assert torch.allclose(
        reloaded.first_stage_batch(clips)[0, 0], clips.clips[0].mean(0), atol=1e-6
    )


def test_the_shipped_model_has_distinct_fitted_prototypes(model: CoLLAP) -> None:
    protos = model.fusion.prototypes
    assert protos.shape[0] == model.config.fusion.first_stage_prototypes >= 2
    assert float(torch.pdist(protos).min()) > 1.0
