"""CoLLAP: Contrastive Long-form Language-Audio Pretraining (arXiv 2410.02271), our implementation.

The public contract is imported lazily so that `import collap_model` (and the CLIs' --help)
stays free of torch:
    load_model(name_or_path=None, device="auto") -> CoLLAP
    model.encode_audio(waveform, sample_rate) -> AudioEmbedding(clips, song, clip_times)
    model.encode_text(texts) -> TextEmbedding(tokens, mask, sentence)
    model.score(text_emb, audio_embs) -> FusionScores(scores, clip_weights, clip_scores, mask)
    model.fingerprint, model.sample_rate
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collap_model.checkpoint import load_model, save_checkpoint
    from collap_model.model import CoLLAP
    from collap_model.outputs import AudioEmbedding, ClipBatch, FusionScores, TextEmbedding

__all__ = [
    "AudioEmbedding",
    "ClipBatch",
    "CoLLAP",
    "FusionScores",
    "TextEmbedding",
    "load_model",
    "save_checkpoint",
]

_WHERE = {
    "load_model": "collap_model.checkpoint",
    "save_checkpoint": "collap_model.checkpoint",
    "CoLLAP": "collap_model.model",
    "AudioEmbedding": "collap_model.outputs",
    "ClipBatch": "collap_model.outputs",
    "FusionScores": "collap_model.outputs",
    "TextEmbedding": "collap_model.outputs",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'collap_model' has no attribute {name!r}")
