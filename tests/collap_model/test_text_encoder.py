from __future__ import annotations

import itertools

import pytest
import torch

from collap_model.model import CoLLAP
from collap_model.text_encoder import TextInputError, window_owners, window_spans

WORDS = (
    "a soft solo piano opens at seventy two beats per minute in a minor then strings enter and "
    "the music swells into a bright chorus with drums bass and brass before a quiet bridge"
).split()


def long_text(n_words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


@pytest.mark.parametrize("n", [1, 100, 254, 255, 256, 1000])
def test_windows_cover_every_token_once(n: int) -> None:
    spans = window_spans(n, 254, 192)
    owned = window_owners(spans)
    assert owned[0][0] == 0
    assert owned[-1][1] == n
    for (_, hi), (nlo, _) in itertools.pairwise(owned):
        assert hi == nlo, "owned ranges must tile the sequence"
    for (s, e), (lo, hi) in zip(spans, owned, strict=True):
        assert s <= lo < hi <= e


def test_long_text_keeps_every_token(model: CoLLAP) -> None:
    text = long_text(600)
    n_tokens = len(model.text_encoder.tokenize([text])[0])
    assert n_tokens > model.config.text.window_tokens  # several windows
    emb = model.encode_text([text, "short"])
    assert int(emb.mask[0].sum()) == n_tokens
    assert int(emb.mask[1].sum()) == len(model.text_encoder.tokenize(["short"])[0])


def test_short_text_matches_a_single_backbone_call(model: CoLLAP) -> None:
    enc = model.text_encoder
    text = "a slow intro building to a chorus"
    tokens, pooled = enc.hidden_states([text])
    batch = enc.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        direct = enc.backbone(**batch).last_hidden_state[0, 1:-1]
    assert torch.allclose(tokens[0], direct, atol=1e-5)
    assert torch.allclose(pooled[0], direct.mean(0), atol=1e-5)


def test_query_precision_keeps_the_float32_embeddings(model: CoLLAP) -> None:
    # encode_text runs the backbone in bfloat16 where the CPU has it (fast_precision), in
    # float32 elsewhere: either way its embeddings are those of the path that training reads
    text = "an upbeat jazz tune with piano and brass that builds to a loud chorus"
    emb = model.encode_text([text])
    with torch.inference_mode():
        full = model.text_encoder([text])
    cosine = torch.nn.functional.cosine_similarity(emb.tokens[0], full.tokens[0], dim=-1)
    assert float(cosine.min()) > 0.9995
    assert float(emb.sentence[0] @ full.sentence[0]) > 0.9995


def test_text_over_the_word_limit_is_refused_not_cut(model: CoLLAP) -> None:
    limit = model.config.text.max_words
    assert limit >= 512
    model.encode_text([long_text(limit)])
    with pytest.raises(TextInputError, match=f"at most {limit}"):
        model.encode_text([long_text(limit + 1)])
