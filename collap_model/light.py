"""The text side of a search without torch: what a cold `indexer query` runs.

Importing torch alone took 1.4-2.2 s on the 2-core machine this project measures on, most of a
cold `indexer query` (no server running): its budget is 2 s. A search needs only the text side
of the model: the frozen BERT backbone, the token projection and the tag bridge
(collap_model/text_encoder.py), and the fusion's text vectors, scores, per-clip explanation and
WhereHead (collap_model/fusion.py), all small dense algebra. `LightModel` runs exactly those
in NumPy from the same weight files (the checkpoint's safetensors and the backbone's), and the
tests hold it to the torch model (tests/collap_model/test_light.py). Audio (a similar-to-file
search of an unindexed file) loads the torch model on first use.

It runs a model whose checkpoint records its fingerprint (every shipped model and every saved
checkpoint), whose text backbone is a frozen BERT that collap_model/bert_files.py reads; for
anything else `load_light` answers None and the caller loads the torch model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collap_model.bert_files import WEIGHTS, BertConfig, Tokenizer, supported
from collap_model.config import LOCATOR_HEADS, ModelConfig, TextPooling
from collap_model.paths import resolve_local_dir
from collap_model.registry import WEIGHTS_FILE, locate_model
from collap_model.scoring import Fused
from collap_model.text_windows import check_texts, special_tokens, window_owners, window_spans

if TYPE_CHECKING:
    from collap_model.model import CoLLAP
    from collap_model.outputs import AudioEmbedding

Array = np.ndarray
_SQRT_HALF = np.float32(1 / math.sqrt(2))


@dataclass(frozen=True)
class LightText:
    """One text: projected tokens T (L, D), its tag-bridge vector b (K,) or None, and, for a
    locator with fusion.locator_sentence, its sentence embedding s (D,), normalised."""

    tokens: Array
    tags: Array | None
    sentence: Array | None = None


def load_light(name_or_path: str | Path | None = None, device: str = "auto") -> LightModel | None:
    """The torch-free text side of a model (None where it cannot run it: see the module doc);
    `device` is where the torch model goes if audio is asked for."""
    source = locate_model(name_or_path)
    config = source.config
    if source.directory is None or source.fingerprint is None:
        return None
    if not config.text.freeze_backbone:
        return None
    backbone = resolve_local_dir(config.text.backbone, "text backbone")
    if not supported(backbone):
        return None
    return LightModel(name_or_path, source.directory / WEIGHTS_FILE, backbone, config,
                      source.fingerprint, device)  # fmt: skip


class LightModel:
    """NumPy inference of CoLLAP's text side; a collap_model.scoring.TextScorer."""

    def __init__(
        self,
        name_or_path: str | Path | None,
        weights: Path,
        backbone: Path,
        config: ModelConfig,
        fingerprint: str,
        device: str,
    ) -> None:
        from safetensors.numpy import load_file

        self.config = config
        self.fingerprint = fingerprint
        self._source, self._device = name_or_path, device
        self._full: CoLLAP | None = None
        owned = load_file(str(weights))
        self.w = {k: v.astype(np.float32, copy=False) for k, v in owned.items()
                  if k.startswith(("text_encoder.", "fusion."))}  # fmt: skip
        self.bert = _Bert(backbone)
        self.tokenizer = Tokenizer(backbone, self.bert.config.pad_token_id)
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        self.content = config.text.window_tokens - len(self.prefix) - len(self.suffix)
        f = config.fusion
        periods = np.exp(np.linspace(math.log(2.0), math.log(f.max_period_seconds),
                                     f.time_frequencies, dtype=np.float32))  # fmt: skip
        self.omega = (2 * math.pi / periods).astype(np.float32)
        self.rel_k = (np.arange(1, f.time_frequencies // 2 + 2, dtype=np.float32) * math.pi).astype(
            np.float32
        )
        self.tag_dims = config.tag_dims
        self.has_where = "fusion.where.w_q.weight" in self.w

    # ---- the text -------------------------------------------------------------------------------
    def encode(self, text: str) -> LightText:
        """As CoLLAP.encode_text for one text (ValueError for one it refuses)."""
        t = self.config.text
        check_texts([text], t.max_words)
        seq: list[int] = self.tokenizer([text], add_special_tokens=False)["input_ids"][0]  # type: ignore[assignment]
        spans = window_spans(len(seq), self.content, min(t.window_stride, self.content))
        lead = len(self.prefix)
        parts, last = [], None
        for (s, e), (lo, hi) in zip(spans, window_owners(spans), strict=True):
            states = self.bert(self.prefix + seq[s:e] + self.suffix)  # (W, H)
            parts.append(states[lead + lo - s : lead + hi - s])
            last = states[-1]
        hidden = np.concatenate(parts)  # (L, H)
        assert last is not None  # a text check_texts accepts has a window
        pooled = hidden.mean(axis=0) if t.pooling is TextPooling.MEAN else last
        tokens = _linear(self._norm("text_encoder.token_proj.0", hidden), self.w,
                         "text_encoder.token_proj.1")  # fmt: skip
        sentence = None  # only a locator that reads it needs it
        if self.config.fusion.locator_sentence:
            sentence = _normalize(
                _linear(self._norm("text_encoder.sentence_proj.0", pooled), self.w,
                        "text_encoder.sentence_proj.1")
            )  # fmt: skip
        return LightText(tokens, self._bridge(pooled), sentence)

    def _norm(self, name: str, x: Array) -> Array:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], 1e-5)

    def _bridge(self, pooled: Array) -> Array | None:
        prompts = self.w.get("text_encoder.tag_prompts")
        if prompts is None:
            return None
        g = prompts @ _normalize(pooled)  # (K,)
        z = (g - g.mean()) / max(float(g.std(ddof=1)), 1e-6)
        return _normalize(z)

    def text_vectors(self, emb: LightText) -> tuple[Array, Array]:
        """v (m, D) and π̄ (m,), as TemporalFusion.text_vectors."""
        w, T = self.w, emb.tokens
        beta = _softmax(_linear(T, w, "fusion.w_beta")[:, 0])  # (L,)
        u = _normalize(_linear(T, w, "fusion.w_u"))  # (L, D)
        pi = _softmax(_linear(T, w, "fusion.w_pi")) * beta[:, None]  # (L, m)
        v = pi.T @ u  # (m, D)
        pi_bar = pi.sum(axis=0)
        if self.tag_dims and emb.tags is not None:
            k = self.tag_dims
            v = float(w["fusion.learned_gain"]) * v
            v[:, -k:] += float(w["fusion.bridge_gain"]) * pi_bar[:, None] * emb.tags[None, :]
        return v, pi_bar

    def query_vector(self, emb: LightText) -> Array:
        return self.text_vectors(emb)[0].reshape(-1)

    # ---- songs ----------------------------------------------------------------------------------
    def _time_features(self, times: Array) -> Array:
        centre = times.mean(axis=-1)  # (N,)
        duration = max(float(times[:, 1].max()), 1e-3)
        absolute = centre[:, None] * self.omega
        relative = (centre / duration)[:, None] * self.rel_k
        return np.concatenate(
            [np.sin(absolute), np.cos(absolute), np.sin(relative), np.cos(relative)], axis=-1
        ).astype(np.float32)

    def pattern_attention(self, clips: Array, times: Array) -> Array:
        """a (m, N), as TemporalFusion.pattern_attention for one song."""
        w = self.w
        z = w["fusion.patterns"] / np.float32(math.sqrt(self.config.fusion.attn_dim))  # (m, d)
        content = (z @ w["fusion.w_k.weight"]) @ clips.T + (z @ w["fusion.w_k.bias"])[:, None]
        feats = self._time_features(times)
        timing = (z @ w["fusion.time.proj.weight"]) @ feats.T + (z @ w["fusion.time.proj.bias"])[
            :, None
        ]
        return _softmax(content + timing)

    def _each(self, clips: Sequence[Array], times: Sequence[Array]) -> Any:
        for c, t in zip(clips, times, strict=True):
            yield np.asarray(c, np.float32), np.asarray(t, np.float32)

    def scores(self, emb: LightText, clips: Sequence[Array], times: Sequence[Array]) -> Array:
        v, _ = self.text_vectors(emb)
        return np.array(
            [
                float((v * (self.pattern_attention(c, t) @ c)).sum())
                for c, t in self._each(clips, times)
            ],
            dtype=np.float32,
        )

    def fuse(self, emb: LightText, clips: Sequence[Array], times: Sequence[Array]) -> Fused:
        v, pi_bar = self.text_vectors(emb)
        n = max(c.shape[0] for c in clips)
        scores = np.zeros(len(clips), np.float32)
        weights = np.zeros((len(clips), n), np.float32)
        clip_scores = np.zeros((len(clips), n), np.float32)
        for i, (c, t) in enumerate(self._each(clips, times)):
            attn = self.pattern_attention(c, t)  # (m, N)
            scores[i] = (v * (attn @ c)).sum()
            wn = pi_bar @ attn  # (N,)
            contrib = ((v @ c.T) * attn).sum(axis=0)
            weights[i, : c.shape[0]] = wn
            clip_scores[i, : c.shape[0]] = contrib / np.maximum(wn, 1e-12)
        return Fused(scores, weights, clip_scores)

    def evidence(self, emb: LightText, clips: Sequence[Array], times: Sequence[Array]) -> Array:
        """As CoLLAP.locate: the WhereHead's evidence, or without one the clip scores."""
        n = max(c.shape[0] for c in clips)
        out = np.full((len(clips), n), -np.inf, np.float32)
        if not self.has_where:
            fused = self.fuse(emb, clips, times)
            for i, c in enumerate(clips):
                out[i, : c.shape[0]] = fused.clip_scores[i, : c.shape[0]]
            return out
        w, T = self.w, emb.tokens
        if not T.shape[0]:  # a text the tokenizer reads as nothing asks nothing (as torch's)
            for i, c in enumerate(clips):
                out[i, : c.shape[0]] = 0.0
            return out
        words = _softmax(_linear(T, w, "fusion.where.w_word")[:, 0])
        query = words @ _linear(T, w, "fusion.where.w_q")  # (d,)
        if self.config.fusion.locator_sentence:
            assert emb.sentence is not None  # `encode` gives every text one
            query = query + _linear(emb.sentence, w, "fusion.where.w_sentence")
        scale = np.float32(math.sqrt(self.config.fusion.attn_dim))
        for i, (c, t) in enumerate(self._each(clips, times)):
            before = np.concatenate([c[:1], c[:-1]])  # the first clip is its own neighbour
            after = np.concatenate([c[1:], c[-1:]])  # and the last
            keys = _linear(np.concatenate([c, c - before, after - c], axis=1), w,
                           "fusion.where.w_c")  # fmt: skip
            keys = keys + _linear(self._time_features(t), w, "fusion.where.time.proj")
            out[i, : c.shape[0]] = keys @ query / scale
            if self.config.fusion.locator_layers:
                out[i, : c.shape[0]] += self._in_context(query, T, keys)
        return out

    def _in_context(self, query: Array, tokens: Array, keys: Array) -> Array:
        """The WhereHead's context term (N,) for one text and one song: its pre-norm
        transformer decoder layers (self-attention over the clips, cross-attention to the
        tokens, a ReLU feed-forward), as torch.nn.TransformerDecoderLayer computes them."""
        w, p = self.w, "fusion.where."
        x = keys + _linear(query, w, p + "w_x")
        memory = _linear(tokens, w, p + "w_tokens")
        for i in range(self.config.fusion.locator_layers):
            q = f"{p}context.layers.{i}."
            h = self._norm(q + "norm1", x)
            x = x + self._attention(q + "self_attn", h, h)
            x = x + self._attention(q + "multihead_attn", self._norm(q + "norm2", x), memory)
            h = np.maximum(_linear(self._norm(q + "norm3", x), w, q + "linear1"), 0)
            x = x + _linear(h, w, q + "linear2")
        return _linear(x, w, p + "w_o")[:, 0]

    def _attention(self, name: str, queries: Array, memory: Array) -> Array:
        """torch.nn.MultiheadAttention (LOCATOR_HEADS heads, no mask) of queries (Q, d)
        over memory (K, d)."""
        weight, bias = self.w[f"{name}.in_proj_weight"], self.w[f"{name}.in_proj_bias"]
        d = weight.shape[1]
        heads, width = LOCATOR_HEADS, d // LOCATOR_HEADS
        q, k, v = (
            (x @ weight[j * d : (j + 1) * d].T + bias[j * d : (j + 1) * d])
            .reshape(x.shape[0], heads, width)
            .transpose(1, 0, 2)
            for j, x in enumerate((queries, memory, memory))
        )
        a = _softmax(q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(width)))  # (H, Q, K)
        out = (a @ v).transpose(1, 0, 2).reshape(queries.shape[0], d)
        return _linear(out, self.w, f"{name}.out_proj")

    # ---- audio: the torch model ---------------------------------------------------------------
    def full(self) -> CoLLAP:
        """The torch model, loaded on first use."""
        if self._full is None:
            from collap_model.checkpoint import load_model
            from collap_model.text_encoder import TextBackend

            self._full = load_model(self._source, device=self._device,
                                    text_backend=TextBackend.AUTO)  # fmt: skip
        return self._full

    @property
    def sample_rate(self) -> int:
        return self.config.frontend.sample_rate

    def encode_audio(self, wave: Any, sample_rate: int) -> AudioEmbedding:
        return self.full().encode_audio(wave, sample_rate)


