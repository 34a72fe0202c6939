from __future__ import annotations

import pytest
import torch

from collap_model.model import AudioInputError, CoLLAP
from collap_model.outputs import ClipBatch
from collap_model.text_encoder import TextInputError
from tests.conftest import tone


@pytest.mark.parametrize(("seconds", "clips"), [(0.5, 1), (10.0, 1), (420.0, 83)])
def test_encode_audio_shapes(model: CoLLAP, seconds: float, clips: int) -> None:
    emb = model.encode_audio(tone(seconds, 440.0), 16_000)
    d = model.config.embed_dim
    assert emb.clips.shape == (clips, d)
    assert emb.song.shape == (d,)
    assert emb.clip_times.shape == (clips, 2)
    assert torch.allclose(emb.clips.norm(dim=-1), torch.ones(clips), atol=1e-5)
    assert float(emb.song.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(emb.clip_times[0, 0]) == 0.0
    assert float(emb.clip_times[-1, 1]) == pytest.approx(seconds, abs=1e-3)


def test_encode_audio_is_deterministic_in_eval(model: CoLLAP) -> None:
    wave = tone(23.0, 330.0)
    a = model.encode_audio(wave, 16_000)
    b = model.encode_audio(wave.clone(), 16_000)
    assert torch.equal(a.clips, b.clips)
    assert torch.equal(a.song, b.song)


def test_encode_audio_resamples_and_mixes_down(model: CoLLAP) -> None:
    wave = tone(12.0, 440.0)
    at_16k = model.encode_audio(wave, 16_000)
    import torchaudio

    at_44k = torchaudio.functional.resample(wave, 16_000, 44_100)
    stereo = torch.stack([at_44k, at_44k])
    emb = model.encode_audio(stereo, 44_100)
    assert emb.clips.shape == at_16k.clips.shape
    assert torch.allclose(emb.clip_times, at_16k.clip_times, atol=1e-3)
    cos = torch.nn.functional.cosine_similarity(emb.clips, at_16k.clips, dim=-1)
    assert float(cos.min()) > 0.99


def test_empty_audio_is_refused(model: CoLLAP) -> None:
    with pytest.raises(AudioInputError):
        model.encode_audio(torch.zeros(0), 16_000)


def test_encode_text_shapes(model: CoLLAP) -> None:
    emb = model.encode_text(["a slow piano intro", "drums come in at 1:05 and the chorus is loud"])
    assert emb.tokens.shape[0] == 2
    assert emb.tokens.shape[2] == model.config.embed_dim
    assert emb.mask.sum(dim=1).tolist()[0] < emb.mask.sum(dim=1).tolist()[1]
    assert torch.allclose(emb.sentence.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_empty_text_is_refused(model: CoLLAP) -> None:
    with pytest.raises(TextInputError, match="empty"):
        model.encode_text(["   "])


def test_padding_and_masking_do_not_change_scores(model: CoLLAP) -> None:
    short = model.encode_audio(tone(7.0, 220.0), 16_000)
    long = model.encode_audio(tone(95.0, 660.0), 16_000)
    texts = model.encode_text(
        ["soft strings", "a long build-up into a loud chorus with drums and brass"]
    )
    alone = model.score(texts.select(0), [short])
    batched = model.score(texts, [short, long])
    assert batched.scores.shape == (2, 2)
    assert torch.allclose(alone.scores[0, 0], batched.scores[0, 0], atol=1e-5)
    n = short.clips.shape[0]
    assert torch.allclose(alone.clip_weights[0, 0, :n], batched.clip_weights[0, 0, :n], atol=1e-5)
    assert float(batched.clip_weights[0, 0, n:].abs().sum()) == 0.0
    long_alone = model.score(texts.select(1), [long])
    assert torch.allclose(long_alone.scores[0, 0], batched.scores[1, 1], atol=1e-5)


def test_score_weights_sum_to_one_and_explain_the_score(model: CoLLAP) -> None:
    song = model.encode_audio(tone(60.0, 440.0), 16_000)
    text = model.encode_text(["a quiet opening"])
    out = model.score(text, ClipBatch.of([song]))
    w, r = out.clip_weights[0, 0], out.clip_scores[0, 0]
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float((w * r).sum()) == pytest.approx(float(out.scores[0, 0]), abs=1e-5)
