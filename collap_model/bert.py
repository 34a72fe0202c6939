"""A BERT encoder in plain torch and its WordPiece tokenizer (the `tokenizers` library): the
text backbone of a search without importing transformers, whose import was the largest
part of a cold `indexer query` (measured with -X importtime: about 10 s of 15 s under load).

Inference only (no dropout): reads a transformers BERT directory (config.json, model.safetensors,
tokenizer.json) and answers the calls TextEncoder makes of a transformers model and tokenizer.
Its states match transformers' within float rounding (tests/collap_model/test_bert.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.bert_files import WEIGHTS, BertConfig, Tokenizer, supported

__all__ = ["BertConfig", "BertModel", "Tokenizer", "supported"]


@dataclass(frozen=True)
class BertOutput:
    last_hidden_state: Tensor  # (B, L, H)


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])  # (B, L, H), one segment


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        b, n, h = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)  # (B, heads, L, d)

        out = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=keep
        )  # (B, heads, L, d)
        return out.transpose(1, 2).reshape(b, n, h)


class Dense(nn.Module):
    """Linear, residual, LayerNorm (transformers' BertSelfOutput and BertOutput)."""

    def __init__(self, c: BertConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(c)  # transformers' parameter names: attention.self.*
        self.output = Dense(c, c.hidden_size)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        return self.output(self.self(x, keep), x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Dense(c, c.intermediate_size)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        a = self.attention(x, keep)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class BertModel(nn.Module):
    """input_ids (B, L), attention_mask (B, L) -> BertOutput(last_hidden_state (B, L, H)).
    Parameter names are transformers' (its pooler is left out: nothing reads it)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    @classmethod
    def load(cls, directory: Path) -> BertModel:
        from safetensors.torch import load_file

        # built on the CPU, not the meta device: initialising meta tensors imports
        # torch._dynamo, seconds of a cold start
        model = cls(BertConfig.read(directory))
        state = load_file(str(directory / WEIGHTS))
        # some exports prefix every name with the architecture ("bert.")
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        wanted = set(model.state_dict())
        model.load_state_dict({k: v for k, v in state.items() if k in wanted})
        return model.eval()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> BertOutput:
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L): keys a query may see
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return BertOutput(x)
