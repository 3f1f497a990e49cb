"""The IDX file format of MNIST and Fashion-MNIST.

An IDX file is a big-endian header followed by the elements in C order::

    bytes 0-1        zero
    byte  2          element type: 0x08 uint8, 0x09 int8, 0x0B int16,
                     0x0C int32, 0x0D float32, 0x0E float64
    byte  3          number of dimensions D
    4 * D bytes      the dimensions, unsigned 32-bit
    payload          prod(dims) elements, big-endian

Images are magic ``0x00000803`` (uint8, 3 dims: N, H, W) and labels
``0x00000801`` (uint8, 1 dim: N); see LeCun, Cortes and Burges, "The MNIST
database of handwritten digits", section "File formats". Files may be gzipped
(recognised by content, not by name).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from jaxconv.errors import DatasetError

__all__ = ["IDX_TYPES", "IMAGES_MAGIC", "LABELS_MAGIC", "parse_idx", "read_idx"]

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzipped, into a NumPy array.

    Args:
      path: the file; gzip is detected from its first two bytes.
      magic: if given, the exact magic number required, e.g. `IMAGES_MAGIC`.

    Returns:
      A writable array of the header's shape, in native byte order
      (uint8 images: (N, H, W); uint8 labels: (N,)).

    Raises:
      DatasetError: naming `path`, for a bad gzip stream, a bad or unexpected
        magic number, a truncated header, or a payload whose length differs
        from what the header promises.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC or path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip file ({e})") from e
    return parse_idx(data, source=path, magic=magic)


def parse_idx(data: bytes, *, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; see `read_idx`."""
    if len(data) < 4:
        raise DatasetError(
            f"{source}: {len(data)} bytes is too short for an IDX file (the magic number alone is 4 bytes)"
        )
    (found,) = struct.unpack_from(">I", data)
    if data[:2] != b"\0\0":
        raise DatasetError(
            f"{source}: bad magic number 0x{found:08X}: an IDX file starts with two zero bytes"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        valid = ", ".join(f"0x{c:02X} ({t.name})" for c, t in IDX_TYPES.items())
        raise DatasetError(
            f"{source}: bad magic number 0x{found:08X}: unknown element type 0x{code:02X}; "
            f"valid types: {valid}"
        )
    if magic is not None and found != magic:
        raise DatasetError(
            f"{source}: magic number 0x{found:08X} ({_describe(found)}), "
            f"expected 0x{magic:08X} ({_describe(magic)})"
        )
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DatasetError(
            f"{source}: truncated header: {ndim} dimensions need {header_bytes} header bytes, "
            f"the file has {len(data)}"
        )
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = IDX_TYPES[code]
    count = math.prod(dims)
    expected, got = count * dtype.itemsize, len(data) - header_bytes
    if got != expected:
        shape = " x ".join(map(str, dims)) or "scalar"
        problem = "truncated" if got < expected else "too long"
        difference = f"{abs(expected - got)} {'missing' if got < expected else 'extra'}"
        raise DatasetError(
            f"{source}: {problem}: the header promises {shape} {dtype.name} = {expected} payload "
            f"bytes after the {header_bytes}-byte header, got {got} ({difference})"
        )
    array = np.frombuffer(data, dtype, count=count, offset=header_bytes).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def _describe(magic: int) -> str:
    dtype = IDX_TYPES.get((magic >> 8) & 0xFF)
    name = dtype.name if dtype is not None else "unknown type"
    return f"{name}, {magic & 0xFF} dims"
