"""The pretrained music tagger inside the clip encoder: musicnn's MTT and MSD models.

`Tagger` takes the model's clips (10 s waveforms at 16 kHz) and tags `patches_per_clip` 3 s
patches of each one, spread evenly over the clip (1: its centre), with every chosen network;
a clip's tags and penultimate features are the mean over its patches. Patches are cut with a
quarter-window of the clip's audio on each side where the clip has it, so their frames equal
those of musicnn's spectrogram of the whole song.

Weights load from a folder of `<model>.safetensors` (`collap convert-musicnn` writes them;
the package ships the converted ones in collap_model/weights/musicnn/ with their licence).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from collap_model.config import ConfigError
from collap_model.tagger.labels import LABELS
from collap_model.tagger.musicnn import (
    N_FFT,
    PATCH_SAMPLES,
    PENULTIMATE,
    Musicnn,
    MusicnnMel,
    fast_precision,
)

SHIPPED = "package:musicnn"


def weights_dir(spec: str) -> Path:
    """The folder of converted musicnn weights: "package:musicnn" (shipped) or a path."""
    if spec == SHIPPED:
        return Path(str(resources.files("collap_model") / "weights" / "musicnn"))
    return Path(spec).expanduser()


def load_musicnn(name: str, directory: Path) -> Musicnn:
    """One converted musicnn network, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if name not in LABELS:
        raise ConfigError(f"unknown musicnn model {name!r}; choose from {', '.join(LABELS)}")
    path = directory / f"{name}.safetensors"
    if not path.is_file():
        raise ConfigError(
            f"no musicnn weights at {path}; convert them with `collap convert-musicnn` "
            "(see collap_model/MODEL_CARD.md)"
        )
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"cannot read musicnn weights {path}: {err}") from err
    net = Musicnn(LABELS[name])
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path} does not hold {name}: missing {missing[:1]}, unexpected {unexpected[:1]}"
        )
    return net.eval()


@dataclass(frozen=True)
class TagOutput:
    """What the tagger says of M clips."""

    tags: Tensor  # (M, K) tag probabilities in [0, 1], the networks' labels in order
    penultimate: Tensor  # (M, 200 * networks) each network's penultimate features, in order


class Tagger(nn.Module):
    """Clip waveforms (M, S) at 16 kHz, valid lengths (M,) -> TagOutput (see the module doc)."""

    def __init__(self, models: Sequence[str], patches_per_clip: int, spec: str = SHIPPED) -> None:
        super().__init__()
        directory = weights_dir(spec)
        self.spec = spec
        self.directory = directory
        self.patches_per_clip = patches_per_clip
        self.mel = MusicnnMel()
        self.nets = nn.ModuleList([load_musicnn(name, directory) for name in models])
        self.models = tuple(models)
        self.labels: tuple[str, ...] = tuple(label for m in models for label in LABELS[m])
        self.requires_grad_(False)

    @property
    def width(self) -> int:
        """Features per clip: K tags + 200 penultimate features per network."""
        return len(self.labels) + PENULTIMATE * len(self.nets)

    def identity(self) -> str:
        """Which weights these are: the files' sha256 (part of the model's fingerprint)."""
        h = hashlib.sha256(json.dumps([self.models, self.patches_per_clip]).encode())
        for name in self.models:
            h.update((self.directory / f"{name}.safetensors").read_bytes())
        return h.hexdigest()[:16]

    def train(self, mode: bool = True) -> Tagger:
        super().train(False)  # pretrained and frozen: always in eval mode
        return self

    def patches(self, clips: Tensor, valid: Tensor) -> Tensor:
        """Clips (M, S), valid (M,) -> the chosen patches' waveforms (M·P, 256 + 47616 + 256),
        zero where the clip has no audio."""
        m, p = clips.shape[0], self.patches_per_clip
        pad = N_FFT // 2
        room = (valid - PATCH_SAMPLES).clamp(min=0)  # (M,) latest start of a whole patch
        steps = torch.arange(p, device=clips.device)
        # evenly spread: the centres of P equal parts of the room (P = 1: the middle)
        starts = (room[:, None] * (2 * steps[None] + 1)) // (2 * p)  # (M, P)
        padded = torch.nn.functional.pad(clips, (pad, pad + PATCH_SAMPLES))  # room for any start
        index = starts.reshape(-1, 1) + torch.arange(PATCH_SAMPLES + 2 * pad, device=clips.device)
        rows = torch.arange(m, device=clips.device).repeat_interleave(p)[:, None]
        out = padded[rows, index]  # (M·P, 48128)
        # samples past a clip's valid end (and the padding before its start) are silence
        absolute = index - pad  # position in the clip
        keep = (absolute >= 0) & (absolute < valid.repeat_interleave(p)[:, None])
        return out * keep

    def forward(self, clips: Tensor, valid: Tensor, fast: bool = True) -> TagOutput:
        if clips.shape[0] == 0:
            empty = clips.new_zeros(0, len(self.labels))
            return TagOutput(empty, clips.new_zeros(0, PENULTIMATE * len(self.nets)))
        waves = self.patches(clips, valid.to(clips.device))
        # the quarter-window on each side makes uncentred frames equal musicnn's centred ones
        spec = self.mel.forward_uncentred(waves)  # (M·P, 187, 96)
        tags, pens = [], []
        precision = fast_precision(clips.device) if fast else torch.autocast("cpu", enabled=False)
        with precision:
            for net in self.nets:
                t, e = net(spec, fast=fast)
                tags.append(t.float())
                pens.append(e.float())
        m, p = clips.shape[0], self.patches_per_clip
        tag = torch.cat(tags, dim=1).view(m, p, -1).mean(dim=1)
        pen = torch.cat(pens, dim=1).view(m, p, -1).mean(dim=1)
        return TagOutput(tag, pen)
