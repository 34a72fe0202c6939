"""CoLLAP fusion: text-conditioned temporal attention over a song's clip sequence.

Notation (one text i, one song j):
    T ∈ R^{L×D}  projected token embeddings of the text (padding masked)
    C ∈ R^{N×D}  L2-normalised clip embeddings in time order (padding masked)
    τ ∈ R^{N×2}  clip start/end seconds; P = TimeEncoding(τ) ∈ R^{N×d}

Song embedding (text independent, first-stage ANN vector):
    e_n = v^T tanh(W_e (c_n + W_pe P_n))              attention logits over clips
    a   = softmax_n(e)                                 clip weights
    s   = normalize(W_s Σ_n a_n c_n)

Fusion score f(text, song):
    u_l      = normalize(W_u T_l)                      token direction in clip space
    S_{l,n}  = u_l · c_n                               token-clip cosine similarity
    q_l      = W_q T_l,  k_n = W_k c_n + W_p P_n       attention with clip order/time
    A_{l,n}  = softmax_n(q_l · k_n / √d)               where in time token l looks
    β_l      = softmax_l(w_β · T_l)                    how much token l matters
    f        = Σ_l β_l Σ_n A_{l,n} S_{l,n}
First-stage approximation (what an ANN index can search): the attention depends on the text,
so no single stored vector gives f exactly. Two steps make it a dot product:
    1. one attention for all tokens, A_{l,n} ≈ a_n(z̄) = softmax_n(z̄ · k_n / √d), z̄ = Σ_l β_l q_l:
       f ≈ ū · Σ_n a_n(z̄) c_n,   ū = Σ_l β_l u_l
    2. z̄ replaced by the nearest of m prototypes z_1..z_m (k-means of z̄ over a text corpus,
       `fit_prototypes`): each track stores p_j = Σ_n a_n(z_j) c_n for every j (unnormalised,
       dot product), and a query searches p_j* with ū, j* = argmin_j |z̄ - z_j|.
A zero prototype gives flat attention, p = mean_n c_n: f_flat = ū · c̄, exact when attention is
flat, and what a model without fitted prototypes uses. Measured against exhaustive fusion
(benchmarks/query.py) the prototypes lift the first stage's recall well above the flat mean.
Explanations (where the text matches):
    clip weight  w_n = Σ_l β_l A_{l,n}                 (Σ_n w_n = 1)
    clip score   r_n = Σ_l β_l A_{l,n} S_{l,n} / w_n   (so f = Σ_n w_n r_n)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.audio_encoder import masked_softmax
from collap_model.config import ModelConfig
from collap_model.outputs import ClipBatch, FusionScores, TextEmbedding


class TimeEncoding(nn.Module):
    """Clip times (B, N, 2) -> (B, N, out_dim): sinusoids of absolute and relative time.

    Absolute: sin/cos(2π t / p_k) for periods p_k geometric from 2 s to `max_period_seconds`,
    t the clip centre. Relative: sin/cos(π k t / duration), k = 1..F/2, for "near the end".
    """

    omega: Tensor
    rel_k: Tensor

    def __init__(self, frequencies: int, max_period: float, out_dim: int) -> None:
        super().__init__()
        periods = torch.exp(torch.linspace(math.log(2.0), math.log(max_period), frequencies))
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)  # (F,)
        self.register_buffer(
            "rel_k",
            torch.arange(1, frequencies // 2 + 2, dtype=torch.float32) * math.pi,
            persistent=False,
        )
        self.proj = nn.Linear(2 * frequencies + 2 * self.rel_k.numel(), out_dim)

    def forward(self, times: Tensor, mask: Tensor) -> Tensor:
        centre = times.mean(dim=-1)  # (B, N)
        duration = (times[..., 1] * mask).amax(dim=1, keepdim=True).clamp(min=1e-3)  # (B, 1)
        absolute = centre[..., None] * self.omega  # (B, N, F)
        relative = (centre / duration)[..., None] * self.rel_k  # (B, N, F/2 + 1)
        feats = torch.cat([absolute.sin(), absolute.cos(), relative.sin(), relative.cos()], dim=-1)
        return self.proj(feats) * mask[..., None]  # (B, N, out_dim)


class SongPooling(nn.Module):
    """Clips (B, N, D) -> song embedding (B, D), attention pooling with time (see module doc)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.embed_dim, config.fusion
        self.time = TimeEncoding(f.time_frequencies, f.max_period_seconds, d)
        self.w_e = nn.Linear(d, f.attn_dim)
        self.v = nn.Linear(f.attn_dim, 1, bias=False)
        self.w_s = nn.Linear(d, d)

    def forward(self, clips: ClipBatch) -> Tensor:
        h = clips.clips + self.time(clips.clip_times, clips.mask)  # (B, N, D)
        a = masked_softmax(self.v(torch.tanh(self.w_e(h))).squeeze(-1), clips.mask, dim=1)  # (B, N)
        pooled = torch.einsum("bn,bnd->bd", a, clips.clips)
        return F.normalize(self.w_s(pooled), dim=-1)  # (B, D)


