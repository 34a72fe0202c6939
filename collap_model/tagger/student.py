"""A fast student of the tagger: the compact encoder's stages, trained to say what musicnn says.

musicnn costs far more than the rest of the clip encoder (it tags 3 s patches of a 16 kHz
96-band spectrogram with wide convolutions); the student reads the compact encoder's own
log-mel of the whole clip (64 bands, 25 frames per second) through the same stride-2 stages
and predicts, per clip, the teacher's tags (binary cross-entropy on its probabilities as soft
targets) and penultimate features (mean squared error, standardised per feature). It learns
from the teacher's outputs on the training clips (the training cache holds both), so its
quality on music unlike those clips is what the tagger benchmark measures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.audio_encoder import conv_stages, pool_stages
from collap_model.config import AudioEncoderConfig
from collap_model.tagger.tagger import TagOutput

log = logging.getLogger("collap.train")


class StudentTagger(nn.Module):
    """Compact log-mel (B, n_mels, F), frame mask (B, F) -> TagOutput like the teacher's."""

    feature_mean: Tensor
    feature_std: Tensor

    def __init__(self, n_mels: int, tags: int, penultimate: int, hidden: int = 512) -> None:
        super().__init__()
        shape = AudioEncoderConfig(channels=(128, 192, 256), blocks_per_stage=1)
        self.stages = conv_stages(n_mels, shape)
        width = shape.channels[-1]
        self.pool_logit = nn.Linear(width, 1)
        self.tags = tags
        self.head = nn.Sequential(
            nn.LayerNorm(2 * width), nn.Linear(2 * width, hidden), nn.GELU(),
            nn.Linear(hidden, tags + penultimate),
        )  # fmt: skip
        self.register_buffer("feature_mean", torch.zeros(penultimate))
        self.register_buffer("feature_std", torch.ones(penultimate))

    def raw(self, logmel: Tensor, mask: Tensor) -> Tensor:
        """(B, K + P): tag logits, then standardised penultimate features."""
        return self.head(pool_stages(self.stages, self.pool_logit, logmel, mask))

    def forward(self, logmel: Tensor, mask: Tensor) -> TagOutput:
        out = self.raw(logmel, mask).float()
        tags = torch.sigmoid(out[:, : self.tags])
        return TagOutput(tags, out[:, self.tags :] * self.feature_std + self.feature_mean)


@dataclass(frozen=True)
class DistilReport:
    steps: int
    seconds: float
    val_tag_loss: float  # binary cross-entropy against the teacher on held-out clips
    val_feature_mse: float  # standardised penultimate features


def distil(
    features: np.ndarray,
    masks: np.ndarray,
    teacher: np.ndarray,
    tags: int,
    steps: int = 3000,
    batch: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[StudentTagger, DistilReport]:
    """Train a student on cached clips: compact log-mel (M, n_mels, F), masks (M, F) and the
    teacher's outputs (M, K + P), K tags first. 5% of the clips (every 20th) are held out."""
    began = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m = features.shape[0]
    held = np.arange(0, m, 20)
    train = np.setdiff1d(np.arange(m), held)
    target = torch.from_numpy(np.asarray(teacher, dtype=np.float32))
    student = StudentTagger(features.shape[1], tags, target.shape[1] - tags)
    pen = target[train][:, tags:]
    student.feature_mean.copy_(pen.mean(dim=0))
    student.feature_std.copy_(pen.std(dim=0).clamp(min=1e-3))
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)

    def loss_of(rows: np.ndarray) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(np.asarray(features[rows], dtype=np.float32))
        mk = torch.from_numpy(np.asarray(masks[rows]))
        out = student.raw(x, mk)
        want = target[rows]
        tag_loss = F.binary_cross_entropy_with_logits(out[:, :tags], want[:, :tags])
        z = (want[:, tags:] - student.feature_mean) / student.feature_std
        return tag_loss, F.mse_loss(out[:, tags:], z)

    student.train()
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay after 100 warm-up steps
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * step / steps))
        tag_loss, mse = loss_of(rng.choice(train, size=min(batch, len(train)), replace=False))
        loss = tag_loss + 0.1 * mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 250 == 0:
            log.info("distil step %d/%d tags %.4f features %.3f", step + 1, steps,
                     tag_loss.item(), mse.item())  # fmt: skip
    student.eval()
    with torch.inference_mode():
        parts = [loss_of(held[i : i + 512]) for i in range(0, len(held), 512)]
    report = DistilReport(
        steps, time.monotonic() - began,
        float(np.mean([p[0].item() for p in parts])), float(np.mean([p[1].item() for p in parts])),
    )  # fmt: skip
    return student, report
