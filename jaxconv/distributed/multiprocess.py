"""Several processes, one training run: JAX's distributed runtime, and checkpoints it can share.

Every process runs the same script: `initialize` first (before any other JAX
call), then the same mesh (`make_mesh()`, all processes' devices), the same
step, and its own rows of each global batch (`process_rows`, `global_batch`).
Checkpoints go to a directory every process can read: process 0 writes, the
others wait for it; every process reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxconv.core import PyTree
from jaxconv.distributed.placement import DataParallelError, is_key, put_tree
from jaxconv.train import checkpoint

ENVIRONMENT = {
    "coordinator_address": ("JAXCONV_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("JAXCONV_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("JAXCONV_PROCESS_ID", "JAX_PROCESS_ID"),
}


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join a multi-process run: `jax.distributed.initialize` with settings from the arguments,
    else the environment (``JAXCONV_COORDINATOR``, ``JAXCONV_NUM_PROCESSES``, ``JAXCONV_PROCESS_ID``,
    else JAX's ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else what
    JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU pods). Call it before any other JAX call.

    ``coordinator_address`` is ``host:port`` of process 0, which every process can reach.

    Raises:
      DataParallelError: for a process id outside [0, num_processes) or a value that is not a number.
    """
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    settings: dict[str, Any] = {name: _setting(name, value) for name, value in given.items()}
    count, index = settings["num_processes"], settings["process_id"]
    if count is not None and index is not None and not 0 <= index < count:
        raise DataParallelError(
            f"process_id={index} with num_processes={count}: the ids of {count} processes are 0 to {count - 1}"
        )
    jax.distributed.initialize(**settings)


def _setting(name: str, value: Any) -> Any:
    if value is not None:
        return value
    for variable in ENVIRONMENT[name]:
        text = os.environ.get(variable)
        if text:
            if name == "coordinator_address":
                return text
            try:
                return int(text)
            except ValueError:
                raise DataParallelError(f"{variable}={text!r} is not a whole number") from None
    return None


def save_checkpoint(
    path: str | os.PathLike[str], tree: PyTree, metadata: dict[str, Any] | None = None
) -> Path:
    """`jaxconv.train.save_checkpoint` for a train state spread over processes.

    Every process must call it (split arrays are gathered collectively); process
    0 writes the whole tree to ``path``, and no process returns before the file
    is complete. In a single process it is the plain save.
    """
    path = Path(path)
    if jax.process_count() == 1:
        return checkpoint.save_checkpoint(path, tree, metadata)
    host = jax.tree.map(_whole, tree)
    if jax.process_index() == 0:
        checkpoint.save_checkpoint(path, host, metadata)
    multihost_utils.sync_global_devices(f"jaxconv checkpoint {path}")
    return path


def load_checkpoint(path: str | os.PathLike[str], like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """`jaxconv.train.load_checkpoint` into the structure *and placement* of ``like``.

    Each leaf comes back with the sharding of its counterpart in ``like`` (a train
    state placed by `place_train_state`), in one process or several; each process
    reads the file, which must be on a filesystem they all see.
    """
    templates = jax.tree.map(_template, like)
    tree, metadata = checkpoint.load_checkpoint(path, templates)
    shardings = jax.tree.map(lambda leaf: leaf.sharding, like)
    return put_tree(tree, shardings), metadata


def _whole(leaf: jax.Array) -> Any:
    """The whole value of a global array, on this host (gathered if split over processes)."""
    if leaf.is_fully_addressable:
        return leaf
    if leaf.sharding.is_fully_replicated:
        return leaf.addressable_data(0)
    return multihost_utils.process_allgather(leaf, tiled=True)


def _template(leaf: jax.Array) -> Any:
    if leaf.is_fully_addressable or is_key(leaf):
        return leaf.addressable_data(0) if not leaf.is_fully_addressable else leaf
    return np.empty(leaf.shape, leaf.dtype)
