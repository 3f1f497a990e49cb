"""Image folders, ``root/<class>/<image>``, streamed through Grain and decoded by Pillow.

    train = jc.data.load("imagefolder", "train", root="photos", image_size=(64, 64, 3))
    for images, labels in jc.data.batches(train, 128, key=key, epoch=0):   # (128, 64, 64, 3) uint8
        ...

The layout is ``root/train/<class>/*`` with ``root/val/`` or ``root/test/`` beside it, or
``root/<class>/*`` alone, when a seeded ``holdout`` fraction of the files (10%) is the test split.
JPEG and PNG, grayscale or colour, are decoded in Grain's worker processes and converted to
``image_size``'s channels (1: grayscale, 3: RGB). The training split is resized to 9/8 of
(H, W) and randomly cropped to (H, W); the test split is resized to (H, W).

Nothing but the file names is held: a batch is read when it is needed, with a few batches in
flight, so memory does not grow with the folder. In a run of several processes each process
reads its own slice of the epoch's order and its batches are its B / P rows of the global batch
(to assemble with `jaxconv.distributed.global_batch`); ``jaxconv train`` refuses image folders
in several processes, whose fit loop takes whole batches in every process. A file Pillow cannot read is named on stderr once, skipped and
counted in `ImageFolder.skipped`; a worker never fails on it. An epoch's iterator
(`FolderBatches`) gives its position after each batch, Grain's iterator state, from which a
resumed run continues in the middle of the epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxconv.errors import DatasetError, DatasetNotFoundError

EXTENSIONS = (".jpg", ".jpeg", ".png")
TEST_DIRS = ("val", "test")
CROP_MARGIN = 9 / 8  # the training split is resized to this times (H, W), then cropped
# ImageNet's per-channel statistics; grayscale takes their mean
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)
Batch = tuple[np.ndarray, np.ndarray]  # (B, H, W, C) uint8 images, (B,) int32 labels


@dataclasses.dataclass(eq=False)
class ImageFolder:
    """One split of an image folder: its files and labels, read in batches by `epoch_batches`.

    It answers what jaxconv's loops ask of a `Dataset` (``name``, ``split``, ``class_names``,
    ``num_classes``, ``mean``, ``std``, ``len``, ``labels``, ``images.shape`` and ``.dtype``)
    without holding the images. ``labels`` and ``len`` leave out the files found unreadable.
    """

    split: str
    files: tuple[str, ...]
    file_labels: np.ndarray  # (N,) int32, of every file
    class_names: tuple[str, ...]
    image_size: tuple[int, int, int]  # (H, W, C)
    workers: int
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why
    name: str = "imagefolder"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mean(self) -> tuple[float, ...]:
        return RGB_MEAN if self.image_size[2] == 3 else GRAY_MEAN

    @property
    def std(self) -> tuple[float, ...]:
        return RGB_STD if self.image_size[2] == 3 else GRAY_STD

    @property
    def images(self) -> jax.ShapeDtypeStruct:
        """The (N, H, W, C) uint8 images' shape and dtype; they are read only in batches."""
        return jax.ShapeDtypeStruct((len(self), *self.image_size), np.uint8)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 labels of the readable files, in stored order."""
        return self.file_labels[self._readable()]

    def __len__(self) -> int:
        return int(self._readable().sum())

    def _readable(self) -> np.ndarray:
        return np.asarray([path not in self.skipped for path in self.files], bool)

    def epoch_batches(
        self,
        batch_size: int,
        key: jax.Array | None,
        epoch: int | None,
        *,
        drop_remainder: bool = True,
        position: dict[str, Any] | None = None,
    ) -> FolderBatches:
        """The host batches of one epoch: the files in the order of ``(key, epoch)`` (stored
        order without a key), this process's share, decoded by ``workers`` processes; from the
        ``position`` an earlier iterator of the same epoch gave (`FolderBatches.position`)."""
        grain = _grain()
        records = grain.MapDataset.source(list(zip(self.files, self.file_labels.tolist(), strict=True)))
        if key is not None:
            records = records.shuffle(seed=_seed(key, epoch))
        records = records[jax.process_index() :: jax.process_count()]
        size = self.image_size
        if key is not None:
            decoded = records.random_map(
                functools.partial(_decode_and_crop, size=size), seed=_seed(key, epoch)
            )
        else:
            decoded = records.map(functools.partial(_decode, size=size))
        local = batch_size // jax.process_count()
        stream = decoded.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2 * local))
        stream = stream.batch(local, batch_fn=functools.partial(_stack, size=size))  # one transfer a batch
        if self.workers > 0:
            options = grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2)
            stream = stream.mp_prefetch(options)
        return FolderBatches(self, iter(stream), local, drop_remainder, position)

    def readable_rows(self, batch: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels of a workers' batch without the rows of unreadable files (named
        on stderr the first time, kept in ``skipped``)."""
        for path, why in batch["bad"]:
            if path not in self.skipped:
                print(f"jaxconv: skipping unreadable image {path}: {why}", file=sys.stderr)
                self.skipped[path] = why
        return batch["images"][batch["ok"]], batch["labels"][batch["ok"]]

    def __repr__(self) -> str:
        return (
            f"ImageFolder(split={self.split!r}, files={len(self.files)}, skipped={len(self.skipped)}, "
            f"image_size={self.image_size}, num_classes={self.num_classes}, workers={self.workers})"
        )


