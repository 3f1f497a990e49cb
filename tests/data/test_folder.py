"""Image folders through Grain: the splits, the decoding, the skipped files.

The folder is generated (`synthetic.write_folder`): three classes of PNG and JPEG images of
several sizes, each class a flat colour (so the decoded pixels can be checked against the colour
written), one grayscale PNG and one file that is not an image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import jaxconv as jc
from jaxconv.data.folder import WORKER_NICENESS
from jaxconv.errors import DatasetError, DatasetNotFoundError

sys.path.insert(0, str(Path(__file__).parents[1] / "runs"))
from synthetic import COLOURS, CORRUPT, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images"))


def test_held_out_split_labels_and_decoded_colours(folder):
    train = jc.data.load("imagefolder", "train", root=folder, image_size=(8, 8, 3), workers=0)
    test = jc.data.load("imagefolder", "test", root=folder, image_size=(8, 8, 3), workers=0)
    assert train.class_names == test.class_names == ("cat", "dog", "owl")
    assert len(train) + len(test) == 3 * 6 + 2 and len(test) == 2  # ceil(10% of 20)
    assert not set(train.files) & set(test.files)
    seen = 0
    for images, labels in jc.data.batches(train, 3, key=jax.random.key(0), epoch=0):
        assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
        for image, label in zip(np.asarray(images), np.asarray(labels), strict=True):
            colour = np.asarray(COLOURS[train.class_names[label]])
            if not (image == image[..., :1]).all():  # the grayscale cat reads as R = G = B
                assert np.abs(image.astype(int) - colour).max() <= 3  # JPEG's rounding
            seen += 1
    expected = len(train.files) - (Path(folder, CORRUPT).as_posix() in train.files)
    assert seen == expected // 3 * 3 and len(train) == expected


def test_an_unreadable_file_is_named_skipped_and_counted(folder, capsys):
    data = jc.data.load("imagefolder", "train", root=folder, image_size=(8, 8, 1), workers=1, holdout=0.05)
    broken = str(folder / CORRUPT)
    assert broken in data.files and len(data) == len(data.files)
    labels = [np.asarray(b[1]) for b in jc.data.batches(data, 4, drop_remainder=False)]
    assert data.skipped.keys() == {broken} and "UnidentifiedImageError" in data.skipped[broken]
    assert f"skipping unreadable image {broken}" in capsys.readouterr().err
    assert len(data) == len(data.files) - 1
    np.testing.assert_array_equal(np.concatenate(labels), data.labels)  # stored order, skip left out


def test_train_and_val_directories(tmp_path):
    write_folder(tmp_path / "train", per_class=2)
    (tmp_path / "val" / "owl").mkdir(parents=True)
    Image.new("RGB", (9, 9), COLOURS["owl"]).save(tmp_path / "val" / "owl" / "0.png")
    test = jc.data.load("imagefolder", "test", root=tmp_path, image_size=(4, 4, 3), workers=0)
    assert test.class_names == ("cat", "dog", "owl") and test.labels.tolist() == [2]
    ((images, labels),) = jc.data.batches(test, 1)
    assert np.asarray(labels).tolist() == [2]
    assert (np.asarray(images) == COLOURS["owl"]).all()


def test_folders_that_cannot_be_read_are_refused(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        jc.data.load("imagefolder", root=tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="has no class folders"):
        jc.data.load("imagefolder", root=tmp_path / "empty")
    write_folder(tmp_path / "two" / "train", per_class=1)
    with pytest.raises(DatasetNotFoundError, match="no val/ or test/"):
        jc.data.load("imagefolder", "test", root=tmp_path / "two")
    (tmp_path / "two" / "val" / "yak").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"class folders \['yak'\] that the training split lacks"):
        jc.data.load("imagefolder", "test", root=tmp_path / "two")
    with pytest.raises(ValueError, match="takes no options"):
        jc.data.load("mnist", image_size=(28, 28, 1))


def test_an_epoch_continues_from_the_position_after_any_batch(folder):
    """Grain's iterator state in the position: batches after the k-th, read by a new iterator (a
    worker process decoding) from ``position(k)``, are the ones the first iterator gave. The
    corrupt file leaves a workers' batch a row short, so later batches pool rows of two."""
    data = jc.data.load("imagefolder", "train", root=folder, image_size=(8, 8, 3), workers=1, cache=False)
    key = jax.random.key(1)
    first = jc.data.epoch_batches(data, 4, key, 0)
    given = list(first)
    positions = [first.position(k) for k in range(max(0, len(given) - 5), len(given) + 1)]
    pooled = [position for position in positions if position["rows"] > 0]
    assert pooled, positions  # a position inside a workers' batch
    position = pooled[0]
    rest = list(jc.data.epoch_batches(data, 4, key, 0, position=position))
    assert len(rest) == len(given) - position["batches"] > 0
    for (images, labels), (want_images, want_labels) in zip(rest, given[position["batches"] :], strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


def test_decoding_workers_yield_the_cpu_to_the_training_step(folder):
    """A Grain worker decoding a folder runs WORKER_NICENESS above this process."""
    data = jc.data.load("imagefolder", "train", root=folder, image_size=(8, 8, 3), workers=2, cache=False)
    epoch = data.epoch_batches(4, None, None)
    next(epoch)
    niceness = {pid: _niceness(pid) for pid in _descendants(os.getpid())}
    epoch.close()
    assert os.nice(0) + WORKER_NICENESS in niceness.values(), niceness  # beside Python's resource tracker


def _descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` (by any of its threads), and theirs."""
    children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]  # fmt: skip
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _niceness(pid: int) -> int:
    """A process's niceness: field 19 of /proc/PID/stat (after the parenthesised command)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
