import gzip
import re
import struct

import numpy as np
import pytest

from jaxconv.data import IMAGES_MAGIC, LABELS_MAGIC, DatasetError, read_idx

# Two 2 x 3 uint8 images, spelled out byte by byte.
IMAGES_FILE = (
    b"\x00\x00\x08\x03"  # magic: uint8, 3 dims
    b"\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x03"  # 2 x 2 x 3
    b"\x00\x01\x02\x03\x04\x05"
    b"\xfa\xfb\xfc\xfd\xfe\xff"
)
IMAGES = np.array([[[0, 1, 2], [3, 4, 5]], [[250, 251, 252], [253, 254, 255]]], np.uint8)
LABELS_FILE = b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x00\x09"


@pytest.mark.parametrize("compress", [False, True])
def test_reads_raw_and_gzip(tmp_path, compress, files):
    suffix = ".gz" if compress else ""
    images = read_idx(files.write(tmp_path / f"images{suffix}", IMAGES_FILE, compress=compress))
    labels = read_idx(files.write(tmp_path / f"labels{suffix}", LABELS_FILE, compress=compress))
    assert images.dtype == np.uint8 and images.shape == (2, 2, 3)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, [7, 0, 9])
    assert images.flags.writeable


def test_gzip_is_recognised_by_content_not_name(tmp_path, files):
    path = files.write(tmp_path / "train-images-idx3-ubyte", IMAGES_FILE, compress=True)
    np.testing.assert_array_equal(read_idx(path), IMAGES)


def test_accepts_the_expected_magic(tmp_path, files):
    images = read_idx(files.write(tmp_path / "i", IMAGES_FILE), magic=IMAGES_MAGIC)
    labels = read_idx(files.write(tmp_path / "l", LABELS_FILE), magic=LABELS_MAGIC)
    assert images.shape == (2, 2, 3) and labels.shape == (3,)


@pytest.mark.parametrize(
    ("code", "payload", "expected"),
    [
        (0x08, b"\x00\xff", np.array([0, 255], np.uint8)),
        (0x09, b"\x7f\xff", np.array([127, -1], np.int8)),
        (0x0B, b"\x01\x02\xff\xfe", np.array([258, -2], np.int16)),
        (0x0C, b"\x00\x01\x00\x00\xff\xff\xff\xff", np.array([65536, -1], np.int32)),
        (0x0D, struct.pack(">2f", 1.5, -0.25), np.array([1.5, -0.25], np.float32)),
        (0x0E, struct.pack(">2d", 1e300, -2.0), np.array([1e300, -2.0], np.float64)),
    ],
)
def test_general_idx_types_are_big_endian(tmp_path, code, payload, expected, files):
    path = files.write(tmp_path / "x.idx", bytes([0, 0, code, 1]) + b"\x00\x00\x00\x02" + payload)
    array = read_idx(path)
    assert array.dtype == expected.dtype and array.dtype.isnative
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes is too short for an IDX file"),
        (b"\x00\x00\x08", "3 bytes is too short for an IDX file"),
        (b"\x12\x34\x08\x01\x00\x00\x00\x00", "bad magic number 0x12340801: an IDX file starts"),
        (
            b"\x00\x00\x0a\x01\x00\x00\x00\x00",
            "bad magic number 0x00000A01: unknown element type 0x0A; "
            "valid types: 0x08 (uint8), 0x09 (int8), 0x0B (int16)",
        ),
        (IMAGES_FILE[:10], "truncated header: 3 dimensions need 16 header bytes, the file has 10"),
        (
            IMAGES_FILE[:-1],
            "truncated: the header promises 2 x 2 x 3 uint8 = 12 payload bytes after the "
            "16-byte header, got 11 (1 missing)",
        ),
        (
            IMAGES_FILE + b"\x00\x00",
            "too long: the header promises 2 x 2 x 3 uint8 = 12 payload bytes after the "
            "16-byte header, got 14 (2 extra)",
        ),
    ],
    ids=["empty", "short", "bad-magic", "bad-type", "short-header", "truncated", "too-long"],
)
def test_corrupt_files_name_the_file_and_the_problem(tmp_path, data, message, files):
    path = files.write(tmp_path / "corrupt-idx3-ubyte", data)
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {message}")):
        read_idx(path)


def test_unexpected_magic(tmp_path, files):
    path = files.write(tmp_path / "labels", LABELS_FILE)
    message = "magic number 0x00000801 (uint8, 1 dims), expected 0x00000803 (uint8, 3 dims)"
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {message}")):
        read_idx(path, magic=IMAGES_MAGIC)


@pytest.mark.parametrize(
    "data",
    [IMAGES_FILE, gzip.compress(IMAGES_FILE)[:-6], b"\x1f\x8b" + b"\x00" * 20],
    ids=["not-gzip", "truncated-gzip", "bad-gzip-header"],
)
def test_corrupt_gzip(tmp_path, data, files):
    path = files.write(tmp_path / "images.gz", data)
    with pytest.raises(DatasetError, match=re.escape(f"{path}: corrupt gzip file")):
        read_idx(path)