class FolderBatches:
    """One epoch's host batches of an `ImageFolder`: exactly ``size`` readable images each, pooled
    from the workers' batches (which lose the rows of unreadable files), and resumable.

    ``position(k)``, for the last few batches yielded, is a JSON-ready dict: the Grain iterator's
    state (``get_state``) before the first workers' batch that still had rows to give after the
    k-th batch, and how many of its readable rows were already given. `ImageFolder.epoch_batches`
    with that ``position`` yields exactly the batches after the k-th (Grain's ``set_state``).
    The Grain iterator (its workers, their shared memory) is closed at the end of the epoch.
    """

    HISTORY = 8  # positions kept: more than a consumer prefetches ahead

    def __init__(
        self, folder: ImageFolder, grain_iterator: Any, size: int, drop_remainder: bool,
        position: dict[str, Any] | None = None,
    ):  # fmt: skip
        self._folder, self._grain, self._size, self._drop_remainder = folder, grain_iterator, size, drop_remainder
        self._pool: list[list[Any]] = []  # [Grain state before it, images, labels, rows given]
        self._given, self._skip = 0, 0
        if position is not None:
            grain_iterator.set_state(position["grain"])
            self._given, self._skip = position["batches"], position["rows"]
        self._positions = {self._given: self._position()}

    def __iter__(self) -> FolderBatches:
        return self

    def __next__(self) -> Batch:
        try:
            batch = self._take()
        except BaseException:
            self._grain.close()
            raise
        self._given += 1
        self._positions[self._given] = self._position()
        self._positions.pop(self._given - self.HISTORY, None)
        return batch

    def position(self, batches: int) -> dict[str, Any]:
        """Where the epoch stands after its first ``batches`` batches (one of the last few given)."""
        if batches not in self._positions:
            raise ValueError(f"position after batch {batches}: only {sorted(self._positions)} are kept")
        return copy.deepcopy(self._positions[batches])

    def _position(self) -> dict[str, Any]:
        state, rows = (self._pool[0][0], self._pool[0][3]) if self._pool else (self._grain.get_state(), 0)
        return {"batches": self._given, "grain": copy.deepcopy(state), "rows": rows}

    def _take(self) -> Batch:
        while sum(len(entry[2]) - entry[3] for entry in self._pool) < self._size:
            before = self._grain.get_state()
            try:
                images, labels = self._folder.readable_rows(next(self._grain))
            except StopIteration:
                if self._drop_remainder or not self._pool:
                    raise
                return self._rows(sum(len(entry[2]) - entry[3] for entry in self._pool))
            self._pool.append([copy.deepcopy(before), images, labels, self._skip])
            self._skip = 0
        return self._rows(self._size)

    def _rows(self, count: int) -> Batch:
        """The next ``count`` pooled rows; workers' batches given in full leave the pool."""
        images, labels = [], []
        while count:
            entry = self._pool[0]
            rows = min(count, len(entry[2]) - entry[3])
            images.append(entry[1][entry[3] : entry[3] + rows])
            labels.append(entry[2][entry[3] : entry[3] + rows])
            entry[3] += rows
            count -= rows
            if entry[3] == len(entry[2]):
                self._pool.pop(0)
        return np.concatenate(images), np.concatenate(labels)


