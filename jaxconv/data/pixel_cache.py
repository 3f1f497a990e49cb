"""An image folder's decoded pixels on disk, so that the epochs after the first skip decoding.

One raw file of N slots, slot ``i`` holding file ``i``'s pixels as (h, w, c) uint8 (the training
split's 9/8-size image before its random crop, the test split's final image), beside a record of
which slots are filled and which files could not be read. Decoding workers write their rows with
``os.pwrite`` (each slot is one file's, so processes never collide); readers use ``os.pread``. The
pixels live in the file and the operating system's page cache, not in any process's memory.

The cache's directory is named by a digest of the files' paths, sizes and modification times and
the slot shape: a changed folder gets a new cache. The default root is ``$JAXCONV_CACHE`` or
``~/.cache/jaxconv/image-folders``; ``JAXCONV_CACHE=off`` turns caching off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VERSION = 1


def default_root() -> Path | None:
    """Where caches go: ``$JAXCONV_CACHE``, else ``~/.cache/jaxconv/image-folders``; None (no
    cache) when ``$JAXCONV_CACHE`` is ``off``."""
    chosen = os.environ.get("JAXCONV_CACHE")
    if chosen and chosen.lower() == "off":
        return None
    return Path(chosen) if chosen else Path.home() / ".cache" / "jaxconv" / "image-folders"


class PixelCache:
    """The decoded pixels of ``files`` at ``shape`` (h, w, c), under ``root``.

    ``filled`` (N,) bool says which slots hold pixels, ``skipped`` maps the unreadable files to why;
    `complete` once every file is one or the other. `record` marks what a decoding pass wrote and
    `save` keeps that record for the next epoch and the next program.
    """

    def __init__(self, root: str | os.PathLike[str], files: Sequence[str], shape: tuple[int, int, int]):
        self.shape, self.count = tuple(shape), len(files)
        self.directory = Path(root) / _digest(files, self.shape)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pixels_path = str(self.directory / "pixels.u8")
        with open(self.pixels_path, "ab") as pixels:  # created once, never shrunk
            if pixels.tell() < self.count * self.slot_bytes:
                pixels.truncate(self.count * self.slot_bytes)
        self.filled, self.skipped = self._load()

    @property
    def slot_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def complete(self) -> bool:
        return int(self.filled.sum()) + len(self.skipped) >= self.count

    def record(self, indices: np.ndarray, ok: np.ndarray, bad: dict[str, str]) -> None:
        """Mark the slots ``indices[ok]`` filled and the unreadable files ``bad`` (path -> why)."""
        self.filled[np.asarray(indices)[np.asarray(ok, bool)]] = True
        self.skipped.update(bad)

    def save(self) -> None:
        """Write the record of filled slots and unreadable files (atomically: a rename)."""
        state = {"version": VERSION, "filled": np.flatnonzero(self.filled).tolist(), "skipped": self.skipped}
        temporary = self.directory / "index.json.tmp"
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.directory / "index.json")

    def _load(self) -> tuple[np.ndarray, dict[str, str]]:
        filled = np.zeros(self.count, bool)
        try:
            state = json.loads((self.directory / "index.json").read_text())
        except (OSError, ValueError):  # no record yet, or a torn one: decode again
            return filled, {}
        if state.get("version") != VERSION:
            return filled, {}
        filled[np.asarray(state["filled"], np.int64)] = True
        return filled, dict(state["skipped"])


def write_rows(path: str, indices: Sequence[int], rows: Sequence[np.ndarray | None]) -> None:
    """Write each row (h, w, c) uint8 into its slot of the pixel file ``path`` (None: skip it)."""
    descriptor = os.open(path, os.O_WRONLY)
    try:
        for index, row in zip(indices, rows, strict=True):
            if row is not None:
                data = np.ascontiguousarray(row, np.uint8)
                os.pwrite(descriptor, data.tobytes(), int(index) * data.nbytes)
    finally:
        os.close(descriptor)


def read_rows(path: str, indices: Sequence[int], shape: tuple[int, int, int]) -> np.ndarray:
    """(len(indices), h, w, c) uint8: the slots ``indices`` of the pixel file ``path``."""
    rows = np.empty((len(indices), *shape), np.uint8)
    size = rows[0].nbytes if len(indices) else 0
    descriptor = os.open(path, os.O_RDONLY)
    try:
        for row, index in zip(rows, indices, strict=True):
            row.reshape(-1)[:] = np.frombuffer(os.pread(descriptor, size, int(index) * size), np.uint8)
    finally:
        os.close(descriptor)
    return rows


def _digest(files: Sequence[str], shape: tuple[int, ...]) -> str:
    """A name for the cache of ``files`` at ``shape``: their paths, sizes and modification times."""
    digest = hashlib.sha256(f"{VERSION} {shape}".encode())
    for path in files:
        status = os.stat(path)
        digest.update(f"\n{os.path.abspath(path)} {status.st_size} {status.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]
