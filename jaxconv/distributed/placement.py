"""Where arrays live: the device mesh, replicated train states, batches sharded along ``'data'``.

A data-parallel step reads a train state *replicated* on every device of a
1-D `Mesh` and a global batch (N, H, W, C) *sharded* along the mesh's data
axis, each device holding N / D consecutive examples. Across processes each
process holds the rows of its own devices (`process_rows`) and assembles the
global batch with `global_batch` (`jax.make_array_from_process_local_data`).

Sizes are checked here, in Python, before anything is compiled.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxconv.core import PyTree
from jaxconv.errors import DataParallelError, ShapeError

DATA = "data"  # the default name of the mesh axis the batch is split along


def make_mesh(devices: int | Sequence[jax.Device] | None = None, axis_name: str = DATA) -> Mesh:
    """A 1-D mesh named ``axis_name`` over ``devices``.

    Args:
      devices: None for every device of every process (`jax.devices()`), a count
        for the first that many (in a single process), or the devices themselves.
      axis_name: the name of the axis the batch is split along.

    Raises:
      DataParallelError: more devices asked for than there are, or a device
        list that repeats or does not belong to this run.
    """
    available = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    if devices is None:
        chosen = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise DataParallelError(
                f"make_mesh(devices={devices}): there {_count(available)}; "
                f"ask for 1 to {len(available)}, or on a CPU start Python with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} to simulate {devices}"
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
    mesh = Mesh(np.array(chosen), (axis_name,))
    check_mesh(mesh, axis_name)
    return mesh


def check_mesh(mesh: Mesh, axis_name: str = DATA) -> None:
    """Raise `DataParallelError` unless ``mesh`` has the axis ``axis_name`` and can hold a batch:
    its devices are distinct devices of this run, and every process owns as many of them."""
    if axis_name not in mesh.axis_names:
        raise DataParallelError(
            f"the mesh has axes {mesh.axis_names} but the batch is split along {axis_name!r}; build "
            f"it with make_mesh(axis_name={axis_name!r}) or pass axis_name={mesh.axis_names[0]!r}"
        )
    devices = list(mesh.devices.flat)
    known = set(jax.devices())
    strangers = [device for device in devices if device not in known]
    if strangers or len(set(devices)) != len(devices):
        problem = f"{strangers[:3]} are not devices of this run" if strangers else "some devices repeat"
        raise DataParallelError(
            f"the mesh's {len(devices)} devices do not match this run's {len(known)} {_kind(devices)} "
            f"devices ({problem}); build the mesh with make_mesh() from jax.devices()"
        )
    per_process = dict.fromkeys(range(jax.process_count()), 0)
    for device in devices:
        per_process[device.process_index] += 1
    if len(set(per_process.values())) > 1:
        raise DataParallelError(
            f"the mesh's devices per process are {per_process}; every process must own as many of "
            "them to read an equal share of each batch: build the mesh with make_mesh() over all devices"
        )


def batch_sharding(mesh: Mesh, axis_name: str = DATA) -> NamedSharding:
    """Split an array's first axis (the batch) over the mesh axis ``axis_name``."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    """A whole copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def data_axis_size(mesh: Mesh, axis_name: str = DATA) -> int:
    """The number of shards a batch is split into."""
    return mesh.shape[axis_name]


def check_batch(batch_size: int, mesh: Mesh, axis_name: str = DATA) -> None:
    """Raise `ShapeError` unless a global batch of ``batch_size`` splits evenly over the mesh."""
    shards = data_axis_size(mesh, axis_name)
    if batch_size % shards:
        lower, upper = batch_size // shards * shards, (batch_size // shards + 1) * shards
        choices = f"{lower} or {upper}" if lower else f"{upper}"
        raise ShapeError(
            f"a global batch of {batch_size} examples does not split over the {shards} devices of "
            f"mesh axis {axis_name!r}: {batch_size} / {shards} = {batch_size / shards:g}; "
            f"use a batch size of {choices} (a multiple of {shards})"
        )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """A copy of every array of ``tree`` on every device of ``mesh`` (single process, or the
    same values in every process)."""
    return put_tree(tree, jax.tree.map(lambda _: replicated(mesh), tree))


