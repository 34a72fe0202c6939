"""The learned path's weight α beside the tag bridge, chosen on held-out songs after training.

A tagged model's text vector is v_h = α (learned token path) + γ π̄_h [0 ; b] (fusion.py). The
learned path fits the music it was trained on; the bridge (the tagger's vocabulary, embedded
by the text backbone) carries to music the model never heard. Training runs with α = 1; this
picks α from `GAINS` by the mean average precision over the validation sets (held-out
synthetic songs and held-out recordings, never evaluation data), one set at a time, so a set
with more songs does not outvote the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from collap_model.model import CoLLAP

GAINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def has_learned_gain(model: CoLLAP) -> bool:
    return isinstance(getattr(model.fusion, "learned_gain", None), torch.Tensor)


def calibrate(
    model: CoLLAP,
    sets: dict[str, Sequence[int]],
    measure: Callable[[CoLLAP, Sequence[int]], dict[str, float]],
) -> dict[str, Any]:
    """Set the model's α to the best of GAINS on the validation `sets` (name -> songs) as
    `measure(model, songs)` rates them (text -> audio metrics with "mAP"); returns every
    gain's metrics and the choice."""
    sets = {name: songs for name, songs in sets.items() if len(songs) >= 2}
    if not has_learned_gain(model) or not sets:
        return {}
    gain: torch.Tensor = model.fusion.learned_gain
    table: dict[str, dict[str, dict[str, float]]] = {}
    for g in GAINS:
        gain.fill_(g)
        table[f"{g:g}"] = {name: measure(model, songs) for name, songs in sets.items()}

    def mean_map(g: float) -> float:
        return sum(m["mAP"] for m in table[f"{g:g}"].values()) / len(sets)

    best = max(GAINS, key=lambda g: (mean_map(g), g))
    gain.fill_(best)
    return {"learned_gain": best, "sets": {k: len(v) for k, v in sets.items()}, "gains": table}
