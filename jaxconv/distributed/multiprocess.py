"""Several processes, one training run: joining JAX's distributed runtime.

Every process runs the same script: `initialize` first (before any other JAX
call), then the same mesh (`make_mesh()`, all processes' devices), the same
step, and its own rows of each global batch (`process_rows`, `global_batch`).
A run's checkpoints (`jaxconv.train.OrbaxStore`) go to a directory every process
can reach: each process writes the shards it holds and reads its own back.
A portable ``.npz`` (`jaxconv.train.save_checkpoint`) is gathered and written by process 0.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxconv.errors import DataParallelError

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
