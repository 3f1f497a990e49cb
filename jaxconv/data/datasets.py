"""Image classification datasets on the local disk: MNIST, Fashion-MNIST, CIFAR-10.

Nothing is downloaded. `load` looks for the files, in order, in

1. ``root``, when given: ``root/`` and ``root/<name>/``;
2. ``$JAXCONV_DATA/<name>/`` and ``$JAXCONV_DATA/``;
3. the system location of a distribution package (Fashion-MNIST:
   ``/usr/share/datasets/fashion-mnist``, from Debian's
   ``dataset-fashion-mnist``);
4. the user cache, ``$XDG_CACHE_HOME/jaxconv/<name>/`` (default
   ``~/.cache/jaxconv/<name>/``),

and raises `DatasetNotFoundError` with every place searched and how to get the
files when none holds them. ``<name>`` may also be spelled with a hyphen
(``fashion-mnist``, ``cifar-10``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxconv.data.cifar import read_cifar10_batch
from jaxconv.data.folder import ImageFolder, image_folder
from jaxconv.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from jaxconv.errors import DatasetError, DatasetNotFoundError

FOLDER = "imagefolder"  # the name `load` takes for root/<class>/<image>

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLITS",
    "Dataset",
    "load",
    "names",
    "search_dirs",
]

# Per-channel mean and standard deviation of the training images scaled to [0, 1].
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a labelled image dataset, in host memory.

    Attributes:
      name: the registry name: 'mnist', 'fashion_mnist' or 'cifar10'.
      split: 'train' or 'test'.
      images: (N, H, W, C) uint8.
      labels: (N,) int32, each in [0, num_classes).
      class_names: the name of each class, indexed by label.
      mean, std: per-channel statistics of the training images in [0, 1],
        the arguments `normalize` expects.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels), the form `batches` iterates over."""
        return self.images, self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, "
            f"images={self.images.dtype}{list(self.images.shape)}, "
            f"labels={self.labels.dtype}{list(self.labels.shape)}, "
            f"num_classes={self.num_classes})"
        )


# One required file: the names it may go by, relative to a searched directory.
Alternatives = tuple[str, ...]


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dir_names: tuple[str, ...]
    system_dirs: tuple[Path, ...]
    files: Callable[[str], list[Alternatives]]
    read: Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]
    how_to_get: str


def _idx_files(split: str) -> list[Alternatives]:
    prefix = "train" if split == "train" else "t10k"
    return [
        tuple(f"{prefix}-{kind}{sep}idx{rank}-ubyte{gz}" for sep in "-." for gz in ("", ".gz"))
        for kind, rank in (("images", 3), ("labels", 1))
    ]


