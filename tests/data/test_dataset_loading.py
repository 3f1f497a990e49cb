import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from jaxconv.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
    DatasetError,
    DatasetNotFoundError,
    load,
    names,
    search_dirs,
)
from jaxconv.data import datasets as datasets_module

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No $JAXCONV_DATA, and an empty user cache under tmp_path/cache."""
    monkeypatch.delenv("JAXCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def isolated(clean_env, monkeypatch):
    """clean_env, and Fashion-MNIST's system directory moved to tmp_path/system."""
    spec = datasets_module._SPECS["fashion_mnist"]
    system = (clean_env / "system",)
    monkeypatch.setitem(
        datasets_module._SPECS, "fashion_mnist", dataclasses.replace(spec, system_dirs=system)
    )
    return clean_env


@pytest.mark.parametrize("compress", [True, False])
def test_load_from_root(isolated, files, compress):
    files.idx_dataset(isolated / "data", compress=compress)
    train = load("mnist", "train", root=isolated / "data")
    test = load("mnist", "test", root=isolated / "data")
    assert train.images.shape == (3, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and test.images.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(train.labels, [0, 1, 2])
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [0, 11, 22])  # 10 * label + index
    assert len(train) == 3 and train.name == "mnist" and train.split == "train"


def test_alternative_file_names(isolated, files):
    images, labels = files.images(2)
    files.write(isolated / "mnist" / "t10k-images.idx3-ubyte", files.idx(images))
    files.write(isolated / "mnist" / "t10k-labels.idx1-ubyte", files.idx(labels))
    assert len(load("mnist", "test", root=isolated)) == 2


@pytest.mark.parametrize(
    ("env_subdir", "name"),
    [("", "fashion_mnist"), ("fashion_mnist", "fashion_mnist"), ("fashion-mnist", "fashion-mnist"),
     ("mnist", "MNIST")],
)  # fmt: skip
def test_load_from_jaxconv_data(isolated, monkeypatch, files, env_subdir, name):
    files.idx_dataset(isolated / "env" / env_subdir)
    monkeypatch.setenv("JAXCONV_DATA", str(isolated / "env"))
    assert load(name, "test").images.shape == (2, 28, 28, 1)


def test_load_from_system_dir_and_cache(isolated, files):
    files.idx_dataset(isolated / "cache" / "jaxconv" / "mnist")
    assert len(load("mnist", "train")) == 3
    files.idx_dataset(isolated / "system")
    assert len(load("fashion_mnist", "train")) == 3


def test_search_order(isolated, monkeypatch, files):
    """Each place holds labels offset by a different amount, to tell them apart."""
    places = [
        isolated / "cache" / "jaxconv" / "fashion_mnist",
        isolated / "system",
        isolated / "env",
        isolated / "env" / "fashion_mnist",
        isolated / "root",
    ]
    monkeypatch.setenv("JAXCONV_DATA", str(isolated / "env"))
    for offset, place in enumerate(places, start=1):
        files.idx_dataset(place, label_offset=offset)
        root = place if place.name == "root" else None
        assert load("fashion_mnist", "test", root=root).labels[0] == offset
    assert search_dirs("fashion_mnist", root=isolated / "root") == [
        isolated / "root",
        isolated / "root" / "fashion_mnist",
        isolated / "root" / "fashion-mnist",
        isolated / "env" / "fashion_mnist",
        isolated / "env" / "fashion-mnist",
        isolated / "env",
        isolated / "system",
        isolated / "cache" / "jaxconv" / "fashion_mnist",
    ]


def test_a_directory_without_the_split_is_skipped(isolated, monkeypatch, files):
    monkeypatch.setenv("JAXCONV_DATA", str(isolated / "env"))
    files.idx_dataset(isolated / "env", splits=("train",), label_offset=1)
    files.idx_dataset(isolated / "system", label_offset=5)
    assert load("fashion_mnist", "train").labels[0] == 1
    assert load("fashion_mnist", "test").labels[0] == 5


