"""Auxiliary targets for the audio encoder, read off a manifest's section metadata.

Synthetic songs (`collap synth`) say exactly what plays when: each section's instruments,
groove, dynamics, tempo and key, and the song's style. Contrastive pairs teach the encoder
those facts only through whichever text a step happens to draw; the same facts as per-clip
targets teach them on every clip of every step. A linear head on the clip embeddings predicts
them (binary cross-entropy on soft targets), so the embedding space itself comes to hold them.
The head is training-only: it is not part of the model or its checkpoint.

Targets of one clip [t0, t1]: each overlapping section weighs by its share of the clip,
    instrument:<name>   share of the clip during which <name> plays
    groove:<pattern>    share with that drum pattern ("none" included)
    section:<name>      share inside a section of that kind (intro, verse, ...)
    density:<value>     share with that density
    style:<name>        the song's style (1 for the whole song)
    level               mean dynamic marking, pp = 0 .. ff = 1
    tempo               (bpm - 40) / 160, clipped to [0, 1]
    minor               share in a minor key
A song whose sections do not all say instruments, level, tempo and key (a user's own data,
with or without plain sections) has no targets and adds nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = {"pp": 0.0, "p": 0.2, "mp": 0.4, "mf": 0.6, "f": 0.8, "ff": 1.0}
_CATEGORIES = (("instrument", "instruments"), ("groove", "drums"), ("density", "density"))
_REQUIRED = frozenset({"instruments", "level", "tempo", "key"})  # what `collap synth` writes


@dataclass(frozen=True)
class Attributes:
    labels: list[str]  # (K,) what each target column means
    targets: np.ndarray  # (M, K) float32 in [0, 1], one row per cached clip
    known: np.ndarray  # (M,) bool: the clip's song has section metadata


def _sections(entry: Any) -> list[dict[str, Any]]:
    """The entry's sections if every one carries the attributes, else none."""
    sections = [s.model_dump() for s in entry.sections or []]
    return sections if all(set(s) >= _REQUIRED for s in sections) else []


def _values(section: dict[str, Any], field: str) -> list[str]:
    value = section.get(field)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def label_names(entries: Sequence[Any]) -> list[str]:
    """Every label the entries' metadata can fill, in a stable order."""
    names: set[str] = set()
    for e in entries:
        for s in _sections(e):
            names.add(f"section:{s['name']}")
            for label, field in _CATEGORIES:
                names.update(f"{label}:{v}" for v in _values(s, field))
        style = getattr(e, "style", None)
        if style and _sections(e):
            names.add(f"style:{style}")
    return [*sorted(names), "level", "tempo", "minor"] if names else []


def clip_attributes(entries: Sequence[Any], times: np.ndarray, offsets: np.ndarray) -> Attributes:
    """Targets for every cached clip; `times` (M, 2) and `offsets` (S + 1,) as in AudioCache."""
    labels = label_names(entries)
    column = {name: k for k, name in enumerate(labels)}
    targets = np.zeros((times.shape[0], len(labels)), dtype=np.float32)
    known = np.zeros(times.shape[0], dtype=bool)
    for s, entry in enumerate(entries):
        sections = _sections(entry)
        if not sections:
            continue
        style = getattr(entry, "style", None)
        for m in range(int(offsets[s]), int(offsets[s + 1])):
            t0, t1 = float(times[m, 0]), float(times[m, 1])
            overlap = [max(0.0, min(t1, x["end"]) - max(t0, x["start"])) for x in sections]
            total = sum(overlap)
            if total <= 0:
                continue
            row = targets[m]
            for x, o in zip(sections, overlap, strict=True):
                if o <= 0:
                    continue
                w = o / total
                row[column[f"section:{x['name']}"]] += w
                for label, field in _CATEGORIES:
                    for v in _values(x, field):
                        row[column[f"{label}:{v}"]] += w
                marks = [_LEVELS[v] for v in _values(x, "level") if v in _LEVELS]
                row[column["level"]] += w * (float(np.mean(marks)) if marks else 0.5)
                start_bpm = float(x.get("tempo") or 40)
                tempo = (start_bpm + float(x.get("tempo_end") or start_bpm)) / 2
                row[column["tempo"]] += w * min(1.0, max(0.0, (tempo - 40) / 160))
                row[column["minor"]] += w * float("minor" in str(x.get("key", "")))
            if style:
                row[column[f"style:{style}"]] = 1.0
            known[m] = True
    np.clip(targets, 0.0, 1.0, out=targets)
    return Attributes(labels, targets, known)


class AttributeHead(nn.Module):
    """Clip embeddings (M, D) -> logits of every label (M, K)."""

    def __init__(self, embed_dim: int, labels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, labels)

    def loss(self, clips: Tensor, targets: Tensor, known: Tensor) -> Tensor:
        """Mean binary cross-entropy over the known clips' labels (0 when none is known)."""
        if not bool(known.any()):
            return clips.new_zeros(())
        logits = self.proj(clips[known])
        return F.binary_cross_entropy_with_logits(logits, targets[known].to(logits.dtype))


def batch_targets(attrs: Attributes, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """The targets (M, K) and known mask (M,) of the cached clips `rows`."""
    return torch.from_numpy(attrs.targets[rows]), torch.from_numpy(attrs.known[rows])
