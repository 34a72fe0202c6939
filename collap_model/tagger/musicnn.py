"""musicnn (Pons & Serra, 2019) in PyTorch: a music tagger trained on real recordings.

Two checkpoints of the `musicnn==0.1.0` wheel are ported, `MTT_musicnn` (MagnaTagATune, 50
tags) and `MSD_musicnn` (Million Song Dataset / Last.fm, 50 tags), with weights converted by
`collap convert-musicnn` (convert.py) and shipped as safetensors next to their ISC notice.

Input: 16 kHz mono -> power mel spectrogram (n_fft 512, hop 256, 96 Slaney bands, centred STFT
with zero padding, as librosa computes it) -> log10(10000 x + 1) in float32 (musicnn itself
casts the mel to float16 first, which overflows to inf on loud recordings and turns its output
into NaN) -> patches of 187 frames (3 s), each tagged on its own.

Network (one patch (T=187, 96 bands); batch norms in eval mode, eps 1e-3):
    x' = BN(x)
    timbral:  ReLU(conv (7 x 38) and (7 x 67), 204 filters each, time padded 3/3) -> BN -> max
              over frequency                                                      2 x (204, T)
    temporal: ReLU(conv (128|64|32 x 1), 51 filters each, 'same' in time) -> BN -> max over
              frequency                                                           3 x (51, T)
    front = concat                                                                (561, T)
    mid-end:  c1 = BN(ReLU(conv1d_7(front))); c2 = BN(ReLU(conv1d_7(c1))) + c1;
              c3 = BN(ReLU(conv1d_7(c2))) + c2                                    3 x (64, T)
    back-end: [front, c1, c2, c3] (753, T) -> max and mean over time, interleaved per feature
              (1506,) -> BN -> dense 200, ReLU -> BN = penultimate (200,) -> dense 50 -> sigmoid

Speed: `BN(ReLU(conv)) then max over frequency` is computed as `max over frequency of the conv`,
then ReLU and BN on the (C, T) result. That is exact: BN is a per-channel affine s·y + t, so for
s >= 0 the max passes through it, and for s < 0 it turns into a min, which is the max of the
conv with that channel's filter negated. The big (C, T, F) activations are then written once
and reduced once, instead of passing through ReLU, the affine and the max one after another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from collap_model.tagger.labels import LABELS, MSD_LABELS, MTT_LABELS

__all__ = ["LABELS", "MSD_LABELS", "MTT_LABELS", "Musicnn", "MusicnnMel", "fast_precision"]

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: the length musicnn was trained on
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP  # samples whose centred frames make one patch
BN_EPS = 1e-3
PENULTIMATE = 200
_PATCH_CHUNK = 8  # patches per timbral matrix product: bounds its window matrix (~24 MB)


class MusicnnMel(nn.Module):
    """Waveforms (B, S) at 16 kHz -> musicnn's log-mel (B, F, 96), F = S // 256 + 1, float32."""

    window: Tensor
    fb_t: Tensor

    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        fb = torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE,
            norm="slaney", mel_scale="slaney",
        )  # (257, 96), librosa's default filterbank  # fmt: skip
        self.register_buffer("fb_t", fb.T.contiguous(), persistent=False)  # (96, 257)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        return self._log_mel(wave, center=True)

    def forward_uncentred(self, wave: Tensor) -> Tensor:
        """Frames without centring padding: (B, S) -> (B, (S - 512) // 256 + 1, 96); a patch cut
        with 256 samples of context on each side gives the frames of the centred spectrogram
        of the whole recording."""
        return self._log_mel(wave, center=False)

    def _log_mel(self, wave: Tensor, center: bool) -> Tensor:
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(
                wave.float(), N_FFT, HOP, N_FFT, self.window,
                center=center, pad_mode="constant", return_complex=True,
            )  # (B, 257, F)  # fmt: skip
            power = torch.view_as_real(spec).pow(2).sum(-1)
            mel = self.fb_t @ power  # (B, 96, F)
            # float32 throughout: 10000 x overflows float16 above 6.55
            return torch.log10(10000.0 * mel + 1.0).transpose(1, 2)  # (B, F, 96)


