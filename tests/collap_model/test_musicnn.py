"""The musicnn port: our PyTorch networks against musicnn's own TensorFlow output, the mel
front-end, the patches the tagger cuts from clips, and the converter's checkpoint reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from collap_model.clipping import clip_spans_samples
from collap_model.config import ConfigError
from collap_model.tagger.labels import LABELS
from collap_model.tagger.musicnn import PATCH_SAMPLES, MusicnnMel, fast_precision
from collap_model.tagger.tagger import SHIPPED, Tagger, load_musicnn, weights_dir
from collap_model.tagger.tf_bundle import BundleError, read_bundle

# 5 of the 27 input patches of ../shared/notes/musicnn-reference/ (the log-mel of Debian
# hyperrogue-music's hr3-icyland.ogg, GPL-2+) with the tags musicnn's TensorFlow graph gives
REFERENCE = Path(__file__).parent / "data" / "musicnn-reference.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE))


@pytest.mark.parametrize("name", list(LABELS))
def test_port_gives_musicnns_own_tags(name: str, reference: dict[str, np.ndarray]) -> None:
    net = load_musicnn(name, weights_dir(SHIPPED))
    with torch.inference_mode():
        tags, penultimate = net(torch.from_numpy(reference["input"]))
    assert tags.shape == (5, 50) and penultimate.shape == (5, 200)
    assert np.abs(tags.numpy() - reference[name]).max() < 1e-4


@pytest.mark.parametrize("name", list(LABELS))
def test_fast_path_stays_close(name: str, reference: dict[str, np.ndarray]) -> None:
    net = load_musicnn(name, weights_dir(SHIPPED))
    with torch.inference_mode(), fast_precision(torch.device("cpu")):
        tags, _ = net(torch.from_numpy(reference["input"]), fast=True)
    assert np.abs(tags.float().numpy() - reference[name]).max() < 0.02


def test_loud_input_never_gives_nan() -> None:
    # a full-scale square wave: its mel power far exceeds 6.55, where musicnn's float16 cast
    # overflowed to inf (and its tags to NaN)
    t = torch.arange(3 * 16_000) / 16_000
    loud = torch.sign(torch.sin(2 * torch.pi * 220 * t))[None]
    mel = MusicnnMel()(loud)
    assert bool(torch.isfinite(mel).all())
    assert float((10 ** mel.max() - 1) / 10_000) > 6.55
    net = load_musicnn("MTT_musicnn", weights_dir(SHIPPED))
    with torch.inference_mode():
        tags, pen = net(mel[:, :187])
        fast, _ = net(mel[:, :187], fast=True)
    assert bool(torch.isfinite(tags).all() and torch.isfinite(pen).all())
    assert bool(torch.isfinite(fast).all())


def test_tagger_patches_have_the_frames_of_the_whole_recording() -> None:
    gen = torch.Generator().manual_seed(0)
    song = 0.1 * torch.randn(12 * 16_000, generator=gen)
    whole = MusicnnMel()(song[None])[0]  # (F, 96), centred on the whole song
    tagger = Tagger(("MTT_musicnn",), 1)
    clip = song[16_000 : 16_000 + 160_000][None]
    valid = torch.tensor([160_000])
    waves = tagger.patches(clip, valid)
    frames = tagger.mel.forward_uncentred(waves)[0]  # (187, 96)
    start = 16_000 + (160_000 - PATCH_SAMPLES) // 2  # the centre patch, in song samples
    assert frames.shape == (187, 96) and start % 256 == 0
    first = start // 256
    assert torch.allclose(frames, whole[first : first + 187], atol=1e-4)


def test_tagger_pools_tags_per_clip_and_pads_short_clips() -> None:
    tagger = Tagger(("MTT_musicnn", "MSD_musicnn"), 3)
    gen = torch.Generator().manual_seed(1)
    clips = 0.1 * torch.randn(2, 160_000, generator=gen)
    clips[1, 16_000:] = 0  # a one-second clip, zero-padded
    out = tagger(clips, torch.tensor([160_000, 16_000]))
    assert out.tags.shape == (2, 100) and out.penultimate.shape == (2, 400)
    assert bool(((out.tags >= 0) & (out.tags <= 1)).all())
    assert tagger.labels[:50] == LABELS["MTT_musicnn"]
    waves = tagger.patches(clips, torch.tensor([160_000, 16_000]))
    assert waves.shape[0] == 6
    assert float(waves[3:, 16_256 + 256 :].abs().max()) == 0.0  # nothing past the clip's end


def _song_clips(seconds: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A noise song cut as the model cuts it: clips (M, 160000), valid (M,), starts (M,)."""
    gen = torch.Generator().manual_seed(seed)
    song = 0.1 * torch.randn(int(seconds * 16_000), generator=gen)
    spans = clip_spans_samples(song.shape[0], 160_000, 80_000)
    clips = torch.zeros(len(spans), 160_000)
    for i, (s, e) in enumerate(spans):
        clips[i, : e - s] = song[s:e]
    valid = torch.tensor([e - s for s, e in spans])
    return clips, valid, torch.tensor([s for s, _ in spans])


