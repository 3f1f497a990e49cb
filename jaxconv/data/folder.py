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
counted in `ImageFolder.skipped`; a worker never fails on it.

The first epoch decodes every image (`jaxconv.data.folder_decode`) and keeps its decoded pixels on
disk (`jaxconv.data.pixel_cache`): the epochs after it read them back, in threads of this process,
instead of decoding, and get the same batches (the random crops included). An epoch's iterator
(`FolderBatches`) gives its position after each batch, Grain's iterator state, from which a
resumed run continues in the middle of the epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxconv.data.folder_decode import load_batch, slot_shape
from jaxconv.data.pixel_cache import PixelCache, default_root
from jaxconv.errors import DatasetError, DatasetNotFoundError

EXTENSIONS = (".jpg", ".jpeg", ".png")
WORKER_NICENESS = 10  # added to a decoding worker's niceness: see `_decoding_worker`
TEST_DIRS = ("val", "test")
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
    cache: Path | None = None  # the pixel caches' root; None: decode every epoch
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why
    _caches: dict[bool, PixelCache] = dataclasses.field(default_factory=dict, repr=False)
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
        indexed = zip(range(len(self.files)), self.files, self.file_labels.tolist(), strict=True)
        records = grain.MapDataset.source(list(indexed))
        if key is not None:
            records = records.shuffle(seed=_seed(key, epoch))
        records = records[jax.process_index() :: jax.process_count()]
        local = batch_size // jax.process_count()
        # one Grain element a batch of files: its overheads (indexing, a generator, a transfer
        # from the worker) are paid once a batch, not once an image
        grouped = records.batch(local, batch_fn=list)
        cache = self._pixel_cache(crop=key is not None)
        complete = cache is not None and cache.complete
        # reading the cache needs no decoding processes; a resumed epoch reads as it was read, for
        # Grain's state to fit (decoding gives the pixels the cache holds)
        workers = (0 if complete else self.workers) if position is None else position["workers"]
        cached = complete and workers == 0
        load = functools.partial(
            load_batch,
            size=self.image_size,
            crop=key is not None,
            cache_path=cache and cache.pixels_path,
            cached=dict(cache.skipped) if cached else None,
        )
        decoded = grouped.random_map(load, seed=_seed(key, epoch)) if key is not None else grouped.map(load)
        threads = 2 if workers == 0 else 1
        stream = decoded.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2))
        if workers > 0:
            options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
            stream = stream.mp_prefetch(options, worker_init_fn=_decoding_worker)
        filling = None if cached else cache
        return FolderBatches(self, iter(stream), local, drop_remainder, position, workers, filling)

    def readable_rows(self, batch: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels of a workers' batch without the rows of unreadable files (named
        on stderr the first time, kept in ``skipped``)."""
        for path, why in batch["bad"]:
            if path not in self.skipped:
                print(f"jaxconv: skipping unreadable image {path}: {why}", file=sys.stderr)
                self.skipped[path] = why
        return batch["images"][batch["ok"]], batch["labels"][batch["ok"]]

    def _pixel_cache(self, crop: bool) -> PixelCache | None:
        """The pixel cache of this split's training (``crop``) or evaluation slots, opened once;
        None without a cache root, or in a run of several processes (each decodes its share)."""
        if self.cache is None or jax.process_count() > 1:
            return None
        if crop not in self._caches:
            self._caches[crop] = PixelCache(self.cache, self.files, slot_shape(self.image_size, crop))
            self.skipped.update(self._caches[crop].skipped)
        return self._caches[crop]

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
    k-th batch, how many of its readable rows were already given, and how many decoding workers
    read it (none: the pixel cache, or threads). `ImageFolder.epoch_batches`
    with that ``position`` yields exactly the batches after the k-th (Grain's ``set_state``).
    The Grain iterator (its workers, their shared memory) is closed at the end of the epoch.
    """

    HISTORY = 8  # positions kept: more than a consumer prefetches ahead

    def __init__(
        self, folder: ImageFolder, grain_iterator: Any, size: int, drop_remainder: bool,
        position: dict[str, Any] | None = None, workers: int = 0, filling: PixelCache | None = None,
    ):  # fmt: skip
        self._folder, self._grain = folder, grain_iterator
        self._size, self._drop_remainder = size, drop_remainder
        self._workers, self._filling, self._open = workers, filling, True
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
            self.close()
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

    def close(self) -> None:
        """Close the Grain iterator (its workers, their shared memory) and save the record of the
        pixel cache being filled; at the end of the epoch, or when the consumer lets it go."""
        if getattr(self, "_open", False):
            self._open = False
            self._grain.close()
            if self._filling is not None:
                self._filling.save()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at exit, what closing needs may be gone
            self.close()

    def _position(self) -> dict[str, Any]:
        state, rows = (self._pool[0][0], self._pool[0][3]) if self._pool else (self._grain.get_state(), 0)
        return {"batches": self._given, "grain": copy.deepcopy(state), "rows": rows, "workers": self._workers}

    def _take(self) -> Batch:
        while sum(len(entry[2]) - entry[3] for entry in self._pool) < self._size:
            before = self._grain.get_state()
            try:
                batch = next(self._grain)
            except StopIteration:
                if self._drop_remainder or not self._pool:
                    raise
                return self._rows(sum(len(entry[2]) - entry[3] for entry in self._pool))
            if self._filling is not None:
                self._filling.record(batch["indices"], batch["ok"], dict(batch["bad"]))
            images, labels = self._folder.readable_rows(batch)
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
    cache: bool | str | os.PathLike[str] = True,
) -> ImageFolder:
    """The ``split`` ('train' or 'test') of the folder ``root``: see the module docstring.

    ``workers``: decoding processes (default: the CPU count, at most 4; 0 decodes in threads of
    this process). ``cache``: keep the decoded pixels on disk after the first epoch
    (`jaxconv.data.pixel_cache`; N x h x w x C bytes) under this directory, or under
    `pixel_cache.default_root` if True (``$JAXCONV_CACHE``; set it to ``off`` to decode every
    epoch); False: decode every epoch. Raises `DatasetNotFoundError` when ``root`` has no class
    folders of images.
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
    cache_root = default_root() if cache is True else Path(cache) if cache else None
    return ImageFolder(
        split, tuple(files), np.asarray(labels, np.int32), classes, tuple(image_size), workers, cache_root
    )


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


def _decoding_worker(index: int, count: int) -> None:
    """Grain's start of decoding worker ``index`` of ``count``: it runs at a lower priority
    (niceness +`WORKER_NICENESS`) than the training step, so where the step and the workers want
    more cores than there are, the workers decode with what the step leaves (on 2 cores, end to
    end 0.97 of the step alone against 0.92; `benchmarks/image_folder.py`)."""
    os.nice(WORKER_NICENESS)


def _seed(key: jax.Array, epoch: int | None) -> int:
    if epoch is None:
        raise ValueError(
            "shuffling an image folder with a key needs the epoch: batches(data, B, key=key, epoch=e)"
        )
    return int(jax.random.randint(jax.random.fold_in(key, epoch), (), 0, 2**31 - 1))