def _read_idx_pair(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = paths
    images = read_idx(images_path, magic=IMAGES_MAGIC)[..., None]  # (N, H, W, 1)
    labels = read_idx(labels_path, magic=LABELS_MAGIC).astype(np.int32)
    return images, labels


def _cifar10_files(split: str) -> list[Alternatives]:
    stems = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return [(f"cifar-10-batches-bin/{stem}.bin", f"{stem}.bin") for stem in stems]


def _read_cifar10(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*(read_cifar10_batch(path) for path in paths), strict=True)
    return np.concatenate(images), np.concatenate(labels)


_IDX_FILES = (
    "the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not)"
)

_FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_SPECS = {
    spec.name: spec
    for spec in (
        _Spec(
            name="mnist",
            title="MNIST",
            class_names=tuple(str(digit) for digit in range(10)),
            image_shape=(28, 28, 1),
            mean=MNIST_MEAN,
            std=MNIST_STD,
            dir_names=("mnist",),
            system_dirs=(),
            files=_idx_files,
            read=_read_idx_pair,
            how_to_get=f"download {_IDX_FILES}\nfrom a mirror such as "
            "https://ossci-datasets.s3.amazonaws.com/mnist/ into {target}",
        ),
        _Spec(
            name="fashion_mnist",
            title="Fashion-MNIST",
            class_names=_FASHION_MNIST_CLASSES,
            image_shape=(28, 28, 1),
            mean=FASHION_MNIST_MEAN,
            std=FASHION_MNIST_STD,
            dir_names=("fashion_mnist", "fashion-mnist"),
            system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
            files=_idx_files,
            read=_read_idx_pair,
            how_to_get="install the Debian/Ubuntu package (it puts the files in "
            "/usr/share/datasets/fashion-mnist):\n"
            "    sudo apt-get install dataset-fashion-mnist\n"
            f"or download {_IDX_FILES}\nfrom "
            "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) into {target}",
        ),
        _Spec(
            name="cifar10",
            title="CIFAR-10",
            class_names=_CIFAR10_CLASSES,
            image_shape=(32, 32, 3),
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            dir_names=("cifar10", "cifar-10"),
            system_dirs=(),
            files=_cifar10_files,
            read=_read_cifar10,
            how_to_get="download the binary version and extract it:\n"
            "    wget https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz\n"
            "    mkdir -p {target} && tar xzf cifar-10-binary.tar.gz -C {target}\n"
            "which creates cifar-10-batches-bin/ with data_batch_1.bin ... data_batch_5.bin "
            "and test_batch.bin",
        ),
    )
}


def names() -> list[str]:
    """The dataset names `load` accepts."""
    return sorted([*_SPECS, FOLDER])


def search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories `load(name, root=root)` searches, in order (existing or not)."""
    spec = _spec(name)
    dirs: list[Path] = []
    if root is not None:
        dirs += [Path(root), *(Path(root, d) for d in spec.dir_names)]
    if env := os.environ.get("JAXCONV_DATA"):
        dirs += [*(Path(env, d) for d in spec.dir_names), Path(env)]
    dirs += spec.system_dirs
    dirs.append(_cache_dir() / spec.name)
    return _dedupe(dirs)


def load(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None, **options: Any
) -> Dataset | ImageFolder:
    """Load one split of a dataset from local files; nothing is downloaded.

    Args:
      name: 'mnist', 'fashion_mnist' or 'cifar10' (case, '-' and '_' are ignored).
      split: 'train' (60,000 MNIST / Fashion-MNIST or 50,000 CIFAR-10 examples)
        or 'test' (10,000).
      root: a directory to look in first, before the default places
        (see the module docstring for the search order); for 'imagefolder', the folder.
      options: for 'imagefolder' only, `jaxconv.data.folder.image_folder`'s ``image_size``,
        ``holdout`` and ``workers``.

    Returns:
      A `Dataset` with images (N, H, W, C) uint8 and labels (N,) int32:
      (N, 28, 28, 1) for MNIST and Fashion-MNIST, (N, 32, 32, 3) for CIFAR-10; for
      'imagefolder' an `ImageFolder`, streamed in batches (``root/<class>/<image>``).

    Raises:
      ValueError: for an unknown name or split.
      DatasetNotFoundError: when no searched directory has the split's files.
      DatasetError: when the files are corrupt or disagree with each other.
    """
    if name.lower().replace("-", "").replace("_", "") == FOLDER:
        if root is None:
            raise DatasetNotFoundError(
                "an image folder needs its root: load('imagefolder', split, root=PATH)"
            )
        return image_folder(root, split, **options)
    spec = _spec(name)
    if options:
        raise ValueError(f"{spec.title} takes no options; {sorted(options)} are for 'imagefolder'")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {spec.title}; valid splits: {SPLITS}")
    paths = _locate(spec, split, root)
    images, labels = spec.read(paths)
    _check(spec, images, labels, paths)
    return Dataset(spec.name, split, images, labels, spec.class_names, spec.mean, spec.std)


def _spec(name: str) -> _Spec:
    key = name.lower().replace("-", "").replace("_", "")
    for spec in _SPECS.values():
        if spec.name.replace("_", "") == key:
            return spec
    close = difflib.get_close_matches(name.lower(), _SPECS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}{hint}")


def _locate(spec: _Spec, split: str, root: str | os.PathLike[str] | None) -> list[Path]:
    """The split's files from the first directory that has them all."""
    if root is not None and not Path(root).is_dir():
        raise DatasetNotFoundError(
            f"the data directory {root} does not exist or is not a directory; give the directory that "
            f"holds the {spec.title} files (--data-dir; create it first), or leave it out to search the "
            "default places"
        )
    required = spec.files(split)
    report = []
    for directory in search_dirs(spec.name, root):
        if not directory.is_dir():
            report.append(f"  {directory}  (no such directory)")
            continue
        found = [_first_file(directory, alternatives) for alternatives in required]
        if all(path is not None for path in found):
            return found  # type: ignore[return-value]
        missing = [_display(alts) for alts, path in zip(required, found, strict=True) if not path]
        report.append(f"  {directory}  (missing {', '.join(missing)})")
    target = Path(root) if root is not None else _cache_dir() / spec.name
    raise DatasetNotFoundError(
        f"{spec.title} {split} split not found. Searched, in order:\n"
        + "\n".join(report)
        + "\nTo get it, "
        + spec.how_to_get.format(target=target)
        + "\n(or set $JAXCONV_DATA, or pass load(..., root=...), to a directory that has them)."
    )


def _display(alternatives: Alternatives) -> str:
    """'train-images-idx3-ubyte(.gz)' for a file that may be gzipped, else the first name."""
    name = alternatives[0]
    return f"{name}(.gz)" if f"{name}.gz" in alternatives else name


def _first_file(directory: Path, alternatives: Sequence[str]) -> Path | None:
    return next((directory / n for n in alternatives if (directory / n).is_file()), None)


def _check(spec: _Spec, images: np.ndarray, labels: np.ndarray, paths: list[Path]) -> None:
    files = ", ".join(map(str, paths))
    if images.shape[1:] != spec.image_shape:
        raise DatasetError(
            f"{files}: {spec.title} images are (N, H, W, C) = (N, "
            f"{', '.join(map(str, spec.image_shape))}), got {images.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(f"{files}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(spec.class_names):
        raise DatasetError(
            f"{files}: label {labels.max()} out of range for {spec.title}'s "
            f"{len(spec.class_names)} classes (0-{len(spec.class_names) - 1})"
        )


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxconv"


def _dedupe(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))