class TemporalFusion(nn.Module):
    """f(text, song) for every (text, song) pair, with per-clip weights and scores."""

    prototypes: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.embed_dim, config.fusion
        self.attn_dim = f.attn_dim
        self.w_u = nn.Linear(d, d)
        self.w_q = nn.Linear(d, f.attn_dim)
        self.w_k = nn.Linear(d, f.attn_dim)
        self.time = TimeEncoding(f.time_frequencies, f.max_period_seconds, f.attn_dim)
        self.w_beta = nn.Linear(d, 1)
        # zeros (flat attention) until `fit_prototypes`; saved with the weights
        self.register_buffer("prototypes", torch.zeros(f.first_stage_prototypes, f.attn_dim))

    def token_weights(self, text: TextEmbedding) -> Tensor:
        """Texts -> β (B, L): how much each token matters."""
        return masked_softmax(self.w_beta(text.tokens).squeeze(-1), text.mask, dim=1)

    def first_stage_query(self, text: TextEmbedding) -> tuple[Tensor, Tensor]:
        """Texts -> ū (B, D) and the index of the nearest prototype (B,) (module docstring)."""
        beta = self.token_weights(text)
        u_bar = torch.einsum("bl,bld->bd", beta, F.normalize(self.w_u(text.tokens), dim=-1))
        z_bar = torch.einsum("bl,ble->be", beta, self.w_q(text.tokens))
        return u_bar, torch.cdist(z_bar, self.prototypes).argmin(dim=1)

    def attention_query(self, text: TextEmbedding) -> Tensor:
        """Texts -> z̄ (B, d): the β-weighted mean of the tokens' attention queries."""
        return torch.einsum("bl,ble->be", self.token_weights(text), self.w_q(text.tokens))

    def first_stage_vectors(self, clips: ClipBatch) -> Tensor:
        """Songs -> (B, m, D): the clips pooled by each prototype's attention (p_j above)."""
        k = self.w_k(clips.clips) + self.time(clips.clip_times, clips.mask)  # (B, N, d)
        logits = torch.einsum("me,bne->bmn", self.prototypes, k) / math.sqrt(self.attn_dim)
        attn = masked_softmax(logits, clips.mask[:, None, :], dim=-1)  # (B, m, N)
        return torch.einsum("bmn,bnd->bmd", attn, clips.clips)

    def forward(self, text: TextEmbedding, clips: ClipBatch) -> FusionScores:
        c_mask = clips.mask  # (Ba, N)
        u = F.normalize(self.w_u(text.tokens), dim=-1)  # (Bt, L, D)
        q = self.w_q(text.tokens)  # (Bt, L, d)
        k = self.w_k(clips.clips) + self.time(clips.clip_times, c_mask)  # (Ba, N, d)
        beta = self.token_weights(text)  # (Bt, L)
        sim = torch.einsum("ild,jnd->ijln", u, clips.clips)  # (Bt, Ba, L, N)
        logits = torch.einsum("ile,jne->ijln", q, k) / math.sqrt(self.attn_dim)  # (Bt, Ba, L, N)
        attn = masked_softmax(logits, c_mask[None, :, None, :], dim=-1)  # (Bt, Ba, L, N)
        weighted = attn * beta[:, None, :, None]  # β_l A_{l,n}
        clip_weights = weighted.sum(dim=2)  # (Bt, Ba, N)
        contrib = (weighted * sim).sum(dim=2)  # (Bt, Ba, N): w_n r_n
        scores = contrib.sum(dim=-1)  # (Bt, Ba)
        clip_scores = torch.where(
            c_mask[None], contrib / clip_weights.clamp(min=1e-12), torch.zeros_like(contrib)
        )
        return FusionScores(scores, clip_weights, clip_scores, c_mask)


def fit_prototypes(z: Tensor, m: int, seed: int = 0) -> Tensor:
    """k-means (k = m, seeded, Lloyd's) of texts' z̄ (B, d) -> prototypes (m, d). Fit on texts
    like the ones users search with (captions and short queries)."""
    z = z.float()
    if z.shape[0] < m:
        raise ValueError(f"fitting {m} prototypes needs at least {m} texts, got {z.shape[0]}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centres = z[torch.randperm(z.shape[0], generator=gen)[:m].to(z.device)].clone()
    for _ in range(100):
        assign = torch.cdist(z, centres).argmin(dim=1)
        moved = torch.stack(
            [z[assign == j].mean(dim=0) if (assign == j).any() else centres[j] for j in range(m)]
        )
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres
