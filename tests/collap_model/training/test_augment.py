"""Feature-domain augmentation matches what noise and gain do to real audio."""

from __future__ import annotations

import math

import pytest
import torch

import collap_model.training.augment as augment
from collap_model.config import load_preset
from collap_model.frontend import LogMel

RATE = 16_000


@pytest.fixture(scope="module")
def logmel() -> LogMel:
    return LogMel(load_preset("collap-mini").frontend)


def chord(seconds: float = 10.0) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    return sum(0.1 * torch.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6))[None]


def test_a_noise_floor_in_the_features_matches_noise_in_the_audio(
    logmel: LogMel, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = chord()
    valid = torch.tensor([x.shape[1]])
    noise = 0.003 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    clean, mask = logmel(x, valid)
    real, _ = logmel(x + noise, valid)
    monkeypatch.setattr(augment, "NOISE_PROB", 1.0)
    monkeypatch.setattr(augment, "NOISE_RMS", (0.003, 0.003))
    monkeypatch.setattr(augment, "GAIN_DB", 0.0)
    torch.manual_seed(0)
    simulated = augment.LogMelAugment(logmel, RATE)(clean, mask)
    assert float((clean - real).abs().mean()) > 1.0  # the floor changes the features a lot
    assert float((simulated - real).abs().mean()) < 0.15  # and the simulation follows it


def test_gain_shifts_the_log_and_padding_stays_silent(
    logmel: LogMel, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.cat([chord(), torch.zeros(1, 0)], dim=1).repeat(2, 1)
    valid = torch.tensor([x.shape[1], x.shape[1] // 2])  # the second clip is half padding
    feats, mask = logmel(x, valid)
    monkeypatch.setattr(augment, "NOISE_PROB", 0.0)
    aug = augment.LogMelAugment(logmel, RATE)
    torch.manual_seed(0)
    out = aug(feats, mask)
    shift = (out - feats)[0, :, mask[0]]
    assert float(shift.std()) < 1e-4 and 0 < float(shift.abs().mean()) <= math.log(10**0.3) / 4
    assert torch.equal(out[1, :, ~mask[1]], feats[1, :, ~mask[1]])
    torch.manual_seed(0)
    assert torch.equal(aug(feats, mask), out)  # seeded per training step: reproducible
