"""What a worker does to one batch of an image folder's files: decode, resize, crop, or read the
decoded pixels back from the folder's pixel cache.

A batch is a list of ``(index, path, label)`` records. Every image becomes a *slot* image first:
Pillow decodes it (a JPEG at least twice the slot's size at libjpeg's reduced scale), converts it
to the channels wanted (1: 'L', 3: 'RGB') and resizes it, bilinearly, to the slot's (h, w): the
final (H, W) for evaluation, 9/8 of it for training, which then crops (H, W) at a random place.
With a pixel cache (`jaxconv.data.pixel_cache`) a decoding pass writes each slot image into the
cache, and a cached pass reads it instead of decoding: the crops are drawn from the batch's
generator in the same order either way, so both passes give the same batch.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxconv.data.pixel_cache import read_rows, write_rows

CROP_MARGIN = 9 / 8  # the training split is resized to this times (H, W), then cropped
FORMATS = ("JPEG", "PNG")  # the formats Pillow tries, whatever a file's extension says
Record = tuple[int, str, int]  # (index of the file in the split, path, label)


def slot_shape(size: tuple[int, int, int], crop: bool) -> tuple[int, int, int]:
    """The (h, w, c) an image is resized to before its crop: 9/8 of ``size`` (H, W, C) if
    ``crop``, else ``size`` itself."""
    if not crop:
        return tuple(size)
    return (int(np.ceil(CROP_MARGIN * size[0])), int(np.ceil(CROP_MARGIN * size[1])), size[2])


def load_batch(
    records: list[Record],
    rng: np.random.Generator | None = None,
    *,
    size: tuple[int, int, int],
    crop: bool = False,
    cache_path: str | None = None,
    cached: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A worker's batch of ``records``: ``images`` (B, H, W, C) uint8 (zeros for an unreadable
    file), ``labels`` (B,), ``ok`` (B,) bool for the readable rows, ``bad`` [(path, why)] of the
    others and ``indices`` (B,). ``crop``: random crops drawn from ``rng``. ``cache_path``: the
    pixel file to write the decoded slots into, or, with ``cached`` (the cache's unreadable files,
    path -> why), to read them from."""
    slot = slot_shape(size, crop)
    indices = [index for index, _, _ in records]
    if cached is not None:
        pixels = list(read_rows(cache_path, indices, slot))
        found = [
            (None, cached[path]) if path in cached else (row, "")
            for row, (_, path, _) in zip(pixels, records, strict=True)
        ]
    else:
        found = [_decode(path, slot) for _, path, _ in records]
        if cache_path is not None:
            write_rows(cache_path, indices, [row for row, _ in found])
    images = np.zeros((len(records), *size), np.uint8)
    for image, (row, _) in zip(images, found, strict=True):
        top, left = (
            (rng.integers(0, slot[0] - size[0] + 1), rng.integers(0, slot[1] - size[1] + 1))
            if crop
            else (0, 0)
        )
        if row is not None:
            image[:] = row[top : top + size[0], left : left + size[1]]
    return {
        "images": images,
        "labels": np.asarray([label for _, _, label in records], np.int32),
        "ok": np.asarray([row is not None for row, _ in found], bool),
        "bad": [(path, why) for (_, path, _), (row, why) in zip(records, found, strict=True) if row is None],
        "indices": np.asarray(indices, np.int64),
    }


def _decode(path: str, slot: tuple[int, int, int]) -> tuple[np.ndarray | None, str]:
    """(the slot image (h, w, c) uint8, "") of the file at ``path``, or (None, why) when Pillow
    cannot read it: a worker never fails on a bad file."""
    from PIL import Image  # in the worker processes

    mode = "L" if slot[2] == 1 else "RGB"
    try:
        with open(path, "rb") as file:  # one read: Pillow's parser reads a file in small pieces
            data = io.BytesIO(file.read())
        with Image.open(data, formats=FORMATS) as image:
            image.draft(mode, (slot[1], slot[0]))
            if image.mode != mode:
                image = image.convert(mode)
            if image.size != (slot[1], slot[0]):
                image = image.resize((slot[1], slot[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, np.uint8).reshape(slot), ""
    except Exception as error:  # anything Pillow raises on a bad file
        return None, f"{type(error).__name__}: {error}"