def image_folder(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    image_size: tuple[int, int, int] = (64, 64, 3),
    holdout: float = 0.1,
    workers: int | None = None,
) -> ImageFolder:
    """The ``split`` ('train' or 'test') of the folder ``root``: see the module docstring.

    ``workers``: decoding processes (default: the CPU count, at most 4; 0 decodes in threads of
    this process). Raises `DatasetNotFoundError` when ``root`` has no class folders of images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for an image folder; valid splits: ('train', 'test')")
    if len(image_size) != 3 or image_size[2] not in (1, 3):
        raise ValueError(f"image_size must be (H, W, C) with C 1 or 3, got {image_size}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    root = Path(root)
    train_dir = root / "train"
    if train_dir.is_dir():
        classes = _classes(train_dir)
        test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
        if test_dir is None and split == "test":
            raise DatasetNotFoundError(f"{root} has train/ but no val/ or test/ beside it; add one")
        files, labels = _files(train_dir if split == "train" else test_dir, classes)
    else:
        classes = _classes(root)
        files, labels = _held_out(*_files(root, classes), holdout, split)
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    return ImageFolder(split, tuple(files), np.asarray(labels, np.int32), classes, tuple(image_size), workers)


def _classes(directory: Path) -> tuple[str, ...]:
    if not directory.is_dir():
        raise DatasetNotFoundError(f"image folder {directory} does not exist")
    classes = tuple(sorted(entry.name for entry in os.scandir(directory) if entry.is_dir()))
    if not classes:
        raise DatasetNotFoundError(
            f"{directory} has no class folders: an image folder is root/<class>/<image> "
            f"(or root/train/<class>/<image> with root/val/)"
        )
    return classes


def _files(directory: Path, classes: tuple[str, ...]) -> tuple[list[str], list[int]]:
    """Every JPEG and PNG of ``directory/<class>/``, sorted, and their class indices."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = directory / name
        found = [] if not folder.is_dir() else sorted(
            entry.path for entry in os.scandir(folder) if entry.name.lower().endswith(EXTENSIONS)
        )  # fmt: skip
        files += found
        labels += [label] * len(found)
    unknown = sorted({e.name for e in os.scandir(directory) if e.is_dir()} - set(classes))
    if unknown:
        raise DatasetError(f"{directory} has class folders {unknown} that the training split lacks")
    if not files:
        raise DatasetNotFoundError(
            f"{directory} has no images ({', '.join(EXTENSIONS)}) in its class folders"
        )
    return files, labels


def _held_out(files: list[str], labels: list[int], fraction: float, split: str) -> tuple[list, list]:
    """The training or the held-out part of the files: a permutation seeded by 0 picks
    ceil(fraction * N) files as the test split."""
    order = np.random.default_rng(0).permutation(len(files))
    test = np.zeros(len(files), bool)
    test[order[: int(np.ceil(fraction * len(files)))]] = True
    chosen = np.flatnonzero(test if split == "test" else ~test)
    return [files[i] for i in chosen], [labels[i] for i in chosen]


def _grain() -> Any:
    """The ``grain`` module, imported on first use (it takes seconds). Its multi-process workers
    read absl flags, which raise in a program that never parsed them: mark them parsed, with
    their defaults, unless the program (an absl app) did."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return grain


def _seed(key: jax.Array, epoch: int | None) -> int:
    if epoch is None:
        raise ValueError(
            "shuffling an image folder with a key needs the epoch: batches(data, B, key=key, epoch=e)"
        )
    return int(jax.random.randint(jax.random.fold_in(key, epoch), (), 0, 2**31 - 1))


def _read(path: str, channels: int) -> Any:
    """The image at ``path`` as a Pillow image of ``channels`` (1: 'L', 3: 'RGB')."""
    from PIL import Image  # in the worker processes

    with Image.open(path) as image:
        return image.convert("L" if channels == 1 else "RGB")


def _decode(record: tuple[str, int], *, size: tuple[int, int, int]) -> dict[str, Any]:
    """The test transform: resize to (H, W)."""
    from PIL import Image

    path, label = record
    try:
        image = _read(path, size[2]).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except Exception as error:  # anything Pillow raises on a bad file: skip it, never fail a worker
        return _unreadable(path, label, error)
    return _record(path, label, image, size)


def _decode_and_crop(
    record: tuple[str, int], rng: np.random.Generator, *, size: tuple[int, int, int]
) -> dict:
    """The training transform: resize to 9/8 (H, W), crop (H, W) at a random place."""
    from PIL import Image

    path, label = record
    height, width = size[0], size[1]
    big = (int(np.ceil(CROP_MARGIN * height)), int(np.ceil(CROP_MARGIN * width)))
    try:
        image = _read(path, size[2]).resize((big[1], big[0]), Image.Resampling.BILINEAR)
    except Exception as error:  # as in _decode
        return _unreadable(path, label, error)
    top, left = rng.integers(0, big[0] - height + 1), rng.integers(0, big[1] - width + 1)
    return _record(path, label, image.crop((left, top, left + width, top + height)), size)


def _record(path: str, label: int, image: Any, size: tuple[int, int, int]) -> dict[str, Any]:
    pixels = np.asarray(image, np.uint8).reshape(size)
    return {"image": pixels, "label": np.int32(label), "path": path, "error": ""}


def _unreadable(path: str, label: int, error: Exception) -> dict[str, Any]:
    return {
        "image": None,
        "label": np.int32(label),
        "path": path,
        "error": f"{type(error).__name__}: {error}",
    }


def _stack(records: list[dict[str, Any]], *, size: tuple[int, int, int]) -> dict[str, Any]:
    """A worker's batch: the images (zeros for an unreadable file), labels, which rows are
    readable, and (path, why) of the others."""
    blank = np.zeros(size, np.uint8)
    return {
        "images": np.stack([blank if r["image"] is None else r["image"] for r in records]),
        "labels": np.asarray([r["label"] for r in records], np.int32),
        "ok": np.asarray([r["image"] is not None for r in records], bool),
        "bad": [(r["path"], r["error"]) for r in records if r["image"] is None],
    }
