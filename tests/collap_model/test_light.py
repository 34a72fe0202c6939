"""The torch-free text side (collap_model/light.py) against the torch model: the same text
embeddings (float32 backbone), text vectors, fusion scores, per-clip explanation and evidence,
for the shipped models with and without a tagger and a WhereHead; the same refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from collap_model import load_model
from collap_model.light import LightModel, load_light
from collap_model.model import CoLLAP
from collap_model.outputs import ClipBatch
from collap_model.text_encoder import TextInputError

TEXTS = [
    "a slow intro building to a chorus",
    "Café-Musik: SOLO piano, 72 BPM — then strings!! ♪ 钢琴 (remastered) l'été",
    "drums enter at 1:30 and the bass drops out before the bridge " * 40,  # several windows
    "x",
]
TOL = 1e-4


def _songs(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    clips, times = [], []
    for n in (1, 4, 17, 60):
        c = rng.standard_normal((n, 256)).astype(np.float32)
        clips.append(c / np.linalg.norm(c, axis=1, keepdims=True))
        starts = 5.0 * np.arange(n, dtype=np.float32) + rng.uniform(0, 3)
        times.append(np.stack([starts, starts + 10.0], axis=1))
    return clips, times


@pytest.fixture(scope="module", params=["collap-tagger", "collap-mini"])
def pair(request: pytest.FixtureRequest) -> tuple[CoLLAP, LightModel]:
    light = load_light(request.param)
    assert light is not None
    return load_model(request.param, device="cpu"), light


def test_same_fingerprint_and_config(pair: tuple[CoLLAP, LightModel]) -> None:
    model, light = pair
    assert light.fingerprint == model.fingerprint
    assert light.config == model.config
    assert light.sample_rate == model.sample_rate


def test_same_text_embedding(pair: tuple[CoLLAP, LightModel]) -> None:
    model, light = pair
    for text in TEXTS:
        got = light.encode(text)
        with torch.inference_mode():
            ref = model.text_encoder([text])
        np.testing.assert_allclose(got.tokens, ref.tokens[0].numpy(), atol=TOL)
        if ref.tags is None:
            assert got.tags is None
        else:
            assert got.tags is not None
            np.testing.assert_allclose(got.tags, ref.tags[0].numpy(), atol=TOL)


def test_same_fusion(pair: tuple[CoLLAP, LightModel]) -> None:
    model, light = pair
    clips, times = _songs(0)
    batch = ClipBatch.of_arrays(clips, times)
    for text in TEXTS[:2]:
        got = light.encode(text)
        with torch.inference_mode():
            ref = model.text_encoder([text])
        want = model.score(ref, batch)
        fused = light.fuse(got, clips, times)
        np.testing.assert_allclose(fused.scores, want.scores[0].numpy(), atol=TOL)
        np.testing.assert_allclose(fused.clip_weights, want.clip_weights[0].numpy(), atol=TOL)
        # a clip score divides by its weight: compare where the weight is not vanishing
        big = want.clip_weights[0].numpy() > 1e-3
        np.testing.assert_allclose(
            fused.clip_scores[big], want.clip_scores[0].numpy()[big], atol=1e-3
        )
        np.testing.assert_allclose(light.scores(got, clips, times), fused.scores, atol=1e-6)
        np.testing.assert_allclose(
            light.query_vector(got), model.first_stage_query(ref)[0].numpy(), atol=TOL
        )
        where = model.locate(ref, batch)[0].numpy()
        evidence = light.evidence(got, clips, times)
        assert np.array_equal(np.isinf(evidence), np.isinf(where))
        real = ~np.isinf(where)
        np.testing.assert_allclose(evidence[real], where[real], atol=1e-3)


def test_the_first_stage_vector_gives_the_fusion_score(pair: tuple[CoLLAP, LightModel]) -> None:
    model, light = pair
    clips, times = _songs(1)
    songs = model.first_stage_batch(ClipBatch.of_arrays(clips, times)).numpy()
    emb = light.encode(TEXTS[0])
    np.testing.assert_allclose(
        songs @ light.query_vector(emb), light.scores(emb, clips, times), atol=TOL
    )


def test_refuses_what_the_model_refuses(pair: tuple[CoLLAP, LightModel]) -> None:
    _, light = pair
    with pytest.raises(TextInputError, match="empty"):
        light.encode("   ")
    limit = light.config.text.max_words
    with pytest.raises(TextInputError, match=f"at most {limit}"):
        light.encode("word " * (limit + 1))


def test_audio_loads_the_torch_model_once(pair: tuple[CoLLAP, LightModel]) -> None:
    model, light = pair
    wave = np.random.default_rng(2).standard_normal(16_000 * 12).astype(np.float32) * 0.1
    emb = light.encode_audio(wave, light.sample_rate)
    ref = model.encode_audio(wave, model.sample_rate)
    assert light.full() is light.full()
    np.testing.assert_allclose(emb.clips.numpy(), ref.clips.numpy(), atol=TOL)


def test_only_models_with_recorded_weights_run_light() -> None:
    # the paper presets ship no weights: their fingerprint must be computed by the torch model
    assert load_light("collap-paper-encoder") is None


def test_a_locator_reading_the_sentence_gives_the_torch_evidence(tmp_path: Path) -> None:
    from collap_model.checkpoint import save_checkpoint
    from collap_model.training.locator import with_locator

    model = with_locator(load_model("collap-tagger", device="cpu"), layers=1, seed=3, sentence=True)
    save_checkpoint(model, tmp_path)
    light = load_light(tmp_path)
    assert light is not None and light.config.fusion.locator_sentence
    clips, times = _songs(2)
    for text in TEXTS[:2]:
        got = light.encode(text)
        with torch.inference_mode():
            ref = model.text_encoder([text])
            where = model.locate(ref, ClipBatch.of_arrays(clips, times))[0].numpy()
        assert got.sentence is not None
        np.testing.assert_allclose(got.sentence, ref.sentence[0].numpy(), atol=TOL)
        evidence = light.evidence(got, clips, times)
        real = ~np.isinf(where)
        assert np.array_equal(np.isinf(evidence), ~real)
        np.testing.assert_allclose(evidence[real], where[real], atol=1e-3)
