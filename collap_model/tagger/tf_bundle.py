"""Read a TensorFlow checkpoint ("tensor bundle") with the standard library and numpy.

A TF1 checkpoint `PREFIX` is two files:
    PREFIX.index                  an SSTable (LevelDB's table format) mapping each variable's
                                  name to a BundleEntryProto (dtype, shape, offset, size, crc32c)
    PREFIX.data-00000-of-00001    the tensors' raw little-endian bytes, back to back

SSTable layout, as much of it as a bundle uses: the file ends with a 48-byte footer (two block
handles, metaindex and index, as varints, then padding and an 8-byte magic number). The index
block's values are block handles of the data blocks; a block is a run of prefix-compressed
entries (varint shared, varint unshared, varint value length, key suffix, value) followed by
its restart offsets and their count (uint32 each), and on disk by a 5-byte trailer (compression
type, crc). Bundles are written uncompressed. The entry with the empty key is the bundle header.

No TensorFlow anywhere: musicnn's checkpoints are converted once with this reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# TensorFlow's DataType enum values for the dtypes a checkpoint of float models holds
_DTYPES: dict[int, type[np.generic]] = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


class BundleError(ValueError):
    """A file that is not a readable TensorFlow tensor bundle."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every entry of one uncompressed SSTable block."""
    if len(block) < 4:
        raise BundleError("truncated block")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def _block(table: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(table):
        raise BundleError("block handle points past the end of the index file")
    if table[offset + size] != 0:
        raise BundleError(f"compressed SSTable block (type {table[offset + size]}) not supported")
    return table[offset : offset + size]


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as int, the rest as bytes."""
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        field, wire = tag >> 3, tag & 7
        match wire:
            case 0:
                value, pos = _varint(message, pos)
                yield field, value
            case 1:
                yield field, message[pos : pos + 8]
                pos += 8
            case 2:
                size, pos = _varint(message, pos)
                yield field, message[pos : pos + size]
                pos += size
            case 5:
                yield field, message[pos : pos + 4]
                pos += 4
            case _:
                raise BundleError(f"unsupported protobuf wire type {wire}")


def _entry(value: bytes) -> tuple[int, list[int], int, int]:
    """BundleEntryProto -> (dtype, shape, offset, size)."""
    dtype, offset, size = 0, 0, 0
    shape: list[int] = []
    for field, v in _fields(value):
        match field, v:
            case 1, int():
                dtype = v
            case 2, bytes():  # TensorShapeProto: repeated Dim (field 2) {size (1), name (2)}
                for f2, dim in _fields(v):
                    if f2 == 2 and isinstance(dim, bytes):
                        sizes = [s for f3, s in _fields(dim) if f3 == 1 and isinstance(s, int)]
                        shape.append(sizes[0] if sizes else 0)
            case 4, int():
                offset = v
            case 5, int():
                size = v
            case 7, _:
                raise BundleError("partitioned (sliced) variables are not supported")
    return dtype, shape, offset, size


def read_bundle(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint `prefix` (PREFIX.index + PREFIX.data-00000-of-00001)."""
    index_path = Path(f"{prefix}.index")
    data_path = Path(f"{prefix}.data-00000-of-00001")
    try:
        table = index_path.read_bytes()
        data = data_path.read_bytes()
    except OSError as err:
        raise BundleError(f"cannot read checkpoint {prefix}: {err.strerror or err}") from err
    if len(table) < _FOOTER or struct.unpack("<Q", table[-8:])[0] != _MAGIC:
        raise BundleError(f"{index_path} is not an SSTable (bad footer)")
    footer = table[-_FOOTER:]
    _, pos = _varint(footer, 0)  # metaindex handle: offset, size (unused)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    tensors: dict[str, np.ndarray] = {}
    for _, handle in _block_entries(table[index_offset : index_offset + index_size]):
        for key, value in _block_entries(_block(table, handle)):
            if not key:
                continue  # the bundle header
            dtype, shape, offset, size = _entry(value)
            if dtype not in _DTYPES:
                raise BundleError(f"{key.decode()}: unsupported dtype {dtype}")
            if offset + size > len(data):
                raise BundleError(f"{key.decode()}: data past the end of {data_path.name}")
            kind = np.dtype(_DTYPES[dtype]).newbyteorder("<")
            array = np.frombuffer(data, dtype=kind, count=size // kind.itemsize, offset=offset)
            tensors[key.decode()] = array.reshape(shape).copy()
    return tensors