def fsdp_shardings(tree: PyTree, mesh: Mesh, axis_name: str = DATA, min_size: int = 1024) -> PyTree:
    """Shardings that split each array of ``tree`` along its largest axis divisible by the data
    axis (fully sharded data parallelism, ZeRO-3 style); arrays below ``min_size`` elements, or
    with no such axis, stay replicated. XLA gathers them where the step needs them whole."""
    shards = data_axis_size(mesh, axis_name)

    def sharding(leaf: jax.Array) -> NamedSharding:
        fits = [axis for axis, size in enumerate(leaf.shape) if size % shards == 0]
        if np.size(leaf) < min_size or not fits or is_key(leaf):
            return replicated(mesh)
        axis = max(fits, key=lambda a: leaf.shape[a])
        return NamedSharding(mesh, PartitionSpec(*([None] * axis), axis_name))

    return jax.tree.map(sharding, tree)


def place_train_state(
    train_state: PyTree, mesh: Mesh, *, shard_params: bool = False, axis_name: str = DATA
) -> PyTree:
    """Put a train state on ``mesh``: replicated, or with ``shard_params`` as `fsdp_shardings` say."""
    if not shard_params:
        return replicate(train_state, mesh)
    return put_tree(train_state, fsdp_shardings(train_state, mesh, axis_name))


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: str = DATA) -> PyTree:
    """Split the arrays of a global ``batch`` (each (N, ...), e.g. ``(images, labels)``) over the
    mesh's data axis; host arrays go straight from the host to their devices. Single process;
    across processes use `global_batch`."""
    for leaf in jax.tree.leaves(batch):
        check_batch(np.shape(leaf)[0], mesh, axis_name)
    return jax.device_put(batch, batch_sharding(mesh, axis_name))


def process_rows(batch_size: int, mesh: Mesh, axis_name: str = DATA) -> slice:
    """The rows of a global batch of ``batch_size`` that this process's devices hold: the
    examples this process reads (process 1 of 2 on a mesh of 8 devices: ``slice(4B/8, B)``)."""
    check_batch(batch_size, mesh, axis_name)
    index_map = batch_sharding(mesh, axis_name).addressable_devices_indices_map((batch_size,))
    rows = sorted({index[0].indices(batch_size)[:2] for index in index_map.values()})
    start, stop = rows[0][0], rows[-1][1]
    if sum(end - begin for begin, end in rows) != stop - start:
        raise DataParallelError(
            f"process {jax.process_index()} holds rows {rows} of the batch, not one block; build the "
            "mesh with make_mesh(), which orders the devices by process"
        )
    return slice(start, stop)


def global_batch(local_batch: PyTree, mesh: Mesh, axis_name: str = DATA) -> PyTree:
    """Assemble the global batch from each process's rows (``local_batch``, arrays (N / P, ...)
    read at `process_rows`); in a single process the same as `shard_batch`."""
    processes = len({device.process_index for device in mesh.devices.flat})
    for leaf in jax.tree.leaves(local_batch):
        check_batch(np.shape(leaf)[0] * processes, mesh, axis_name)
    sharding = batch_sharding(mesh, axis_name)
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, leaf), local_batch)


def put_tree(tree: PyTree, shardings: PyTree) -> PyTree:
    """Put ``tree`` at ``shardings``, from values that every process holds alike; the result
    never shares buffers with ``tree``, so a step may donate it."""

    def put(leaf, sharding: NamedSharding):
        if sharding.is_fully_addressable:  # copy first: device_put may alias despite may_alias=False
            return jax.device_put(leaf.copy() if isinstance(leaf, jax.Array) else leaf, sharding)
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        if is_key(leaf):
            data = put_tree(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def is_key(leaf: object) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _count(devices: Sequence[jax.Device]) -> str:
    kind = _kind(devices)
    return f"is 1 {kind} device" if len(devices) == 1 else f"are {len(devices)} {kind} devices"


def _kind(devices: Sequence[jax.Device]) -> str:
    return devices[0].platform.upper() if devices else ""
