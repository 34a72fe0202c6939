from __future__ import annotations

import pytest
import torch

from collap_model.config import FrontendConfig
from collap_model.frontend import clip_spans, cut_clips, prepare_waveform

CFG = FrontendConfig()


@pytest.mark.parametrize(
    "seconds", [0.01, 0.5, 9.99, 10.0, 10.01, 12.0, 37.3, 300.0, 420.0, 7200.0]
)
def test_every_sample_is_in_some_clip(seconds: float) -> None:
    n = round(seconds * CFG.sample_rate)
    spans = clip_spans(n, CFG)
    assert spans[0][0] == 0
    assert spans[-1][1] == n
    covered_to = 0
    for start, end in spans:
        assert start <= covered_to, "gap between clips"
        assert end - start <= CFG.clip_samples
        covered_to = max(covered_to, end)
    assert covered_to == n


def test_short_input_gives_one_clip_and_empty_gives_none() -> None:
    assert clip_spans(8000, CFG) == [(0, 8000)]
    assert clip_spans(0, CFG) == []


def test_long_input_is_never_truncated() -> None:
    n = 7 * 60 * CFG.sample_rate
    spans = clip_spans(n, CFG)
    assert len(spans) == 83  # starts every 5 s up to 410 s
    assert spans[-1] == (n - CFG.clip_samples, n)


def test_cut_clips_pads_the_short_clip() -> None:
    wave = torch.ones(12_000)
    clips, valid = cut_clips(wave, clip_spans(12_000, CFG), CFG.clip_samples)
    assert clips.shape == (1, CFG.clip_samples)
    assert valid.tolist() == [12_000]
    assert float(clips[0, 12_000:].abs().sum()) == 0.0


def test_prepare_waveform_mixes_down_and_resamples() -> None:
    stereo = torch.zeros(2, 44_100)
    stereo[0] = 1.0
    mono = prepare_waveform(stereo, 44_100, 16_000)
    assert mono.shape == (16_000,)
    assert float(mono[4000:12000].mean()) == pytest.approx(0.5, abs=1e-3)


def test_prepare_waveform_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        prepare_waveform(torch.zeros(100, dtype=torch.int16), 16_000, 16_000)
    with pytest.raises(ValueError, match="samples"):
        prepare_waveform(torch.zeros(1, 2, 100), 16_000, 16_000)
    with pytest.raises(ValueError, match="positive"):
        prepare_waveform(torch.zeros(100), 0, 16_000)


def test_config_rejects_gappy_clips() -> None:
    with pytest.raises(ValueError, match="hop_seconds"):
        FrontendConfig(clip_seconds=5, hop_seconds=6)


@pytest.mark.parametrize("seconds", [0.3, 10.0, 10.5, 14.9, 15.0, 61.2])
@pytest.mark.parametrize("chunk", [1000, 16_000, 70_001])
def test_streaming_clipper_matches_clip_spans(seconds: float, chunk: int) -> None:
    import numpy as np

    from collap_model.clipping import StreamingClipper

    n = round(seconds * CFG.sample_rate)
    wave = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    clipper = StreamingClipper(CFG.clip_samples, CFG.hop_samples)
    got = []
    for i in range(0, n, chunk):
        got += clipper.push(wave[i : i + chunk])
    got += clipper.finish()
    spans = clip_spans(n, CFG)
    assert [(s, e) for s, e, _ in got] == spans
    expected, _ = cut_clips(torch.from_numpy(wave), spans, CFG.clip_samples)
    assert np.array_equal(np.stack([c for _, _, c in got]), expected.numpy())
    assert clipper.held <= CFG.clip_samples + CFG.hop_samples + chunk
