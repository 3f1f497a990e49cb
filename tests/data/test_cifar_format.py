import re

import numpy as np
import pytest

from jaxconv.data import DatasetError, load, read_cifar10_batch


def pixel(c, h, w):
    return (7 * c + 3 * h + w) % 256


def test_records_become_nhwc(tmp_path, files):
    planes = files.cifar_record(3, lambda c, h, w: (10, 20, 30)[c])  # uniform R=10, G=20, B=30
    path = files.write(tmp_path / "data_batch_1.bin", planes + files.cifar_record(9, pixel))
    images, labels = read_cifar10_batch(path)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [3, 9])
    np.testing.assert_array_equal(images[0, 5, 7], [10, 20, 30])
    assert images[1, 0, 0, 0] == 0 and images[1, 0, 1, 0] == 1 and images[1, 1, 0, 0] == 3
    assert images[1, 0, 0, 1] == 7 and images[1, 2, 5, 2] == 14 + 6 + 5
    expected = np.fromfunction(lambda h, w, c: (7 * c + 3 * h + w) % 256, (32, 32, 3), dtype=int)
    np.testing.assert_array_equal(images[1], expected)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "0 bytes is not a whole, non-zero number of 3073-byte CIFAR-10 records"),
        (2 * 3073 - 5, "6141 bytes is not a whole, non-zero number of 3073-byte CIFAR-10 records "
         "(1 label byte + 3 x 32 x 32 pixels): 1 records and 3068 bytes left over"),
        (3073 + 1, "3074 bytes is not a whole"),
    ],
)  # fmt: skip
def test_size_must_be_whole_records(tmp_path, size, message, files):
    path = files.write(tmp_path / "test_batch.bin", (files.cifar_record(1, pixel) * 2 + b"\0")[:size])
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {message}")):
        read_cifar10_batch(path)


def test_labels_must_be_classes(tmp_path, files):
    path = files.write(tmp_path / "x.bin", files.cifar_record(4, pixel) + files.cifar_record(57, pixel))
    message = "record 1 has label 57, expected 0-9 (1 records out of range; is this a CIFAR-100"
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {message}")):
        read_cifar10_batch(path)


@pytest.mark.parametrize("subdir", ["cifar-10-batches-bin", ""])
def test_load_concatenates_the_five_training_batches_in_order(tmp_path, subdir, files):
    directory = tmp_path / subdir
    for i in range(1, 6):
        files.write(
            directory / f"data_batch_{i}.bin", files.cifar_record(i, pixel) + files.cifar_record(0, pixel)
        )
    files.write(directory / "test_batch.bin", files.cifar_record(8, lambda c, h, w: 255))
    train = load("cifar10", "train", root=tmp_path)
    test = load("CIFAR-10", "test", root=tmp_path)
    assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(train.labels, [1, 0, 2, 0, 3, 0, 4, 0, 5, 0])
    np.testing.assert_array_equal(test.labels, [8])
    assert (test.images == 255).all()
    assert train.class_names[8] == "ship" and train.num_classes == 10