class BatchNorm(nn.Module):
    """An eval-mode batch norm kept as TensorFlow stores it (gamma, beta, moving mean/var)."""

    gamma: Tensor
    beta: Tensor
    mean: Tensor
    var: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        for name, value in (("gamma", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))

    def affine(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) with BN(y) = scale * y + shift."""
        scale = self.gamma / torch.sqrt(self.var + BN_EPS)
        return scale, self.beta - self.mean * scale


class MaxOverFrequency(nn.Module):
    """BN(ReLU(conv(x))) reduced by max over frequency, computed as the module doc explains:
    x (B, T', 96) -> (B, C, T), for a conv of kernel (time k_t, frequency k_f) on one channel.

    The conv itself runs as one matrix product over every (time, frequency) window, in chunks
    of patches: a timbral kernel (7 x 38) then has 266 inputs per output, a shape matrix units
    (and bfloat16 ones, where the CPU has them) handle far better than a one-channel conv.
    Temporal kernels (k x 1) go through `temporal_peaks`, all three in one product."""

    def __init__(self, channels: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel)
        self.bn = BatchNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.bn.affine()
        sign = torch.where(scale < 0, -1.0, 1.0)  # (C,)
        weight = self.conv.weight * sign[:, None, None, None]  # (C, 1, k_t, k_f)
        bias = self.conv.bias
        assert bias is not None  # musicnn's convolutions all have one
        bias = bias * sign
        k_t, k_f = self.conv.kernel_size
        flat = weight.flatten(1).T  # (k_t·k_f, C)
        parts = []
        for chunk in x.split(_PATCH_CHUNK):
            windows = chunk.unfold(1, k_t, 1).unfold(2, k_f, 1)  # (b, T, F', k_t, k_f)
            n, t, f = windows.shape[:3]
            out = windows.reshape(n * t * f, k_t * k_f) @ flat.to(windows.dtype)  # (·, C)
            parts.append(out.view(n, t, f, -1).amax(dim=2))  # (b, T, C)
        peak = (torch.cat(parts).float() + bias).transpose(1, 2)  # (B, C, T)
        return scale[:, None] * F.relu(peak * sign[:, None]) + shift[:, None]


def temporal_peaks(blocks: Sequence[MaxOverFrequency], x: Tensor) -> Tensor:
    """The temporal blocks (kernels k x 1, TensorFlow 'same' in time) at once: x (B, T, 96) ->
    (B, ΣC, T). Their kernels sit in one window of the longest k, each placed where its own
    'same' padding puts it ((k - 1) // 2 before the output frame), so one matrix product over
    the bands' time windows computes all of them (the shorter kernels padded with zeros)."""
    k_max = max(b.conv.kernel_size[0] for b in blocks)
    before = (k_max - 1) // 2
    kernels, biases, signs, scales, shifts = [], [], [], [], []
    for block in blocks:
        k = block.conv.kernel_size[0]
        scale, shift = block.bn.affine()
        sign = torch.where(scale < 0, -1.0, 1.0)  # as in MaxOverFrequency
        lead = before - (k - 1) // 2
        kernels.append(
            F.pad(block.conv.weight[:, 0, :, 0] * sign[:, None], (lead, k_max - k - lead))
        )
        assert block.conv.bias is not None
        biases.append(block.conv.bias * sign)
        signs.append(sign)
        scales.append(scale)
        shifts.append(shift)
    kernel = torch.cat(kernels).T  # (k_max, ΣC)
    padded = F.pad(x, (0, 0, before, k_max - 1 - before))  # (B, T + k_max - 1, 96)
    parts = []
    for chunk in padded.split(_PATCH_CHUNK // 2):
        windows = chunk.unfold(1, k_max, 1)  # (b, T, 96, k_max)
        n, t, bands = windows.shape[:3]
        out = windows.reshape(-1, k_max) @ kernel.to(windows.dtype)  # (b·T·96, ΣC)
        parts.append(out.view(n, t, bands, -1).amax(dim=2))  # (b, T, ΣC)
    peak = (torch.cat(parts).float() + torch.cat(biases)).transpose(1, 2)  # (B, ΣC, T)
    sign = torch.cat(signs)[:, None]
    return torch.cat(scales)[:, None] * F.relu(peak * sign) + torch.cat(shifts)[:, None]


class MidEnd(nn.Module):
    """BN(ReLU(conv1d_7(x))): (B, C_in, T) -> (B, 64, T), time padded 3/3."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 7)
        self.bn = BatchNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.bn.affine()
        return scale[:, None] * F.relu(self.conv(F.pad(x, (3, 3))).float()) + shift[:, None]


class Musicnn(nn.Module):
    """Patches (B, T, 96) of musicnn's log-mel -> tags (B, 50) in [0, 1], penultimate (B, 200)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        super().__init__()
        self.labels = labels
        self.input_bn = BatchNorm(1)
        self.timbral = nn.ModuleList(
            [MaxOverFrequency(204, (7, 38)), MaxOverFrequency(204, (7, 67))]
        )
        self.temporal = nn.ModuleList([MaxOverFrequency(51, (k, 1)) for k in (128, 64, 32)])
        self.midend = nn.ModuleList([MidEnd(561, 64), MidEnd(64, 64), MidEnd(64, 64)])
        self.pool_bn = BatchNorm(1506)
        self.dense = nn.Linear(1506, PENULTIMATE)
        self.dense_bn = BatchNorm(PENULTIMATE)
        self.out = nn.Linear(PENULTIMATE, len(labels))

    def forward(self, patches: Tensor, fast: bool = False) -> tuple[Tensor, Tensor]:
        """`fast`: the convolutions in the autocast dtype the caller set (`fast_precision`)."""
        scale, shift = self.input_bn.affine()
        x = patches.float() * scale + shift  # (B, T, 96)
        if fast and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        padded = F.pad(x, (0, 0, 3, 3))  # time 3/3
        feats = [block(padded) for block in self.timbral]  # 2 x (B, 204, T)
        temporal = [b for b in self.temporal if isinstance(b, MaxOverFrequency)]
        feats.append(temporal_peaks(temporal, x))  # (B, 3·51, T)
        front = torch.cat(feats, dim=1).float()  # (B, 561, T)
        c1 = self.midend[0](front)
        c2 = self.midend[1](c1) + c1
        c3 = self.midend[2](c2) + c2
        mid = torch.cat([front, c1, c2, c3], dim=1)  # (B, 753, T)
        # TF flattens (753, {max, mean}) feature-major: max_0, mean_0, max_1, mean_1, ...
        pooled = torch.stack([mid.amax(dim=2), mid.mean(dim=2)], dim=2).flatten(1)  # (B, 1506)
        scale, shift = self.pool_bn.affine()
        pooled = pooled * scale + shift
        scale, shift = self.dense_bn.affine()
        penultimate = F.relu(self.dense(pooled).float()) * scale + shift  # (B, 200)
        return torch.sigmoid(self.out(penultimate).float()), penultimate


@contextlib.contextmanager
def fast_precision(device: torch.device) -> Iterator[None]:
    """bfloat16 convolutions where the hardware multiplies bfloat16 natively (AVX512-BF16 or
    AMX on a CPU, any CUDA GPU); float32 elsewhere, where bfloat16 would be emulated."""
    from collap_model.text_encoder import native_bf16

    if device.type == "cuda" or (device.type == "cpu" and native_bf16()):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
