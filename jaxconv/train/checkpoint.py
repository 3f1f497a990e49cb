"""Checkpoints: a pytree of arrays in one ``.npz`` file, written atomically and verified on load.

The file is a NumPy ``.npz`` archive (no pickle) with one entry per leaf,
named by its key path in the tree (``params['conv_0']['kernel']``), and a
``__manifest__`` entry: JSON with the format version, every leaf's path, shape
and dtype, a SHA-256 digest of the leaves' bytes and free-form metadata (the
epoch, the configuration).

`save_checkpoint` writes to a temporary file in the same directory, flushes it
to the disk and renames it over the old file (`os.replace`, atomic on POSIX and
Windows), so an interrupted save leaves the previous checkpoint intact.
`load_checkpoint` restores into the structure of a template tree (the freshly
initialised state) and raises `CheckpointError` when the file is truncated or
corrupt, or was written for another model or optimiser.

In a run of several processes (`jaxconv.distributed.initialize`) every process
calls both: `save_checkpoint` gathers the leaves split over processes, process 0
writes and no process returns before the file is complete; `load_checkpoint`
reads the file (on a filesystem every process sees) and puts each leaf where its
counterpart in the template lives (replicated or split over a mesh).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxconv.core import PyTree
from jaxconv.errors import CheckpointError, DiskFullError

FORMAT = "jaxconv-checkpoint"
VERSION = 1
_MANIFEST = "__manifest__"


def save_checkpoint(
    path: str | os.PathLike[str], tree: PyTree, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the arrays of ``tree`` and JSON-ready ``metadata`` to ``path`` atomically.

    In a run of several processes every process must call it (split arrays are gathered
    collectively); process 0 writes, and no process returns before the file is complete.
    """
    path = Path(path)
    whole = jax.tree_util.tree_map(_whole, tree)
    if jax.process_index() == 0:
        _write(path, whole, metadata)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"jaxconv checkpoint {path}")
    return path


def save_checkpoint_in_background(
    path: str | os.PathLike[str], tree: PyTree, metadata: dict[str, Any] | None = None
) -> Callable[[], Path]:
    """Start `save_checkpoint` in a thread; returns the function that waits for the file (and
    raises its error). The arrays are taken from the device first, so a train step may donate
    ``tree`` once it returns. Several processes gather collectively: they write before returning."""
    if jax.process_count() > 1:
        written = save_checkpoint(path, tree, metadata)
        return lambda: written
    path, host = Path(path), jax.tree_util.tree_map(_to_numpy, tree)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            _write(path, host, metadata)
        except BaseException as error:  # raised again by `wait`, in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=write, name=f"jaxconv: writing {path}", daemon=False)
    thread.start()

    def wait() -> Path:
        thread.join()
        if errors:
            raise errors[0]
        return path

    return wait


