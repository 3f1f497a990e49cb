"""Shared fixtures for the `jaxconv.data` tests: a strict JAX configuration and
writers of small dataset files built byte by byte with `struct`, independently
of the readers under test."""

from __future__ import annotations

import gzip
import struct
import warnings
from collections.abc import Callable
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


class DataFiles:
    """Writers of small dataset files, built byte by byte with `struct` and `gzip`."""

    @staticmethod
    def idx(array: np.ndarray) -> bytes:
        """The IDX encoding of a uint8 array: magic 0x0000 08 D, D big-endian dims, the bytes."""
        assert array.dtype == np.uint8
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        return header + bytes(array.reshape(-1).tolist())

    @staticmethod
    def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if compress else data)
        return path

    @staticmethod
    def images(n: int, label_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, 28, 28) uint8 images whose every pixel is 10 * label + i, and labels (n,) uint8."""
        labels = (np.arange(n) + label_offset) % 10
        images = np.empty((n, 28, 28), np.uint8)
        for i in range(n):
            images[i] = 10 * labels[i] + i
        return images, labels.astype(np.uint8)

    def idx_dataset(
        self,
        directory: Path,
        *,
        compress: bool = True,
        splits: tuple[str, ...] = ("train", "t10k"),
        label_offset: int = 0,
    ) -> Path:
        """Write the IDX files of a train (3 examples) and test (2 examples) split."""
        gz = ".gz" if compress else ""
        for prefix, n in (("train", 3), ("t10k", 2)):
            if prefix in splits:
                images, labels = self.images(n, label_offset)
                for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
                    path = directory / f"{prefix}-{kind}-ubyte{gz}"
                    self.write(path, self.idx(array), compress=compress)
        return directory

    @staticmethod
    def cifar_record(label: int, pixel: Callable[[int, int, int], int]) -> bytes:
        """One CIFAR-10 record: the label byte, then pixel(c, h, w) for c, h, w in C order."""
        values = [pixel(c, h, w) for c in range(3) for h in range(32) for w in range(32)]
        return bytes([label, *values])


@pytest.fixture
def files() -> DataFiles:
    return DataFiles()
