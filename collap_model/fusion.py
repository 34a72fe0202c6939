"""CoLLAP fusion: text-conditioned temporal attention over a song's clip sequence.

Notation (one text i, one song j):
    T ∈ R^{L×D}  projected token embeddings of the text (padding masked)
    C ∈ R^{N×D}  L2-normalised clip embeddings in time order (padding masked)
    τ ∈ R^{N×2}  clip start/end seconds; P = TimeEncoding(τ) ∈ R^{N×d}

Song embedding (text independent, the ANN vector of similar tracks):
    e_n = v^T tanh(W_e (c_n + W_pe P_n))              attention logits over clips
    a   = softmax_n(e)                                 clip weights
    s   = normalize(W_s Σ_n a_n c_n)

Fusion score f(text, song). A song is read through m learned attention patterns (where in
time, and on which kind of clip, to look), and each token of the text chooses among them:
    k_n      = W_k c_n + W_p P_n                       clip keys: content and time
    a_{h,n}  = softmax_n(z_h · k_n / √d)               pattern h = 1..m (z_h learned)
    p_h      = Σ_n a_{h,n} c_n                         the song's clips pooled by pattern h
    u_l      = normalize(W_u T_l)                      token direction in clip space
    π_{l,h}  = softmax_h(W_π T_l)                      which patterns token l looks through
    β_l      = softmax_l(w_β · T_l)                    how much token l matters
    A_{l,n}  = Σ_h π_{l,h} a_{h,n}                     where in time token l looks
    f        = Σ_l β_l Σ_n A_{l,n} u_l · c_n
             = Σ_h v_h · p_h,   v_h = Σ_l β_l π_{l,h} u_l
With a tagger (config.tag_dims = K > 0), the clips' last K coordinates are z-scored tags and the
text carries its tag-bridge vector b (text_encoder.py); the bridge joins v through the same
pattern choice, with a learned gain γ, and the learned path weighted by α (1 in training,
chosen on held-out data afterwards, training/calibrate.py):
    v_h = α Σ_l β_l π_{l,h} u_l + γ π̄_h [0 ; b],   π̄_h = Σ_l β_l π_{l,h}
so a text's words reach the clips' tags before any training, and f keeps its form.
So f is exactly one dot product between a text vector v = [v_1 .. v_m] and a song vector
p = [p_1 .. p_m] (m·D each): the index stores p (`first_stage_vectors`), the text search's
first stage is an exact inner-product search with v (`first_stage_query`), and the re-rank
recomputes f from the clips in float32 with the per-clip explanation below.
Where a text happens (`WhereHead`, presets with fusion.locator): its own per-clip evidence,
read from the text token by token and from each clip with its change from its neighbours; it
explains (segments, `indexer locate`) and never enters f.
Explanations (where the text matches):
    clip weight  w_n = Σ_l β_l A_{l,n}                 (Σ_n w_n = 1)
    clip score   r_n = Σ_l β_l A_{l,n} u_l · c_n / w_n (so f = Σ_n w_n r_n)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.audio_encoder import masked_softmax
from collap_model.config import LOCATOR_HEADS, ModelConfig
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

    def features(self, times: Tensor, mask: Tensor) -> Tensor:
        """Clip times (B, N, 2) -> the sinusoids (B, N, 2F + 2(F/2 + 1)), before `proj`."""
        centre = times.mean(dim=-1)  # (B, N)
        duration = (times[..., 1] * mask).amax(dim=1, keepdim=True).clamp(min=1e-3)  # (B, 1)
        absolute = centre[..., None] * self.omega  # (B, N, F)
        relative = (centre / duration)[..., None] * self.rel_k  # (B, N, F/2 + 1)
        return torch.cat([absolute.sin(), absolute.cos(), relative.sin(), relative.cos()], dim=-1)

    def forward(self, times: Tensor, mask: Tensor) -> Tensor:
        return self.proj(self.features(times, mask)) * mask[..., None]  # (B, N, out_dim)


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

    learned_gain: Tensor  # α, a buffer of presets with a tagger

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.embed_dim, config.fusion
        self.attn_dim = f.attn_dim
        self.w_u = nn.Linear(d, d)
        self.w_pi = nn.Linear(d, f.patterns)
        self.w_k = nn.Linear(d, f.attn_dim)
        self.time = TimeEncoding(f.time_frequencies, f.max_period_seconds, f.attn_dim)
        self.w_beta = nn.Linear(d, 1)
        # small: every pattern starts close to flat attention and learns where to look
        self.patterns = nn.Parameter(torch.randn(f.patterns, f.attn_dim) * 0.02)
        self.tag_dims = config.tag_dims
        if self.tag_dims:
            self.bridge_gain = nn.Parameter(torch.tensor(1.0))  # γ
            # α: the weight of the learned token path beside the bridge, 1 while training;
            # chosen after training on held-out data (training/calibrate.py), since the
            # learned path fits the training music more than music the model never heard
            self.register_buffer("learned_gain", torch.tensor(1.0))
        self.where = WhereHead(config) if f.locator else None

    def token_weights(self, text: TextEmbedding) -> Tensor:
        """Texts -> β (B, L): how much each token matters."""
        return masked_softmax(self.w_beta(text.tokens).squeeze(-1), text.mask, dim=1)

    def text_vectors(self, text: TextEmbedding) -> tuple[Tensor, Tensor]:
        """Texts -> v (B, m, D) and the β-weighted pattern choice π̄ (B, m)."""
        beta = self.token_weights(text)  # (B, L)
        u = F.normalize(self.w_u(text.tokens), dim=-1)  # (B, L, D)
        pi = torch.softmax(self.w_pi(text.tokens), dim=-1) * beta[..., None]  # (B, L, m): β_l π_lh
        v = torch.einsum("blh,bld->bhd", pi, u)
        pi_bar = pi.sum(dim=1)  # (B, m)
        if self.tag_dims and text.tags is not None:
            k = self.tag_dims
            v = self.learned_gain.to(v.dtype) * v
            bridge = self.bridge_gain * pi_bar[..., None] * text.tags[:, None, :]  # (B, m, K)
            v = torch.cat([v[..., :-k], v[..., -k:] + bridge.to(v.dtype)], dim=-1)
        return v, pi_bar

    def pattern_attention(self, clips: ClipBatch) -> Tensor:
        """Songs -> a (B, m, N): each pattern's attention over the clips.

        z_h · k_n with k_n = W_k c_n + b_k + W_t P_n + b_t, computed as (z_h W_k) · c_n + ...:
        the patterns are folded into the two projections first, so each clip costs m dot
        products instead of a d-wide key (the re-rank scores ~100 songs per query this way)."""
        z = self.patterns / math.sqrt(self.attn_dim)  # (m, d)
        proj = self.time.proj
        feats = self.time.features(clips.clip_times, clips.mask)  # (B, N, F')
        content = torch.einsum("hD,bnD->bhn", z @ self.w_k.weight, clips.clips)
        timing = torch.einsum("hf,bnf->bhn", z @ proj.weight, feats) + (z @ proj.bias)[:, None]
        logits = content + (z @ self.w_k.bias)[:, None] + timing * clips.mask[:, None, :]
        return masked_softmax(logits, clips.mask[:, None, :], dim=-1)

    def song_vectors(self, clips: ClipBatch) -> Tensor:
        """Songs -> p (B, m, D): the clips pooled by each pattern."""
        return torch.einsum("bhn,bnd->bhd", self.pattern_attention(clips), clips.clips)

    def forward(self, text: TextEmbedding, clips: ClipBatch) -> FusionScores:
        v, pi_bar = self.text_vectors(text)  # (Bt, m, D), (Bt, m)
        attn = self.pattern_attention(clips)  # (Ba, m, N)
        scores = torch.einsum("ihd,jhd->ij", v, torch.einsum("jhn,jnd->jhd", attn, clips.clips))
        clip_weights = torch.einsum("ih,jhn->ijn", pi_bar, attn)  # (Bt, Ba, N)
        per_pattern = torch.einsum("ihd,jnd->ijhn", v, clips.clips)  # (Bt, Ba, m, N): v_h · c_n
        contrib = (per_pattern * attn[None]).sum(dim=2)  # (Bt, Ba, N): w_n r_n
        clip_scores = torch.where(
            clips.mask[None], contrib / clip_weights.clamp(min=1e-12), torch.zeros_like(contrib)
        )
        return FusionScores(scores, clip_weights, clip_scores, clips.mask)

    def locate(self, text: TextEmbedding, clips: ClipBatch) -> Tensor:
        """Where each text happens in each song: (B_t, B_a, N), higher where a clip is more
        likely the place; -inf where padded. The WhereHead's evidence, or without one the
        fusion's per-clip match (clip scores)."""
        if self.where is not None:
            return self.where(text, clips)
        scores = self.forward(text, clips).clip_scores
        return scores.masked_fill(~clips.mask[None], float("-inf"))

    def scores(self, text: TextEmbedding, clips: ClipBatch) -> Tensor:
        """f only (Bt, Ba), without the per-clip explanation (training, evaluation)."""
        v, _ = self.text_vectors(text)
        return torch.einsum("ihd,jhd->ij", v, self.song_vectors(clips))


