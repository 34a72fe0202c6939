"""Contrastive loss: symmetric InfoNCE over fusion scores plus the global song<->sentence term.

For a batch of B aligned pairs (text_i, song_i):
    F_ij = f(text_i, song_j) / τ_f,   G_ij = (t_i · s_j) / τ_g
    InfoNCE(X) = ½ [CE(X, diag) + CE(Xᵀ, diag)]
    loss = InfoNCE(F) + λ InfoNCE(G)
with learnable temperatures τ = 1 / exp(logit_scale), the scale capped at 100 as in CLIP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_MAX_SCALE = math.log(100.0)


def info_nce(logits: Tensor) -> Tensor:
    """Symmetric cross-entropy of a (B, B) logit matrix whose diagonal holds the positives."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class LogitScale(nn.Module):
    """A learnable inverse temperature, exp(s) with s clamped to [0, log 100]."""

    def __init__(self, init_temperature: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.log_scale.clamp(0.0, _MAX_SCALE).exp()