class _Bert:
    """A frozen BERT's forward in NumPy (float32): one window of token ids -> states (W, H), as
    collap_model/bert.py's BertModel gives them."""

    def __init__(self, directory: Path) -> None:
        from safetensors.numpy import load_file

        self.config = BertConfig.read(directory)
        state = load_file(str(directory / WEIGHTS))
        self.w = {
            k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in state.items()
        }
        self.eps = self.config.layer_norm_eps

    def _norm(self, name: str, x: Array) -> Array:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def __call__(self, ids: list[int]) -> Array:
        w, c = self.w, self.config
        e = "embeddings."
        x = (
            w[e + "word_embeddings.weight"][ids]
            + w[e + "position_embeddings.weight"][: len(ids)]
            + w[e + "token_type_embeddings.weight"][0]
        )
        x = self._norm(e + "LayerNorm", x)
        heads = c.num_attention_heads
        d = c.hidden_size // heads
        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                _linear(x, w, p + f"attention.self.{n}")
                .reshape(len(ids), heads, d)
                .transpose(1, 0, 2)
                for n in ("query", "key", "value")
            )
            att = _softmax(q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d)))  # (heads, W, W)
            a = (att @ v).transpose(1, 0, 2).reshape(len(ids), c.hidden_size)
            a = self._norm(
                p + "attention.output.LayerNorm", _linear(a, w, p + "attention.output.dense") + x
            )
            h = _gelu(_linear(a, w, p + "intermediate.dense"))
            x = self._norm(p + "output.LayerNorm", _linear(h, w, p + "output.dense") + a)
        return x


def _linear(x: Array, w: dict[str, Array], name: str) -> Array:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.float32(eps)) * weight + bias


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _normalize(x: Array) -> Array:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _gelu(x: Array) -> Array:
    """GELU with erf, as torch's default: 0.5 x (1 + erf(x / √2))."""
    return 0.5 * x * (1 + _erf(x * _SQRT_HALF))


def _erf(x: Array) -> Array:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26); NumPy has none and SciPy's import costs more
    than the whole query."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1 / (1 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return (s * (1 - poly * np.exp(-a * a))).astype(np.float32)
