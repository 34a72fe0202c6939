"""The pretrained music tagger inside the clip encoder: musicnn's MTT and MSD models.

`Tagger` takes the model's clips (10 s waveforms at 16 kHz) and tags `patches_per_clip` 3 s
patches of each one, spread evenly over the clip (1: its centre), with every chosen network;
a clip's tags and penultimate features are the mean over its patches. Patches are cut with a
quarter-window of the clip's audio on each side where the clip has it, so their frames equal
those of musicnn's spectrogram of the whole song.

With shared placement (`grid`: clip and hop in samples) a clip's one patch is centred in the
overlap of clips 2j and 2j + 1 of its song instead, the one of those whose centre lies nearest
the clip's centre and that fits inside the clip with its context (none fits in a clip shorter
than the patch, or sometimes in a song's last clip, which is aligned to the song's end: then
its centre). That needs the clips' starts in the song. Two clips of one song then cut the
same samples, and consecutive patches with the same samples are tagged once: the same output
for half the work, whatever the batches.

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

WINDOW = PATCH_SAMPLES + N_FFT  # a patch and the quarter-window of context on each side

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

    def __init__(
        self,
        models: Sequence[str],
        patches_per_clip: int,
        spec: str = SHIPPED,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        directory = weights_dir(spec)
        self.spec = spec
        self.directory = directory
        self.patches_per_clip = patches_per_clip
        if grid is not None and (patches_per_clip != 1 or grid[0] - grid[1] < WINDOW):
            raise ConfigError("shared patches need one patch per clip and clips that overlap")
        self.grid = grid  # (clip, hop) samples: shared placement (module doc); None: centred
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
        placement = [] if self.grid is None else [["shared", *self.grid]]
        h = hashlib.sha256(json.dumps([self.models, self.patches_per_clip, *placement]).encode())
        for name in self.models:
            h.update((self.directory / f"{name}.safetensors").read_bytes())
        return h.hexdigest()[:16]

    def train(self, mode: bool = True) -> Tagger:
        super().train(False)  # pretrained and frozen: always in eval mode
        return self

    def placements(self, valid: Tensor, starts: Tensor | None) -> Tensor:
        """Where each clip's patches start in the clip (M, P) (module doc); `starts`: the
        clips' first samples in their songs, needed by shared placement."""
        p = self.patches_per_clip
        room = (valid - PATCH_SAMPLES).clamp(min=0)  # (M,) latest start of a whole patch
        steps = torch.arange(p, device=valid.device)
        # evenly spread: the centres of P equal parts of the room (P = 1: the middle)
        spread = (room[:, None] * (2 * steps[None] + 1)) // (2 * p)  # (M, P)
        if self.grid is None:
            return spread
        if starts is None:
            raise ValueError("shared tagger patches need each clip's start in its song")
        clip, hop = self.grid
        starts = starts.to(valid.device, torch.int64)
        # pair j's patch starts at 2 hop j + (hop + clip) / 2 - patch / 2 in the song
        phase = (hop + clip) // 2 - PATCH_SAMPLES // 2
        centre = starts + valid // 2 - PATCH_SAMPLES // 2  # a patch centred in the clip
        nearest = torch.div(centre - phase, 2 * hop, rounding_mode="floor")
        pairs = nearest[:, None] + torch.arange(-1, 3, device=valid.device)  # (M, 4)
        local = pairs * 2 * hop + phase - starts[:, None]  # candidates' starts in the clip
        pad = N_FFT // 2
        fits = (local >= pad) & (local + PATCH_SAMPLES + pad <= valid[:, None])
        far = (local - (centre - starts)[:, None]).abs().masked_fill(~fits, 1 << 62)
        chosen = local.gather(1, far.argmin(dim=1, keepdim=True))  # (M, 1)
        return torch.where(fits.any(dim=1, keepdim=True), chosen, spread)

    def patches(self, clips: Tensor, valid: Tensor, starts: Tensor | None = None) -> Tensor:
        """Clips (M, S), valid (M,) -> the chosen patches' waveforms (M·P, 256 + 47616 + 256),
        zero where the clip has no audio."""
        m, p = clips.shape[0], self.patches_per_clip
        pad = N_FFT // 2
        starts = self.placements(valid, starts)  # (M, P)
        padded = torch.nn.functional.pad(clips, (pad, pad + PATCH_SAMPLES))  # room for any start
        index = starts.reshape(-1, 1) + torch.arange(PATCH_SAMPLES + 2 * pad, device=clips.device)
        rows = torch.arange(m, device=clips.device).repeat_interleave(p)[:, None]
        out = padded[rows, index]  # (M·P, 48128)
        # samples past a clip's valid end (and the padding before its start) are silence
        absolute = index - pad  # position in the clip
        keep = (absolute >= 0) & (absolute < valid.repeat_interleave(p)[:, None])
        return out * keep

    def forward(
        self, clips: Tensor, valid: Tensor, starts: Tensor | None = None, fast: bool = True
    ) -> TagOutput:
        """`starts`: each clip's first sample in its song (shared placement needs them)."""
        if clips.shape[0] == 0:
            empty = clips.new_zeros(0, len(self.labels))
            return TagOutput(empty, clips.new_zeros(0, PENULTIMATE * len(self.nets)))
        waves = self.patches(clips, valid.to(clips.device), starts)
        # a patch with the same samples as the one before it is tagged once
        same = torch.zeros(waves.shape[0], dtype=torch.bool, device=waves.device)
        same[1:] = (waves[1:] == waves[:-1]).all(dim=1)
        which = torch.cumsum(~same, dim=0) - 1  # (M·P,) row of each patch among the distinct
        # the quarter-window on each side makes uncentred frames equal musicnn's centred ones
        spec = self.mel.forward_uncentred(waves[~same])  # (distinct, 187, 96)
        tags, pens = [], []
        precision = fast_precision(clips.device) if fast else torch.autocast("cpu", enabled=False)
        with precision:
            for net in self.nets:
                t, e = net(spec, fast=fast)
                tags.append(t.float()[which])
                pens.append(e.float()[which])
        m, p = clips.shape[0], self.patches_per_clip
        tag = torch.cat(tags, dim=1).view(m, p, -1).mean(dim=1)
        pen = torch.cat(pens, dim=1).view(m, p, -1).mean(dim=1)
        return TagOutput(tag, pen)