def load_checkpoint(path: str | os.PathLike[str], like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Read ``path`` into a tree with the structure, shapes and dtypes of ``like``.

    Each leaf comes back with the placement of its counterpart in ``like`` (a train state
    on one device, or placed on a mesh by `jaxconv.distributed.place_train_state`).

    Returns:
      (tree, metadata).

    Raises:
      CheckpointError: naming the file, if it is missing, unreadable, truncated,
        fails its digest, or its leaves differ from those of ``like`` (another
        model or optimiser).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    manifest, arrays = _read(path)
    expected_paths, treedef = _paths_and_treedef(like)
    if manifest["paths"] != expected_paths:
        missing = sorted(set(expected_paths) - set(manifest["paths"]))
        extra = sorted(set(manifest["paths"]) - set(expected_paths))
        raise CheckpointError(
            f"{path} does not fit this model and optimiser: missing {_few(missing)}, unexpected "
            f"{_few(extra)}; it was written for another configuration"
        )
    leaves = []
    for key_path, template, array in zip(
        expected_paths, jax.tree_util.tree_leaves(like), arrays, strict=True
    ):
        leaves.append(_restore_leaf(path, key_path, template, array))
    return jax.tree_util.tree_unflatten(treedef, leaves), manifest["metadata"]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint, after checking its digest."""
    manifest, _ = _read(Path(path))
    return manifest["metadata"]


def readable_mode() -> int:
    """The mode a new file gets under the process's umask (usually 0o644): `tempfile.mkstemp`'s
    temporary files are 0o600, and a run's files should not stay private once renamed."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# --- helpers -------------------------------------------------------------------------------------


def _write(path: Path, tree: PyTree, metadata: dict[str, Any] | None) -> None:
    """Write the .npz file through a temporary file, flushed to the disk, and a rename."""
    entries, manifest = _flatten(tree)
    manifest["metadata"] = metadata or {}
    entries[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(handle, readable_mode())
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        full = disk_full(error, path, sum(array.nbytes for array in entries.values()))
        if full is not None:
            raise full from None
        raise
    _fsync_directory(path.parent)


def disk_full(error: BaseException, path: Path, needed: int = 0) -> DiskFullError | None:
    """The `DiskFullError` for an ``error`` writing ``path`` that says the disk is full or the
    file too large (``needed`` bytes, if known), in one line that says what to free; None for any
    other error."""
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return None
    size = f"at least {needed / 2**20:.1f} MiB " if needed else ""
    kept = (
        " (the previous checkpoint is kept)"
        if path.exists() and (path.suffix == ".npz" or path.is_dir())  # a file, or Orbax's steps
        else ""
    )
    return DiskFullError(
        f"cannot write {path}: {os.strerror(error.errno)}{kept}; free {size}on the disk of "
        f"{path.parent.absolute()} (or raise the file-size limit, ulimit -f) and try again"
    )


@contextlib.contextmanager
def disk_space(path: Path) -> Iterator[None]:
    """Turn a full disk (or a file-size limit) while writing ``path`` into `DiskFullError`."""
    try:
        yield
    except OSError as error:
        full = disk_full(error, path)
        if full is None:
            raise
        raise full from None


def _whole(leaf: Any) -> Any:
    """The whole value of a leaf on this host: a global array split over processes is gathered
    (every process takes part), a replicated one read from a local copy."""
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        return leaf
    if leaf.sharding.is_fully_replicated:
        return leaf.addressable_data(0)
    return multihost_utils.process_allgather(leaf, tiled=True)


def _flatten(tree: PyTree) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    paths, _ = _paths_and_treedef(tree)
    arrays = [_to_numpy(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "paths": paths,
        "shapes": [list(array.shape) for array in arrays],
        "dtypes": [array.dtype.str for array in arrays],
        "sha256": _digest(arrays),
    }
    return {f"leaf_{i}": array for i, array in enumerate(arrays)}, manifest


def _paths_and_treedef(tree: PyTree) -> tuple[list[str], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(key_path) for key_path, _ in flat], treedef


def _to_numpy(leaf: Any) -> np.ndarray:
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _digest(arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _read(path: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    problem = f"{path} is not a readable jaxconv checkpoint"
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            manifest = json.loads(archive[_MANIFEST].tobytes())
            _check_manifest(problem, manifest)
            _check_sizes(path, archive.zip, len(manifest["paths"]))
            arrays = [archive[f"leaf_{i}"] for i in range(len(manifest["paths"]))]
    except (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, zipfile.BadZipFile) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(
            f"{problem} ({type(error).__name__}: {error}); it is truncated or corrupt. "
            "Resume from an intact checkpoint or start a new run"
        ) from error
    if _digest(arrays) != manifest["sha256"]:
        raise CheckpointError(
            f"{path} is corrupt: its arrays do not match the SHA-256 digest written with them. "
            "Resume from an intact checkpoint or start a new run"
        )
    return manifest, arrays


def _check_manifest(problem: str, manifest: Any) -> None:
    """Raise `CheckpointError` unless ``manifest`` is this format's, with every entry it needs."""
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or manifest.get("version") != VERSION
    ):
        found = (
            manifest if not isinstance(manifest, dict) else (manifest.get("format"), manifest.get("version"))
        )
        raise CheckpointError(
            f"{problem}: format and version {found!r}, expected {FORMAT!r} version {VERSION}"
        )
    kinds = {"paths": list, "shapes": list, "dtypes": list, "sha256": str, "metadata": dict}
    wrong = [name for name, kind in kinds.items() if not isinstance(manifest.get(name), kind)]
    if wrong:
        raise CheckpointError(
            f"{problem}: its manifest lacks {', '.join(wrong)} (or has the wrong kind of value); "
            "it is corrupt or was not written by jaxconv. Resume from an intact checkpoint or start a new run"
        )


def _check_sizes(path: Path, archive: zipfile.ZipFile, leaves: int) -> None:
    """Raise `CheckpointError` where an array's header claims more bytes than its entry holds,
    before anything is allocated for it."""
    for i in range(leaves):
        name = f"leaf_{i}.npy"
        with archive.open(name) as entry:
            version = np.lib.format.read_magic(entry)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(entry)
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > archive.getinfo(name).file_size:
            raise CheckpointError(
                f"{path}: leaf_{i} claims {math.prod(shape)} values of {dtype} ({claimed:,} bytes) but "
                f"holds {archive.getinfo(name).file_size:,} bytes; it is corrupt. Resume from an intact "
                "checkpoint or start a new run"
            )


def _restore_leaf(path: Path, key_path: str, template: Any, array: np.ndarray) -> Any:
    expected = _stored_shape(template)
    if array.shape != expected.shape or array.dtype != expected.dtype:
        raise CheckpointError(
            f"{path}: {key_path} is {array.dtype}{list(array.shape)} in the file but "
            f"{expected.dtype}{list(expected.shape)} in the model; it was written for another configuration"
        )
    if not isinstance(template, jax.Array):
        return jax.numpy.asarray(array)
    placed = jax.make_array_from_callback(array.shape, template.sharding, lambda index: array[index])
    if _is_key(template):
        return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(template))
    return placed


def _stored_shape(leaf: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype a leaf is stored with (a key as its data), read without its values,
    so that a leaf split over processes needs no gathering."""
    if _is_key(leaf):
        return jax.eval_shape(jax.random.key_data, leaf)
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
    array = np.asarray(leaf)
    return jax.ShapeDtypeStruct(array.shape, array.dtype)


def _few(items: list[str], limit: int = 3) -> str:
    if not items:
        return "nothing"
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
