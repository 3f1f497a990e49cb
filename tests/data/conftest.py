"""Shared fixtures for the `jaxconv.data` tests: a strict JAX configuration and
writers of small dataset files built byte by byte with `struct`, independently
of the readers under test."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def strict_jax():
    """Rank promotion and implicit dtype promotion raise; warnings are errors."""
    with (
        jax.numpy_rank_promotion("raise"),
        jax.numpy_dtype_promotion("strict"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")
        yield


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 D, D big-endian dims, the bytes."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + bytes(array.reshape(-1).tolist())


def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def fake_images(n: int, label_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images whose every pixel is 10 * label + i, and labels (n,)."""
    labels = (np.arange(n) + label_offset) % 10
    images = np.empty((n, 28, 28), np.uint8)
    for i in range(n):
        images[i] = 10 * labels[i] + i
    return images, labels.astype(np.uint8)


@pytest.fixture
def write_idx_dataset():
    """Write train (3 examples) and test (2 examples) IDX files into a directory."""

    def write_dataset(
        directory: Path,
        *,
        compress: bool = True,
        splits: tuple[str, ...] = ("train", "t10k"),
        label_offset: int = 0,
    ) -> Path:
        for prefix, n in (("train", 3), ("t10k", 2)):
            if prefix not in splits:
                continue
            images, labels = fake_images(n, label_offset)
            gz = ".gz" if compress else ""
            write(directory / f"{prefix}-images-idx3-ubyte{gz}", idx_bytes(images), compress=compress)
            write(directory / f"{prefix}-labels-idx1-ubyte{gz}", idx_bytes(labels), compress=compress)
        return directory

    return write_dataset


def cifar_record(label: int, pixel) -> bytes:
    """One CIFAR-10 record: the label byte, then pixel(c, h, w) for c, h, w in C order."""
    values = [pixel(c, h, w) for c in range(3) for h in range(32) for w in range(32)]
    return bytes([label, *values])