def test_not_found_lists_every_place_and_how_to_get_it(isolated, monkeypatch, files):
    monkeypatch.setenv("JAXCONV_DATA", str(isolated / "env"))
    files.idx_dataset(isolated / "env", splits=("train",))
    with pytest.raises(DatasetNotFoundError) as error:
        load("fashion_mnist", "test")
    cache = isolated / "cache" / "jaxconv" / "fashion_mnist"
    assert str(error.value) == (
        "Fashion-MNIST test split not found. Searched, in order:\n"
        f"  {isolated}/env/fashion_mnist  (no such directory)\n"
        f"  {isolated}/env/fashion-mnist  (no such directory)\n"
        f"  {isolated}/env  (missing t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz))\n"
        f"  {isolated}/system  (no such directory)\n"
        f"  {cache}  (no such directory)\n"
        "To get it, install the Debian/Ubuntu package (it puts the files in "
        "/usr/share/datasets/fashion-mnist):\n"
        "    sudo apt-get install dataset-fashion-mnist\n"
        "or download the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not)\n"
        "from https://github.com/zalandoresearch/fashion-mnist (data/fashion/) into "
        f"{cache}\n"
        "(or set $JAXCONV_DATA, or pass load(..., root=...), to a directory that has them)."
    )
    assert isinstance(error.value, FileNotFoundError)
    assert isinstance(error.value, DatasetError) and isinstance(error.value, ValueError)


def test_not_found_mnist_and_cifar_name_the_files(isolated):
    root = isolated / "mine"
    with pytest.raises(DatasetNotFoundError, match=r"data directory .*mine does not exist"):
        load("mnist", root=root)  # and does not go on to look elsewhere
    root.mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"(?s)ossci-datasets.*into " + re.escape(str(root))):
        load("mnist", root=root)
    with pytest.raises(
        DatasetNotFoundError,
        match=r"(?s)missing cifar-10-batches-bin/data_batch_1.bin, .*cifar-10-binary.tar.gz",
    ):
        load("cifar10", root=root)


def test_unknown_name_and_split(isolated):
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; valid names: cifar10, "
                       "fashion_mnist, imagefolder, mnist$"):  # fmt: skip
        load("imagenet")
    with pytest.raises(ValueError, match="did you mean 'fashion_mnist'"):
        load("fashion_mnst")
    with pytest.raises(ValueError, match=r"unknown split 'val' for MNIST; valid splits: \('train', "):
        load("mnist", "val")
    assert names() == ["cifar10", "fashion_mnist", "imagefolder", "mnist"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("counts", "3 images but 2 labels"),
        ("label", r"label 10 out of range for MNIST's 10 classes \(0-9\)"),
        ("size", r"MNIST images are \(N, H, W, C\) = \(N, 28, 28, 1\), got \(2, 27, 28, 1\)"),
    ],
)
def test_inconsistent_files(isolated, files, case, message):
    images, labels = files.images(3 if case == "counts" else 2)
    if case == "label":
        labels[1] = 10
    if case == "size":
        images = images[:, 1:]
    files.write(isolated / "t10k-images-idx3-ubyte", files.idx(images))
    files.write(isolated / "t10k-labels-idx1-ubyte", files.idx(labels[:2]))
    with pytest.raises(DatasetError, match=message):
        load("mnist", "test", root=isolated)


def test_metadata(isolated, files):
    fashion = load("fashion_mnist", "test", root=files.idx_dataset(isolated / "d"))
    assert fashion.class_names == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    assert fashion.num_classes == 10
    assert (fashion.mean, fashion.std) == (FASHION_MNIST_MEAN, FASHION_MNIST_STD) == ((0.286,), (0.353,))
    mnist = load("mnist", "test", root=isolated / "d")
    assert mnist.class_names == tuple("0123456789")
    assert (mnist.mean, mnist.std) == (MNIST_MEAN, MNIST_STD) == ((0.1307,), (0.3081,))
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    assert repr(mnist) == (
        "Dataset(name='mnist', split='test', images=uint8[2, 28, 28, 1], labels=int32[2], num_classes=10)"
    )


@pytest.mark.skipif(
    not (DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="needs the Debian package dataset-fashion-mnist",
)
def test_real_fashion_mnist_from_the_debian_package(clean_env):
    test = load("fashion_mnist", "test")
    assert test.images.shape == (10000, 28, 28, 1) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert test.class_names[test.labels[0]] == "Ankle boot"  # the well-known first test image
    train = load("fashion_mnist", "train")
    assert train.images.shape == (60000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
    counts = np.bincount(train.images.reshape(-1), minlength=256)  # how many pixels of each value
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - FASHION_MNIST_MEAN[0]) < 5e-4  # the published statistics match the data
    assert abs(std - FASHION_MNIST_STD[0]) < 5e-4
