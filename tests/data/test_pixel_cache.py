"""The pixel cache of an image folder: epochs read from it equal epochs decoded by Pillow, bit
for bit (crops included), and the cache follows the files it was made from.

The images are random noise of several sizes (PNG, so lossless, and JPEG), so that a crop taken
at a different place, or a different resize, changes the pixels; one file is not an image.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from PIL import Image

import jaxconv as jc
from jaxconv.data import folder_decode
from jaxconv.data.pixel_cache import PixelCache, read_rows, write_rows

SIZE = (8, 8, 3)


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(7):
            pixels = rng.integers(0, 256, (10 + 3 * i, 12 + 2 * i, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "b" / "broken.png").write_bytes(b"not a PNG at all")
    return root


def _epoch(data, epoch: int, batch: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    key = None if epoch < 0 else jax.random.key(7)
    stream = data.epoch_batches(batch, key, None if epoch < 0 else epoch, drop_remainder=False)
    return [(np.asarray(images), np.asarray(labels)) for images, labels in stream]


@pytest.mark.parametrize("split", ["train", "test"])
def test_cached_epochs_equal_decoded_epochs(noise_folder, tmp_path, split, monkeypatch):
    load = {"root": noise_folder, "image_size": SIZE, "workers": 0, "holdout": 0.3}
    cached = jc.data.load("imagefolder", split, cache=tmp_path, **load)
    plain = jc.data.load("imagefolder", split, cache=False, **load)
    epochs = [0, 3] if split == "train" else [-1]
    _epoch(cached, epochs[0])  # decodes, and fills the cache
    cache = cached._pixel_cache(crop=split == "train")
    assert cache.complete and (cache.directory / "index.json").exists()
    expected = {epoch: _epoch(plain, epoch) for epoch in epochs}

    def no_decoding(*args):
        raise AssertionError("a cached epoch decoded an image")

    monkeypatch.setattr(folder_decode, "_decode", no_decoding)
    for epoch in epochs:
        got = _epoch(cached, epoch)
        assert len(got) == len(expected[epoch]) > 0
        for (images, labels), (want_images, want_labels) in zip(got, expected[epoch], strict=True):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)
    if split == "train":  # the crops move between epochs: equal batches are not a given
        assert any(not np.array_equal(a[0], b[0]) for a, b in zip(*expected.values(), strict=True))
    assert cached.skipped.keys() == plain.skipped.keys() and len(cached) == len(plain)


def test_a_later_program_reads_the_saved_cache(noise_folder, tmp_path):
    load = {"root": noise_folder, "image_size": SIZE, "workers": 0, "holdout": 0.3, "cache": tmp_path}
    _epoch(jc.data.load("imagefolder", "test", **load), -1)
    again = jc.data.load("imagefolder", "test", **load)
    cache = again._pixel_cache(crop=False)
    assert cache.complete and len(again.skipped) == ("b/broken.png" in str(again.files))


def test_the_cache_follows_the_files(noise_folder, tmp_path):
    files = sorted(str(path) for path in noise_folder.glob("a/*"))
    first = PixelCache(tmp_path, files, SIZE)
    assert PixelCache(tmp_path, files, SIZE).directory == first.directory
    assert PixelCache(tmp_path, files, (4, 4, 3)).directory != first.directory
    status = os.stat(files[0])
    os.utime(files[0], ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    assert PixelCache(tmp_path, files, SIZE).directory != first.directory


def test_rows_round_trip_and_a_torn_record_decodes_again(tmp_path):
    files = [str(tmp_path / f"{i}") for i in range(5)]
    for path in files:
        open(path, "w").close()
    cache = PixelCache(tmp_path / "cache", files, (2, 3, 1))
    rows = np.arange(5 * 6, dtype=np.uint8).reshape(5, 2, 3, 1)
    write_rows(cache.pixels_path, [4, 1], [rows[4], rows[1]])
    np.testing.assert_array_equal(
        read_rows(cache.pixels_path, [1, 4, 0], (2, 3, 1)), [rows[1], rows[4], 0 * rows[0]]
    )
    cache.record(np.array([4, 1]), np.array([True, True]), {files[2]: "OSError"})
    cache.save()
    reopened = PixelCache(tmp_path / "cache", files, (2, 3, 1))
    assert reopened.filled.tolist() == [False, True, False, False, True] and reopened.skipped == {
        files[2]: "OSError"
    }
    (cache.directory / "index.json").write_text('{"version": 1, "fill')
    assert not PixelCache(tmp_path / "cache", files, (2, 3, 1)).filled.any()
