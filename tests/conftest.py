"""Shared fixtures: CPU only, no network, hub access disabled."""

from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def tone(seconds: float, freq: float, rate: int = 16_000, amp: float = 0.3):  # type: ignore[no-untyped-def]
    """A sine tone with a little noise, as float32 (T,)."""
    import torch

    n = round(seconds * rate)
    t = torch.arange(n, dtype=torch.float32) / rate
    gen = torch.Generator().manual_seed(int(freq))
    return amp * torch.sin(2 * math.pi * freq * t) + 0.01 * torch.randn(n, generator=gen)


@pytest.fixture(scope="session")
def model():  # type: ignore[no-untyped-def]
    """The default model (registry.DEFAULT_MODEL), on the CPU, shared by read-only tests."""
    from collap_model import load_model

    return load_model(device="cpu")