class WhereHead(nn.Module):
    """Per-clip evidence that a text happens at each clip: (texts, songs) -> (B_t, B_a, N).

        q_l = W_q T_l,  β'_l = softmax_l(w' · T_l)                  what each word asks for
        k_n = W_c [c_n ; c_n - c_{n-1} ; c_{n+1} - c_n] + W_t P_n     the clip, how it changes
                                                                      from its neighbours, when
        e_n = Σ_l β'_l q_l · k_n / √d
    The change terms let "the drums come in" point at the clip where they enter rather than
    anywhere they play; P_n is the fusion's time encoding (absolute and relative time).

    With context (fusion.locator_layers = L > 0), each text also reads every song through L
    transformer layers: h⁰_n = k_n + W_x Σ_l β'_l q_l, then per layer self-attention over the
    song's clips (where a section repeats, what came before) and cross-attention to the text's
    tokens (which words matter at this clip), and e_n gains w_o · h^L_n. This term costs a pass
    per (text, song) pair, which is why it only explains hits and never ranks them.

    With fusion.locator_sentence the query also reads the text whole: Σ_l β'_l q_l + W_s s,
    s the text's sentence embedding (TextEmbedding.sentence), where the backbone puts
    paraphrases close whatever their words."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, f = config.embed_dim, config.fusion
        self.dim = f.attn_dim
        self.w_q = nn.Linear(d, f.attn_dim)
        self.w_word = nn.Linear(d, 1)
        self.w_c = nn.Linear(3 * d, f.attn_dim)
        self.time = TimeEncoding(f.time_frequencies, f.max_period_seconds, f.attn_dim)
        self.w_sentence = nn.Linear(d, f.attn_dim) if f.locator_sentence else None
        self.context: nn.TransformerDecoder | None = None
        if f.locator_layers:
            self.w_x = nn.Linear(f.attn_dim, f.attn_dim)
            self.w_tokens = nn.Linear(d, f.attn_dim)
            layer = nn.TransformerDecoderLayer(
                f.attn_dim, nhead=LOCATOR_HEADS, dim_feedforward=2 * f.attn_dim, dropout=0.1,
                batch_first=True, norm_first=True,
            )  # fmt: skip
            self.context = nn.TransformerDecoder(layer, f.locator_layers)
            self.w_o = nn.Linear(f.attn_dim, 1)

    def keys(self, clips: ClipBatch) -> Tensor:
        """Songs -> k (B, N, d): each clip, its change from its neighbours, and its time."""
        c = clips.clips * clips.mask[..., None]  # (B, N, D)
        before = torch.cat([c[:, :1], c[:, :-1]], dim=1)  # the first clip is its own neighbour
        after = torch.cat([c[:, 1:], c[:, -1:]], dim=1)
        last = (clips.mask.sum(dim=1) - 1).clamp(min=0)  # the last real clip, likewise
        idx = torch.arange(c.shape[1], device=c.device)[None, :]
        tail = c[torch.arange(c.shape[0], device=c.device), last][:, None]  # (B, 1, D)
        after = torch.where((idx >= last[:, None])[..., None], tail, after)
        keys = self.w_c(torch.cat([c, c - before, after - c], dim=-1))
        return keys + self.time(clips.clip_times, clips.mask)  # (B, N, d)

    def forward(self, text: TextEmbedding, clips: ClipBatch) -> Tensor:
        bt, (ba, n) = len(text), clips.mask.shape
        keys = self.keys(clips)
        query = self.query(text)
        evidence = torch.einsum("id,jnd->ijn", query, keys) / math.sqrt(self.dim)
        if self.context is not None:
            pairs = keys[None].expand(bt, *keys.shape).flatten(0, 1)  # text i with every song
            evidence = evidence + self.in_context(
                query.repeat_interleave(ba, dim=0),
                text.tokens.repeat_interleave(ba, dim=0),
                text.mask.repeat_interleave(ba, dim=0),
                pairs,
                clips.mask.repeat(bt, 1),
            ).view(bt, ba, n)
        return evidence.masked_fill(~clips.mask[None], float("-inf"))

    def aligned(self, text: TextEmbedding, clips: ClipBatch) -> Tensor:
        """Evidence of text i in song i only, (B, N): what training needs, one pass per pair."""
        keys = self.keys(clips)
        query = self.query(text)
        evidence = torch.einsum("id,ind->in", query, keys) / math.sqrt(self.dim)
        if self.context is not None:
            evidence = evidence + self.in_context(query, text.tokens, text.mask, keys, clips.mask)
        return evidence.masked_fill(~clips.mask, float("-inf"))

    def query(self, text: TextEmbedding) -> Tensor:
        """Texts -> (B, d): Σ_l β'_l q_l (+ W_s s)."""
        words = masked_softmax(self.w_word(text.tokens).squeeze(-1), text.mask, dim=1)  # (B, L)
        query = torch.einsum("il,ild->id", words, self.w_q(text.tokens))
        if self.w_sentence is not None:
            # a text the tokenizer reads as nothing has no sentence either (its pool is empty)
            worded = text.mask.any(dim=1, keepdim=True)
            whole = self.w_sentence(text.sentence.to(query.dtype))
            query = query + torch.where(worded, whole, torch.zeros_like(whole))
        return query

    def in_context(
        self, query: Tensor, tokens: Tensor, token_mask: Tensor, keys: Tensor, mask: Tensor
    ) -> Tensor:
        """The context term (P, N) of P aligned (text, song) pairs: query (P, d), tokens
        (P, L, D) and their mask (P, L), keys (P, N, d) and the clips' mask (P, N)."""
        assert self.context is not None
        if tokens.shape[1] == 0:  # texts the tokenizer reads as nothing: no word asks anything
            return keys.new_zeros(mask.shape)
        # such a text beside others: its zero padding is attended (nothing would be NaN) and
        # its term dropped, as when it comes alone
        worded = token_mask.any(dim=1, keepdim=True)
        h = self.context(
            keys + self.w_x(query)[:, None], self.w_tokens(tokens),
            tgt_key_padding_mask=~mask, memory_key_padding_mask=~(token_mask | ~worded),
        )  # fmt: skip
        return self.w_o(h).squeeze(-1) * worded