def test_shared_patches_lie_in_the_overlap_of_two_clips_and_are_tagged_once() -> None:
    tagger = Tagger(("MTT_musicnn",), 1, grid=(160_000, 80_000))
    clips, valid, starts = _song_clips(47.0, 2)  # clips at 0, 5, ..., 35 s and one at 37 s
    local = tagger.placements(valid, starts)[:, 0]
    song = starts + local  # where each clip's patch starts in the song
    assert song[:8].tolist() == [s for s in song[:8:2].tolist() for _ in (0, 1)]
    # pair j's patch is centred in the overlap of clips 2j and 2j + 1 (7.5 s, 17.5 s, ...)
    centres = (song[:8:2] + PATCH_SAMPLES // 2).tolist()
    assert centres == [120_000 + 160_000 * j for j in range(4)]
    assert bool(((local >= 256) & (local + PATCH_SAMPLES + 256 <= valid)).all())  # with context
    calls: list[int] = []
    net = tagger.nets[0]
    net.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    out = tagger(clips, valid, starts)
    assert sum(calls) == len(set(song.tolist())) == 5  # 9 clips, 5 patches tagged
    alone = [tagger(clips[i : i + 1], valid[i : i + 1], starts[i : i + 1]) for i in range(9)]
    assert torch.allclose(out.tags, torch.cat([a.tags for a in alone]), atol=1e-5)
    assert torch.allclose(out.penultimate, torch.cat([a.penultimate for a in alone]), atol=1e-4)


def test_shared_patches_fall_back_to_the_centre_and_need_the_starts() -> None:
    tagger = Tagger(("MTT_musicnn",), 1, grid=(160_000, 80_000))
    clips, valid, starts = _song_clips(6.0, 3)  # one clip, shorter than two patches' room
    assert tagger.placements(valid, starts).tolist() == [[(96_000 - PATCH_SAMPLES) // 2]]
    with pytest.raises(ValueError, match="start"):
        tagger(clips, valid)
    centred = Tagger(("MTT_musicnn",), 1)
    assert centred.identity() != tagger.identity()
    with pytest.raises(ConfigError):
        Tagger(("MTT_musicnn",), 3, grid=(160_000, 80_000))


# ---- the checkpoint reader, on a bundle written here in TensorFlow's format ----------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    head = _varint(number << 3 | wire)
    if isinstance(payload, int):
        return head + _varint(payload)
    return head + _varint(len(payload)) + payload


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable block with prefix-compressed keys and one restart point."""
    body, prev = bytearray(), b""
    for key, value in entries:
        shared = 0
        while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
            shared += 1
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        body += key[shared:] + value
        prev = key
    return bytes(body) + struct.pack("<II", 0, 1)


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    data, entries = bytearray(), [(b"", _field(1, 0, 1))]  # header: num_shards 1
    for name, array in sorted(tensors.items()):
        shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in array.shape)
        entry = _field(1, 0, 1) + _field(2, 2, shape) + _field(4, 0, len(data))
        entry += _field(5, 0, array.nbytes)
        entries.append((name.encode(), entry))
        data += array.astype("<f4").tobytes()
    block = _block(entries)
    index = _block([(b"\xff", _varint(0) + _varint(len(block)))])
    table = block + b"\x00\x00\x00\x00\x00" + index + b"\x00\x00\x00\x00\x00"
    index_offset = len(block) + 5
    footer = _varint(0) + _varint(0) + _varint(index_offset) + _varint(len(index) - 0)
    footer = footer.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(table + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


def test_bundle_reader_reads_names_shapes_and_values(tmp_path: Path) -> None:
    tensors = {
        "dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
        "dense/bias": np.array([0.5, -1.5, 2.0], dtype=np.float32),
        "batch_normalization/gamma": np.array([3.0], dtype=np.float32),
    }
    write_bundle(tmp_path / "model", tensors)
    got = read_bundle(tmp_path / "model")
    assert sorted(got) == sorted(tensors)
    for name, array in tensors.items():
        assert got[name].shape == array.shape and np.array_equal(got[name], array)


def test_bundle_reader_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(b"not an sstable" * 10)
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(BundleError, match="not an SSTable"):
        read_bundle(tmp_path / "x")
    with pytest.raises(BundleError, match="cannot read"):
        read_bundle(tmp_path / "missing")
