"""Text encoder: a transformers LM from a local directory, with windows for long text.

Encoder LMs (BERT/MiniLM/RoBERTa) pool by the mean of the tokens; decoder LMs (GPT-2 and
kin) by the last token. A text longer than one window is split into overlapping windows of
`window_tokens` (specials included) every `window_stride` tokens; each token's state comes from
the window in which it sits farthest from an edge, so the joined sequence covers every token
once and nothing is cut up to `max_words` words (longer texts are refused, not truncated).

Tag bridge (models whose audio encoder has a tagger): a path that needs no training and works
for words training never saw. Each tag of the tagger is embedded once by the backbone through
prompt templates ("{} music"), P ∈ R^{K×H} (rows normalised, templates averaged, stored with the
weights); a text's pooled state h gives
    g = P ĥ                      its cosine with every tag
    tags = normalize((g - mean(g)) / std(g))    z-scored over the K tags
which the fusion matches against the clips' z-scored tags (fusion.py). Z-scoring over the tags
keeps what is specific to the text: every prompt says "music", so raw cosines all share a level.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.config import ConfigError, ModelConfig, TextPooling
from collap_model.outputs import TextEmbedding
from collap_model.paths import quiet_transformers, resolve_local_dir
from collap_model.text_windows import (
    TextInputError,
    check_texts,
    special_tokens,
    window_owners,
    window_spans,
)

# windows per backbone call: bounds activation memory for very long texts
_WINDOW_BATCH = 32


class TextBackend(StrEnum):
    """Which implementation runs the pretrained backbone (the weights are the same)."""

    TRANSFORMERS = "transformers"  # transformers' AutoModel and AutoTokenizer: any backbone
    # collap_model/bert.py: plain torch and `tokenizers`, a frozen BERT only; a search's cold
    # start without transformers' import (seconds)
    NATIVE = "native"
    AUTO = "auto"  # native where it can run the backbone, else transformers


class TextEncoder(nn.Module):
    """texts -> TextEmbedding: tokens (B, L, D), mask (B, L), sentence (B, D) normalised."""

    def __init__(
        self, config: ModelConfig, backend: TextBackend = TextBackend.TRANSFORMERS
    ) -> None:
        super().__init__()
        t = config.text
        self.config = t
        self.directory: Path = resolve_local_dir(t.backbone, "text backbone")
        self.backend = resolve_backend(backend, self.directory, t.freeze_backbone)
        self.tokenizer: Any
        self.backbone: Any
        match self.backend:
            case TextBackend.NATIVE:
                from collap_model import bert

                self.backbone = bert.BertModel.load(self.directory)
                self.tokenizer = bert.Tokenizer(self.directory, self.backbone.config.pad_token_id)
            case _:
                from transformers import AutoModel, AutoTokenizer

                quiet_transformers()
                self.tokenizer = AutoTokenizer.from_pretrained(
                    self.directory, local_files_only=True
                )
                # windows keep every backbone call within its positions; no need to warn
                self.tokenizer.model_max_length = 1 << 30
                self.backbone = AutoModel.from_pretrained(self.directory, local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        max_positions = _max_positions(self.backbone.config)
        if max_positions is not None and t.window_tokens > max_positions:
            raise ConfigError(
                f"text.window_tokens={t.window_tokens} exceeds the backbone's "
                f"{max_positions} positions"
            )
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)
        self.content = t.window_tokens - self.n_special  # content tokens per window
        self.frozen = t.freeze_backbone
        if self.frozen:
            self.backbone.requires_grad_(False)
        hidden = int(self.backbone.config.hidden_size)
        self.token_proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, config.embed_dim))
        self.sentence_proj = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, config.embed_dim)
        )
        self.tag_prompts: Tensor | None
        self.prompt_texts: list[list[str]] = []
        tagger = config.audio.tagger
        self.register_buffer("tag_prompts", None)
        if tagger is not None:
            from collap_model.tagger.labels import LABELS, phrase

            labels = [label for m in tagger.models for label in LABELS[m]]
            self.prompt_texts = [
                [t.format(phrase(label)) for t in tagger.prompt_templates] for label in labels
            ]
            # filled by `embed_tag_prompts` for a new model, else by the checkpoint
            self.register_buffer("tag_prompts", torch.zeros(len(labels), hidden))

    @torch.inference_mode()
    def embed_tag_prompts(self) -> None:
        """P: each tag's prompts through the backbone, normalised and averaged (see the doc)."""
        if self.tag_prompts is None:
            return
        flat = [p for prompts in self.prompt_texts for p in prompts]
        _, pooled = self.hidden_states(flat)
        per = len(self.prompt_texts[0])
        states = F.normalize(torch.stack(pooled).float(), dim=-1).view(-1, per, pooled[0].shape[0])
        self.tag_prompts.copy_(F.normalize(states.mean(dim=1), dim=-1).to(self.tag_prompts))

    def bridge(self, pooled: Tensor) -> Tensor | None:
        """Pooled backbone states (B, H) -> the texts' tag vectors (B, K), or None."""
        if self.tag_prompts is None:
            return None
        g = F.normalize(pooled.float(), dim=-1) @ self.tag_prompts.float().T  # (B, K)
        z = (g - g.mean(dim=1, keepdim=True)) / g.std(dim=1, keepdim=True).clamp(min=1e-6)
        return F.normalize(z, dim=-1)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen backbone never runs dropout
        return self

    def backbone_identity(self) -> str:
        """Cheap identity of the pretrained backbone: its config and weight files' sizes."""
        h = hashlib.sha256((self.directory / "config.json").read_bytes())
        for f in sorted(self.directory.glob("*.safetensors")) + sorted(
            self.directory.glob("*.bin")
        ):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        return h.hexdigest()[:16]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        check_texts(texts, self.config.max_words)
        ids: list[list[int]] = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return ids

    def hidden_states(
        self, texts: list[str], fast: bool = False
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per text: stitched backbone states (L_i, H) of its content tokens, and pooled (H,);
        `fast`: the backbone in `fast_precision`."""
        device = next(self.token_proj.parameters()).device
        ids = self.tokenize(texts)
        windows: list[list[int]] = []
        plan: list[list[tuple[int, int, int]]] = []  # per text: (window index, own lo, own hi)
        spans_of: list[list[tuple[int, int]]] = []
        for seq in ids:
            spans = window_spans(
                len(seq), self.content, min(self.config.window_stride, self.content)
            )
            entries = []
            for (s, e), (lo, hi) in zip(spans, window_owners(spans), strict=True):
                entries.append((len(windows), lo, hi))
                windows.append(self.prefix + seq[s:e] + self.suffix)
            plan.append(entries)
            spans_of.append(spans)
        states = self._run_windows(windows, device, fast)  # list of (W_len, H)
        lead = len(self.prefix)
        tokens: list[Tensor] = []
        pooled: list[Tensor] = []
        for entries, spans in zip(plan, spans_of, strict=True):
            parts = []
            for (w, lo, hi), (s, _) in zip(entries, spans, strict=True):
                parts.append(states[w][lead + lo - s : lead + hi - s])
            seq_states = torch.cat(parts, dim=0)  # (L_i, H)
            tokens.append(seq_states)
            match self.config.pooling:
                case TextPooling.MEAN:
                    pooled.append(seq_states.mean(dim=0))
                case TextPooling.LAST:
                    pooled.append(states[entries[-1][0]][-1])
        return tokens, pooled

    def fast_precision(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        """The backbone's precision for `fast` calls (`CoLLAP.encode_text`, what a search runs):
        on a CPU that multiplies bfloat16 natively (AVX512-BF16, AMX), its matmuls run in
        bfloat16, as they do on CUDA under CoLLAP's autocast: a 19-token query took 9.2
        instead of 12.5 ms on one core here, its token embeddings within cosine 0.9999 of
        float32. Elsewhere float32. Training and evaluation read the backbone in float32, so
        their caches and the recipe's weights do not depend on the CPU."""
        if device.type == "cpu" and native_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run_windows(
        self, windows: list[list[int]], device: torch.device, fast: bool
    ) -> list[Tensor]:
        pad = int(self.tokenizer.pad_token_id)
        out: list[Tensor] = []
        precision = self.fast_precision(device) if fast else contextlib.nullcontext()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen), precision:
            for i in range(0, len(windows), _WINDOW_BATCH):
                chunk = windows[i : i + _WINDOW_BATCH]
                width = max(len(w) for w in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                for j, w in enumerate(chunk):
                    input_ids[j, : len(w)] = torch.tensor(w)
                    attn[j, : len(w)] = 1
                hidden = self.backbone(
                    input_ids=input_ids.to(device), attention_mask=attn.to(device)
                ).last_hidden_state  # (W, width, H)
                out.extend(hidden[j, : len(w)].float() for j, w in enumerate(chunk))
        return out

    def forward(self, texts: list[str] | TextStates, fast: bool = False) -> TextEmbedding:
        """Texts, or their cached backbone states (a frozen backbone), -> TextEmbedding;
        `fast`: the backbone in `fast_precision` (inference)."""
        if isinstance(texts, TextStates):
            return self.project(texts.tokens, texts.pooled)
        if not texts:
            raise TextInputError("no texts given")
        return self.project(*self.hidden_states(texts, fast))

    def project(self, tokens: list[Tensor], pooled: list[Tensor]) -> TextEmbedding:
        """Backbone states (L_i, H) and pooled (H,) per text -> the joint space, padded."""
        longest = max(t.shape[0] for t in tokens)
        device = next(self.token_proj.parameters()).device
        padded = torch.zeros(len(tokens), longest, tokens[0].shape[1], device=device)
        mask = torch.zeros(len(tokens), longest, dtype=torch.bool, device=device)
        for i, t in enumerate(tokens):
            padded[i, : t.shape[0]] = t.to(device, torch.float32)
            mask[i, : t.shape[0]] = True
        projected = self.token_proj(padded) * mask[..., None]  # (B, L, D)
        stacked = torch.stack([p.to(device, torch.float32) for p in pooled])  # (B, H)
        return TextEmbedding(projected, mask, self.sentence_of(stacked), self.bridge(stacked))

    def sentence_of(self, pooled: Tensor) -> Tensor:
        """Pooled backbone states (B, H) -> sentence embeddings (B, D), normalised."""
        device = next(self.sentence_proj.parameters()).device
        return F.normalize(self.sentence_proj(pooled.to(device, torch.float32)), dim=-1)


@dataclass(frozen=True)
class TextStates:
    """Backbone outputs of a frozen text encoder, cached for training: per text (L_i, H), (H,)."""

    tokens: list[Tensor]
    pooled: list[Tensor]


def resolve_backend(backend: TextBackend, directory: Path, frozen: bool) -> TextBackend:
    """AUTO -> NATIVE where collap_model/bert.py runs the backbone (a frozen BERT: it has no
    dropout for training), else TRANSFORMERS; NATIVE where it cannot is a ConfigError."""
    from collap_model import bert

    runs = frozen and bert.supported(directory)
    match backend:
        case TextBackend.AUTO:
            return TextBackend.NATIVE if runs else TextBackend.TRANSFORMERS
        case TextBackend.NATIVE if not runs:
            raise ConfigError(
                f"the native text backend runs a frozen BERT with a tokenizer.json; {directory} "
                "is not one (use the transformers backend)"
            )
        case _:
            return backend


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (where it lacks it, bfloat16 is emulated and
    slower than float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _max_positions(hf_config: object) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(hf_config, name, None)
        if isinstance(value, int):
            return value
    return None
