"""A run's checkpoints through Orbax: numbered steps, saved in the background, the last few kept.

    store = OrbaxStore("runs/first/orbax", keep=3)
    store.save(step, train_state, {"epoch": 2, "step": step})   # returns once the arrays are copied
    train_state, metadata = store.restore(like=train_state)      # the latest complete step
    store.close()                                                # waits for the last write

Each save is one Orbax step, ``<directory>/<step>/``, holding the tree's arrays
(``state/``, Orbax's tensorstore format: every process writes the shards it
holds, so a parameter split over the processes of an FSDP run is never
gathered) and JSON metadata (``meta/``: the epoch, the data iterator's
position, and the key paths, shapes and dtypes of the tree, checked before
anything is read). Orbax writes a step into a temporary directory and renames it
when it is complete, so a save killed half-way leaves the previous step the
latest; the temporary directory is removed when the store is opened again.
`save` returns once the arrays are copied on their devices (``jax.device_put``,
dispatched, not waited for: the train step may donate the originals then; in a run of
several processes Orbax takes them in the caller's thread, its barriers in order); Orbax's
own work on the copies (its per-array bookkeeping, about 0.25 ms an array, and
the transfer to the host) and the writing run in background threads, and an error
there comes out of the next `save`, `wait` or `close`, the previous step kept.
The copies hold one more state's memory until Orbax has them on the host.

PRNG keys are stored as their key data and wrapped again on restore.
`jaxconv.train.save_checkpoint` (one portable ``.npz`` file) stays the format of
exported states such as a run's ``best.npz``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxconv.core import PyTree
from jaxconv.errors import CheckpointError
from jaxconv.train.checkpoint import disk_full

_ARRAYS = "state"
_METADATA = "meta"
_FIX = "Resume from an intact checkpoint or start a new run"


class OrbaxStore:
    """The Orbax checkpoints of one run in ``directory`` (created on the first save), keeping the
    last ``keep`` steps; ``asynchronous``: write in a background thread; ``writer``: the one
    training process group that saves (it removes the temporary directories of interrupted
    saves; a reader, e.g. ``jaxconv report`` beside a running training, leaves them). In a run of
    several processes every process opens the store and calls `save` and `restore` alike."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        asynchronous: bool = True,
        writer: bool = True,
    ):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=writer,
            create=False,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        # hands each save to Orbax off the caller's thread, one at a time, in order; in one process
        # only: Orbax's save holds barriers that every process must reach in the same order as the
        # caller's own (e.g. writing best.npz)
        handoff = asynchronous and jax.process_count() == 1
        self._starter = ThreadPoolExecutor(1, "jaxconv-orbax") if handoff else None
        self._starting: Future[None] | None = None

    def steps(self) -> list[int]:
        """The complete steps on disk, oldest first (a save in progress is not one yet)."""
        return complete_steps(self.directory)

    def save(self, step: int, tree: PyTree, metadata: dict[str, Any] | None = None) -> None:
        """Start writing ``tree`` (arrays, keys, scalars) and JSON-ready ``metadata`` as ``step``;
        returns once the arrays' copies are dispatched (module docstring), before they are written.

        Raises:
          DiskFullError: a full disk, for this save (synchronous) or an earlier one (the step
            before it is kept).
          CheckpointError: ``step`` is not after the latest step.
        """
        self._started()
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(
                f"{self.directory}: step {step} is not after the latest saved step {latest}"
            )
        arrays = jax.tree_util.tree_map(_stored, tree)
        manifest = {"tree": _describe(arrays), "metadata": metadata or {}}
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._starter is None:
            self._start(step, arrays, manifest)
        else:
            snapshot = jax.tree_util.tree_map(_copied, arrays)
            self._starting = self._starter.submit(self._start, step, snapshot, manifest)

    def _start(self, step: int, arrays: PyTree, manifest: dict[str, Any]) -> None:
        """Orbax's part of `save`: it returns once Orbax has the arrays on the host."""
        with _disk_errors(self.directory):
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{_ARRAYS: ocp.args.StandardSave(arrays), _METADATA: ocp.args.JsonSave(manifest)}
                ),
            )

    def _started(self) -> None:
        """Wait until the save handed off last is with Orbax (raising its error, if it failed)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.result()

    def restore(self, like: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Read ``step`` (None: the latest complete one) into a tree with the structure, shapes,
        dtypes and placement (one device, or sharded over a mesh and processes) of ``like``.

        Returns:
          (tree, metadata).

        Raises:
          CheckpointError: naming the step's directory and the fix, when there is no complete step,
            the step is unreadable or corrupt, or it was written for another model or optimiser.
        """
        self.wait()
        step = self._step(step)
        where = self.directory / str(step)
        expected = jax.tree_util.tree_map(_stored_like, like)
        manifest = self._read_metadata(step)
        _check_fits(where, manifest, _describe(expected))
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(expected)})
            )[_ARRAYS]
        except Exception as error:  # Orbax and tensorstore raise many kinds for a damaged step
            raise CheckpointError(
                f"{where} is not a readable Orbax checkpoint ({type(error).__name__}: {_first_line(error)}); "
                f"it is truncated or corrupt. {_fix(self.directory, self.steps(), step)}"
            ) from error
        leaves = jax.tree_util.tree_leaves(like)
        restored_leaves = jax.tree_util.tree_leaves(restored)
        tree = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(like),
            [_wrapped(value, template) for value, template in zip(restored_leaves, leaves, strict=True)],
        )
        return tree, manifest["metadata"]

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The metadata saved with ``step`` (None: the latest complete one), arrays unread."""
        self.wait()
        return self._read_metadata(self._step(step))["metadata"]

    def wait(self) -> None:
        """Wait until the save in progress is written (raising its error, if it failed)."""
        self._started()
        with _disk_errors(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the save in progress and release Orbax's threads."""
        try:
            self.wait()
        finally:
            self._manager.close()
            if self._starter is not None:
                self._starter.shutdown()

    def _step(self, step: int | None) -> int:
        steps = self.steps()
        if step is None and steps:
            return steps[-1]
        if step in steps:
            return step
        raise CheckpointError(
            f"{self.directory} holds no complete checkpoint{'' if step is None else f' of step {step}'} "
            f"(steps: {steps or 'none'}); a save was interrupted before any finished, or the directory "
            f"was moved. {_FIX}"
        )

    def _read_metadata(self, step: int) -> dict[str, Any]:
        where = self.directory / str(step)
        try:
            manifest = self._manager.restore(
                step, args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()})
            )[_METADATA]
        except Exception as error:
            raise CheckpointError(
                f"{where}: its metadata is unreadable ({type(error).__name__}: {_first_line(error)}); "
                f"it is corrupt. {_fix(self.directory, self.steps(), step)}"
            ) from error
        if not (isinstance(manifest, dict) and isinstance(manifest.get("tree"), dict)
                and isinstance(manifest.get("metadata"), dict)):  # fmt: skip
            raise CheckpointError(f"{where}: its metadata is not jaxconv's; it is corrupt. {_FIX}")
        return manifest


