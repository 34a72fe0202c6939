"""What a text search asks of a model, in NumPy arrays: the contract between indexer/search.py and
the two implementations of the text side, the torch model (`ModelScorer` over a loaded CoLLAP)
and the torch-free one a cold search process starts with (collap_model/light.py).

Torch is imported only by `ModelScorer`'s methods, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from collap_model.model import CoLLAP
    from collap_model.outputs import ClipBatch


@dataclass(frozen=True)
class Fused:
    """One text against C songs: fusion scores (C,), and per clip (C, N; zeros where padded)
    the fusion weights w_n and clip scores r_n of collap_model/fusion.py."""

    scores: np.ndarray
    clip_weights: np.ndarray
    clip_scores: np.ndarray


class TextScorer(Protocol):
    """One text against songs given as float32 clips (N_i, D) and clip times (N_i, 2)."""

    def encode(self, text: str) -> Any:
        """The text's embedding (opaque to callers); ValueError for a text the model refuses."""

    def query_vector(self, emb: Any) -> np.ndarray:
        """(m·D,): its dot product with a song's first-stage vector is the fusion score."""

    def fuse(self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]) -> Fused:
        """Fusion scores with the per-clip explanation."""

    def scores(
        self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Fusion scores alone (C,)."""

    def evidence(
        self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Where the text happens: per-clip evidence (C, N), -inf where padded (CoLLAP.locate)."""


class ModelScorer:
    """TextScorer of a loaded CoLLAP (its device, its precision)."""

    def __init__(self, model: CoLLAP) -> None:
        self.model = model

    def encode(self, text: str) -> Any:
        return self.model.encode_text([text])

    def query_vector(self, emb: Any) -> np.ndarray:
        return self.model.first_stage_query(emb)[0].cpu().numpy()

    def fuse(self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]) -> Fused:
        fused = self.model.score(emb, _batch(clips, times))
        return Fused(
            fused.scores[0].float().cpu().numpy(),
            fused.clip_weights[0].float().cpu().numpy(),
            fused.clip_scores[0].float().cpu().numpy(),
        )

    def scores(
        self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]
    ) -> np.ndarray:
        return self.model.score_only(emb, _batch(clips, times))[0].float().cpu().numpy()

    def evidence(
        self, emb: Any, clips: Sequence[np.ndarray], times: Sequence[np.ndarray]
    ) -> np.ndarray:
        return self.model.locate(emb, _batch(clips, times))[0].cpu().numpy()


def _batch(clips: Sequence[np.ndarray], times: Sequence[np.ndarray]) -> ClipBatch:
    from collap_model.outputs import ClipBatch

    return ClipBatch.of_arrays(clips, times)
