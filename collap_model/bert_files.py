"""A BERT directory's files without torch: its config, whether collap_model/bert.py (plain torch)
and collap_model/light.py (NumPy) run it, and its WordPiece tokenizer (the `tokenizers`
library)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a transformers BERT config.json this encoder reads."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int

    @classmethod
    def read(cls, directory: Path) -> BertConfig:
        raw = json.loads((directory / "config.json").read_text())
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k != "pad_token_id"},
                   pad_token_id=int(raw.get("pad_token_id", 0)))  # fmt: skip


def supported(directory: Path) -> bool:
    """Whether `directory` holds a model this module runs: an absolute-position BERT with GELU,
    its safetensors weights and a tokenizer.json."""
    try:
        raw = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        raw.get("model_type") == "bert"
        and raw.get("position_embedding_type", "absolute") == "absolute"
        and raw.get("hidden_act") == "gelu"
        and (directory / WEIGHTS).is_file()
        and (directory / TOKENIZER).is_file()
    )


class Tokenizer:
    """tokenizer.json through `tokenizers`, called as TextEncoder calls a transformers one:
    `tokenizer(texts, add_special_tokens=...)["input_ids"]`."""

    def __init__(self, directory: Path, pad_token_id: int) -> None:
        from tokenizers import Tokenizer as Fast

        self.fast = Fast.from_file(str(directory / TOKENIZER))
        # the file may pin a length and padding (all-MiniLM-L6-v2's: 128); windows bound lengths
        self.fast.no_truncation()
        self.fast.no_padding()
        self.pad_token_id = pad_token_id
        self.model_max_length = 1 << 30

    def __call__(
        self, texts: str | list[str], add_special_tokens: bool = True
    ) -> dict[str, list[int] | list[list[int]]]:
        if isinstance(texts, str):
            return {"input_ids": self.fast.encode(texts, add_special_tokens=add_special_tokens).ids}
        out = self.fast.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in out]}
