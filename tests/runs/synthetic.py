"""Helpers for the training and CLI tests: tiny learnable datasets, in memory and as IDX files.

Each class c of the synthetic data is a bright square at a position of its
own on a noisy background, so a small ConvNet learns it in a few steps.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

import jaxconv as jc
from jaxconv.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, Dataset
from jaxconv.models import registry

CLASSES = tuple(f"class {c}" for c in range(10))


def synthetic(n: int, size: int = 28, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 1) uint8 images and (n,) int32 labels: class c lights a 4x4 square at
    row 2 * (c // 5), column 2 * (c % 5) (in units of 4 pixels), over uniform noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % num_classes).astype(np.int32)
    images = rng.integers(0, 60, (n, size, size, 1), dtype=np.uint8)
    for i, c in enumerate(labels):
        row, column = 4 * (c // 5), 4 * (c % 5)
        images[i, row : row + 4, column : column + 4] = 255
    return images, labels


def dataset(n: int, split: str = "train", size: int = 28, seed: int = 0) -> Dataset:
    images, labels = synthetic(n, size, seed=seed)
    return Dataset("fashion_mnist", split, images, labels, CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def tiny_net(num_classes: int = 10) -> jc.Layer:
    """A ConvNet small enough to compile and run in well under a second."""
    return jc.serial(
        jc.Conv(4, 3, padding=1), jc.BatchNorm(), jc.Relu, jc.MaxPool(4),
        jc.Flatten, jc.Dropout(0.1), jc.Dense(num_classes),
    )  # fmt: skip


@contextlib.contextmanager
def tiny_registered() -> Iterator[None]:
    """`tiny_net` registered as the model ``tiny`` (for ``jaxconv train --model tiny``) while open."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny", registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {}))
        yield


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 0x0000 08 D, D big-endian dims, bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_idx_dataset(directory: Path) -> Path:
    """Write a Fashion-MNIST-shaped IDX dataset into ``directory``: 64 training and 40 test images."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", 64, 0), ("t10k", 40, 1)):
        images, labels = synthetic(n, seed=seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}  # RGB per class
CORRUPT, GRAY = "dog/broken.jpg", "cat/gray.png"


def write_folder(root: Path, per_class: int = 6) -> Path:
    """root/<class>/<i>.png|jpg in each class's colour (sizes vary), a grayscale PNG, a corrupt JPEG."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (20 + 3 * i, 18 + 2 * i), colour)
            image.save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}", quality=95)
    Image.new("L", (24, 24), 120).save(root / GRAY)
    (root / CORRUPT).write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


def orbax_arrays(step_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and the arrays of a run's Orbax checkpoint ``orbax/<step>``, by key path
    (``"['params']['conv_0']['kernel']"``), read by Orbax alone as NumPy arrays, not through jaxconv."""
    path = Path(step_dir).absolute() / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        structure = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree_util.tree_map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
            structure,
            is_leaf=lambda x: hasattr(x, "shape"),
        )
        tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    metadata = json.loads((Path(step_dir) / "meta" / "metadata").read_text())["metadata"]
    return metadata, {jax.tree_util.keystr(key): leaf for key, leaf in flat}