def complete_steps(directory: Path) -> list[int]:
    """The steps of the complete Orbax checkpoints in ``directory`` (Orbax renames a step's
    temporary directory to its number once it is written), oldest first."""
    if not directory.is_dir():
        return []
    return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit() and path.is_dir())


# --- helpers -------------------------------------------------------------------------------------


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _stored(leaf: Any) -> Any:
    """A leaf as Orbax stores it: a key as its key data, a Python or NumPy scalar as an array."""
    if _is_key(leaf):
        return jax.random.key_data(leaf)
    return leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)


def _copied(leaf: Any) -> Any:
    """A copy of a stored leaf that the caller's next step cannot donate or change."""
    return (
        jax.device_put(leaf, leaf.sharding, may_alias=False)
        if isinstance(leaf, jax.Array)
        else np.array(leaf)
    )


def _stored_like(leaf: Any) -> Any:
    """The shape, dtype and placement a leaf is restored with (a key: its key data's)."""
    if _is_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=leaf.sharding)
    return ocp.utils.to_shape_dtype_struct(_stored(leaf))


def _wrapped(value: Any, template: Any) -> Any:
    if _is_key(template):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(template))
    return value


def _describe(tree: PyTree) -> dict[str, str]:
    """Each leaf's key path and its dtype and shape, e.g. ``{"['w']": "float32[3, 4]"}``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype)}{list(leaf.shape)}" for path, leaf in flat}


def _check_fits(where: Path, manifest: dict[str, Any], expected: dict[str, str]) -> None:
    """Raise `CheckpointError` unless the saved tree has ``expected``'s leaves, shapes and dtypes."""
    saved = manifest["tree"]
    if saved == expected:
        return
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    differ = [f"{path} is {saved[path]} saved, {expected[path]} here" for path in expected if saved.get(path, expected[path]) != expected[path]]  # fmt: skip
    raise CheckpointError(
        f"{where} does not fit this model and optimiser: missing {_few(missing)}, unexpected {_few(extra)}"
        f"{'; ' + _few(differ) if differ else ''}; it was written for another configuration. {_FIX}"
    )


def _few(items: list[str], limit: int = 3) -> str:
    if not items:
        return "nothing"
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _fix(directory: Path, steps: list[int], step: int) -> str:
    """What to do about the damaged ``step``: remove it to fall back on the step before, if any."""
    earlier = [other for other in steps if other < step]
    if not earlier:
        return _FIX
    return f"Remove {directory / str(step)} to resume from step {earlier[-1]}, the one before, or start a new run"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


@contextlib.contextmanager
def _disk_errors(directory: Path) -> Iterator[None]:
    """Turn a full disk (or a file-size limit) while Orbax writes into `DiskFullError`: tensorstore
    reports it as a ValueError that carries the OS error code."""
    try:
        yield
    except Exception as error:
        code = re.search(r"os_error_code='?(\d+)", str(error))
        full = disk_full(OSError(int(code.group(1)), str(error)) if code else error, directory)
        if full is None:
            raise
        raise full from None
