"""The native text backbone (collap_model/bert.py) against transformers: the same tokens and,
through CoLLAP, the same embeddings within 1e-3, and the same fingerprint."""

from __future__ import annotations

import pytest
import torch

from collap_model import load_model
from collap_model.model import CoLLAP
from collap_model.text_encoder import TextBackend, native_bf16

TEXTS = [
    "a slow intro building to a chorus",
    "Café-Musik: SOLO piano, 72 BPM — then strings!! ♪ 钢琴 (remastered) l'été",
    "drums enter at 1:30 and the bass drops out before the bridge " * 40,  # several windows
    "x",
]


@pytest.fixture(scope="module")
def native() -> CoLLAP:
    return load_model(device="cpu", text_backend=TextBackend.NATIVE)


def test_same_tokens(model: CoLLAP, native: CoLLAP) -> None:
    assert native.text_encoder.backend is TextBackend.NATIVE
    assert native.text_encoder.tokenize(TEXTS) == model.text_encoder.tokenize(TEXTS)
    assert native.text_encoder.prefix == model.text_encoder.prefix
    assert native.text_encoder.suffix == model.text_encoder.suffix


@pytest.mark.parametrize("fast", [False, True])
def test_same_embeddings(model: CoLLAP, native: CoLLAP, fast: bool) -> None:
    with torch.inference_mode():
        if fast:
            ref, got = model.encode_text(TEXTS), native.encode_text(TEXTS)
        else:
            ref, got = model.text_encoder(TEXTS), native.text_encoder(TEXTS)
    assert torch.equal(ref.mask, got.mask)
    bf16 = fast and native_bf16()
    close(ref.tokens[ref.mask], got.tokens[got.mask], bf16)
    close(ref.sentence, got.sentence, bf16)
    close(model.first_stage_query(ref), native.first_stage_query(got), bf16)


def close(ref: torch.Tensor, got: torch.Tensor, bf16: bool) -> None:
    """Within 1e-3 in float32; a fast call on a CPU with native bfloat16 (`bf16`) runs both
    backbones' matmuls in bfloat16 (TextEncoder.fast_precision), whose rounding differs with
    the order of operations: there, each vector within cosine 0.999 of the other."""
    if not bf16:
        assert (ref - got).abs().max() < 1e-3
        return
    cos = torch.nn.functional.cosine_similarity(ref.float(), got.float(), dim=-1)
    assert cos.min() > 0.999, cos.min()


def test_same_fingerprint(model: CoLLAP, native: CoLLAP) -> None:
    assert native.fingerprint == model.fingerprint


def test_tagged_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a tagged model's text side also carries the tag bridge, from the checkpoint's prompts
    from collap_model.checkpoint import save_checkpoint

    reference = load_model("collap-tagger", device="cpu")
    save_checkpoint(reference, tmp_path)
    native = load_model(tmp_path, device="cpu", text_backend=TextBackend.AUTO)
    assert native.text_encoder.backend is TextBackend.NATIVE
    assert native.fingerprint == reference.fingerprint
    with torch.inference_mode():
        ref, got = reference.encode_text(TEXTS[:2]), native.encode_text(TEXTS[:2])
    assert ref.tags is not None and got.tags is not None
    close(ref.tags, got.tags, native_bf16())
    close(ref.tokens[ref.mask], got.tokens[got.mask], native_bf16())


def test_shipped_tagged_model_searches_on_the_native_backend() -> None:
    # its tag prompts come from the checkpoint, so the backend cannot change the fingerprint
    m = load_model("collap-tagger", device="cpu", text_backend=TextBackend.AUTO)
    assert m.text_encoder.backend is TextBackend.NATIVE
    ref = load_model("collap-tagger", device="cpu", text_backend=TextBackend.TRANSFORMERS)
    assert m.fingerprint == ref.fingerprint


def test_native_refuses_a_backbone_it_cannot_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from collap_model.config import ConfigError
    from collap_model.text_encoder import resolve_backend

    with pytest.raises(ConfigError, match="native text backend"):
        resolve_backend(TextBackend.NATIVE, tmp_path, frozen=True)
    assert resolve_backend(TextBackend.AUTO, tmp_path, frozen=True) is TextBackend.TRANSFORMERS
