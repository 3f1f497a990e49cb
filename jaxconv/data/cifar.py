"""The binary distribution of CIFAR-10 (``cifar-10-binary.tar.gz``).

Each file of ``cifar-10-batches-bin/`` (``data_batch_1.bin`` ...
``data_batch_5.bin``, ``test_batch.bin``) is a sequence of 3073-byte records:
one label byte (0-9), then a 32 x 32 colour image as 3072 bytes in channel-major
order (1024 red values, then green, then blue, each plane row-major); see
Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009) and
https://www.cs.toronto.edu/~kriz/cifar.html. No pickle is involved.
"""

from __future__ import annotations

import os

import numpy as np

from jaxconv.errors import DatasetError

__all__ = ["CIFAR10_RECORD_BYTES", "read_cifar10_batch"]

_C, _H, _W = 3, 32, 32
CIFAR10_RECORD_BYTES = 1 + _C * _H * _W  # 3073


def read_cifar10_batch(
    path: str | os.PathLike[str], *, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file.

    Returns:
      images: (N, 32, 32, 3) uint8, NHWC (converted from the file's CHW).
      labels: (N,) int32 in [0, num_classes).

    Raises:
      DatasetError: naming `path`, if the file is empty, is not a whole number
        of 3073-byte records, or holds a label outside [0, num_classes).
    """
    path = os.fspath(path)
    data = np.fromfile(path, dtype=np.uint8)
    records, leftover = divmod(data.size, CIFAR10_RECORD_BYTES)
    if data.size == 0 or leftover:
        raise DatasetError(
            f"{path}: {data.size} bytes is not a whole, non-zero number of "
            f"{CIFAR10_RECORD_BYTES}-byte CIFAR-10 records (1 label byte + 3 x 32 x 32 pixels): "
            f"{records} records and {leftover} bytes left over; the file is truncated or "
            "not a CIFAR-10 binary batch"
        )
    data = data.reshape(records, CIFAR10_RECORD_BYTES)
    labels = data[:, 0].astype(np.int32)
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise DatasetError(
            f"{path}: record {bad[0]} has label {labels[bad[0]]}, expected 0-{num_classes - 1} "
            f"({bad.size} records out of range; is this a CIFAR-100 file?)"
        )
    images = data[:, 1:].reshape(records, _C, _H, _W)  # (N, C, H, W)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels  # (N, H, W, C)
