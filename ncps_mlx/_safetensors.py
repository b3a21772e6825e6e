"""A safetensors file checked before MLX reads it, and the digest that seals a checkpoint.

MLX's reader trusts the file's header: a shape whose byte size overflows, or offsets
outside the file, reach its C++ unchecked. `read_header` therefore checks the
whole header in Python first (sizes in exact integers), so only a well-formed file is
handed to ``mx.load``. `digest` hashes a checkpoint's tensors (names, dtypes,
shapes and bytes) with its config, so a flipped byte anywhere is found on load.
"""

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np

#: Largest header accepted, as in the safetensors reference implementation.
MAX_HEADER_BYTES = 100 * 2**20

#: Bytes per element of each dtype a checkpoint may hold (the ones MLX reads).
ITEM_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_METADATA = "__metadata__"


class HeaderError(ValueError):
    """The file is not a well-formed safetensors file; the message says where."""


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor table (name -> dtype, shape, offsets) and the metadata of a safetensors
    file, every entry checked against the format and the file's size.

    Raises:
        HeaderError: Anything the format does not allow.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 8:
            raise HeaderError(f"{size} bytes is shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise HeaderError(f"header length {length} exceeds the file ({size} bytes)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise HeaderError(f"header is not JSON: {type(error).__name__}") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    metadata = header.pop(_METADATA, None) or {}  # MLX writes null when there is none
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise HeaderError("__metadata__ must map strings to strings")
    _check_layout(header, data_bytes=size - 8 - length)
    return header, metadata


def _check_layout(tensors: dict[str, Any], data_bytes: int) -> None:
    """Each tensor's bytes fit its dtype and shape, and the tensors tile the data exactly."""
    spans = []
    for name, entry in tensors.items():
        spans.append((*_span(name, entry), name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise HeaderError(f"tensor {name!r} starts at byte {begin}, expected {end}")
        end = stop
    if end != data_bytes:
        raise HeaderError(f"the tensors cover {end} bytes of data, the file holds {data_bytes}")


def _span(name: str, entry: Any) -> tuple[int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise HeaderError(f"tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEM_SIZES:
        raise HeaderError(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_count(d) for d in shape):
        raise HeaderError(f"tensor {name!r} has shape {shape!r}: expected up to 8 sizes >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_count, offsets)):
        raise HeaderError(f"tensor {name!r} has data_offsets {offsets!r}")
    begin, stop = offsets
    expected = math.prod(shape) * ITEM_SIZES[dtype]  # Python ints: no overflow
    if stop - begin != expected:
        raise HeaderError(
            f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes, "
            f"its offsets span {stop - begin}"
        )
    return begin, stop


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _raw_bytes(array: mx.array) -> bytes:
    # Viewed as bytes, every dtype (bfloat16 and bool included) goes through numpy.
    # (a scalar cannot change its item size, hence the flattening).
    return np.asarray(array.reshape(-1).view(mx.uint8)).tobytes() if array.size else b""


def digest(text: str, arrays: Mapping[str, mx.array]) -> str:
    """SHA-256 of ``text`` and of every array's name, dtype, shape and bytes, by name."""
    sha = hashlib.sha256(text.encode("utf-8"))
    for name in sorted(arrays):
        array = arrays[name]
        sha.update(json.dumps([name, str(array.dtype), list(array.shape)]).encode("utf-8"))
        sha.update(_raw_bytes(array))
    return sha.hexdigest()
