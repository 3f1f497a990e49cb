"""Data-parallel train steps: sharded ``jit`` (one global program) and ``pmap`` (one per device).

Both take what `jaxconv.train.make_train_step` takes and return a step with its
signature, ``step(train_state, images, labels) -> (train_state, metrics)``, on a
global batch (N, H, W, C) of N = D * (N / D) examples:

- `make_sharded_train_step`: ``jit`` of the single-device step, the batch
  sharded along the mesh's ``'data'`` axis and the train state replicated (or,
  with ``shard_params``, split FSDP-style). XLA partitions the program and
  inserts the gradient all-reduce; BatchNorm sees the global batch and Dropout
  draws the global batch's mask, so the step *is* the single-device step (to
  float rounding). Build BatchNorm, Dropout and StochasticDepth without ``axis_name``.
- `make_pmap_train_step`: ``pmap`` of a per-device step over N / D examples
  with the gradients averaged by ``lax.pmean`` and BatchNorm's batch
  statistics by its ``axis_name``, which must be the mesh's axis. Every device
  gets the same training key, and the random draws are made for the global
  batch and sliced: Dropout and StochasticDepth must be built with the same
  ``axis_name``, so that device ``i`` takes rows i * N / D to (i + 1) * N / D of
  the (N, ...) mask drawn from that key, exactly the single-device mask; and
  ``preprocess`` (augmentation with a random crop or flip per example) runs on
  the global batch, gathered from the devices, of which each keeps its rows.
  Both cost D times the random numbers and the augmentation work (cheap next to
  the convolutions) and make the pmap step the single-device step, Dropout and
  augmentation included (tests/distributed checks it). Gathering keeps
  ``preprocess`` any function of (key, images), as in the single-device step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import jax
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding

from jaxconv.core import Layer, info
from jaxconv.distributed.placement import (
    DATA,
    DataParallelError,
    batch_sharding,
    check_batch,
    check_mesh,
    fsdp_shardings,
    make_mesh,
    place_train_state,
    put_tree,
    replicated,
)
from jaxconv.train import step as single
from jaxconv.train.state import TrainState

Style = Literal["jit", "pmap"]


def make_sharded_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    preprocess: single.Preprocess | None = None,
    label_smoothing: float = 0.0,
    shard_params: bool = False,
    axis_name: str = DATA,
    donate: bool = True,
) -> single.TrainStep:
    """The single-device train step, ``jit``-ed over ``mesh`` with the batch split along ``axis_name``.

    The train state is replicated on the mesh (`place_train_state`) or, with
    ``shard_params``, split along its largest divisible axes (`fsdp_shardings`):
    each device then stores 1/D of the parameters and optimiser moments and XLA
    gathers them for the forward and backward pass. Images and labels may be
    host arrays (sent straight to their shards) or the output of `shard_batch`
    / `global_batch`. The metrics are those of the global batch, replicated.

    Raises:
      ShapeError: before compiling, when the batch does not split over the devices.
      DataParallelError: when the mesh lacks ``axis_name`` or does not match the
        devices, or a BatchNorm, Dropout or StochasticDepth of ``net`` has an
        ``axis_name`` (this step sees the global batch; that is
        `make_pmap_train_step`'s design).
    """
    check_mesh(mesh, axis_name)
    _check_axis_names(net, None, "make_sharded_train_step")
    inner = single.make_train_step(
        net, optimizer, preprocess=preprocess, label_smoothing=label_smoothing, donate=False
    )
    batch = batch_sharding(mesh, axis_name)

    def compile_for(train_state: TrainState) -> Callable:
        state_sharding = fsdp_shardings(train_state, mesh, axis_name) if shard_params else replicated(mesh)
        return jax.jit(
            inner,
            in_shardings=(state_sharding, batch, batch),
            out_shardings=(state_sharding, replicated(mesh)),
            donate_argnums=0 if donate else (),
        )

    return _checked(compile_for, mesh, axis_name, shard_params)


def make_pmap_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    preprocess: single.Preprocess | None = None,
    label_smoothing: float = 0.0,
    axis_name: str = DATA,
    donate: bool = True,
) -> single.TrainStep:
    """A ``pmap`` over the mesh's devices of the per-device step, gradients averaged by ``lax.pmean``.

    ``net``'s BatchNorm layers must be built with ``BatchNorm(axis_name=axis_name)``
    so that their batch statistics, and hence their running statistics, are those
    of the global batch and stay identical on every device; a BatchNorm with no
    axis name (per-device statistics, replicas drifting apart) is an error. So is
    a Dropout or StochasticDepth without ``axis_name=axis_name``: with it each
    device drops its rows of the global batch's mask, drawn from the training key
    that all devices share, as the single-device step would. ``preprocess`` runs
    on the global batch (``lax.all_gather``), each device keeping its rows, so its
    random crops and flips are those of the single-device step too. Takes
    and returns the same placements as `make_sharded_train_step`: the batch (N, ...)
    split along ``axis_name`` (reshaped to (D, N / D, ...) inside, without copies),
    the train state replicated; the metrics are averaged over the devices.

    Raises:
      ShapeError: before compiling, when the batch does not split over the devices.
      DataParallelError: when the mesh is not 1-D along ``axis_name``, does not
        match the devices, or a BatchNorm, Dropout or StochasticDepth's ``axis_name``
        is not ``axis_name``.
    """
    check_mesh(mesh, axis_name)
    if mesh.devices.ndim != 1:
        raise DataParallelError(
            f"make_pmap_train_step maps over one axis, but the mesh has axes {mesh.axis_names}; "
            "use make_mesh(), or make_sharded_train_step for meshes of several axes"
        )
    _check_axis_names(net, axis_name, "make_pmap_train_step")
    synchronised = pmean_gradients(optimizer, axis_name)
    inner = single.make_train_step(
        net,
        synchronised,
        preprocess=None if preprocess is None else _on_global_batch(preprocess, axis_name),
        label_smoothing=label_smoothing,
        donate=False,
    )

    def device_step(train_state: TrainState, images: jax.Array, labels: jax.Array):
        new_state, metrics = inner(train_state, images, labels)  # the same key on every device
        return new_state, lax.pmean(metrics, axis_name)

    devices = list(mesh.devices.flat)
    mapped = jax.pmap(device_step, axis_name, in_axes=(None, 0, 0), out_axes=None, devices=devices)

    def global_step(train_state: TrainState, images: jax.Array, labels: jax.Array):
        def split(x: jax.Array) -> jax.Array:  # (N, ...) -> (D, N / D, ...): each device its own rows
            return x.reshape(len(devices), x.shape[0] // len(devices), *x.shape[1:])

        return mapped(train_state, split(images), split(labels))

    batch = batch_sharding(mesh, axis_name)

    def compile_for(train_state: TrainState) -> Callable:
        return jax.jit(
            global_step,
            in_shardings=(replicated(mesh), batch, batch),
            out_shardings=(replicated(mesh), replicated(mesh)),
            donate_argnums=0 if donate else (),
        )

    return _checked(compile_for, mesh, axis_name)


def make_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    *,
    devices: int | Mesh | None = None,
    style: Style = "jit",
    preprocess: single.Preprocess | None = None,
    label_smoothing: float = 0.0,
    shard_params: bool = False,
    donate: bool = True,
) -> single.TrainStep:
    """`jaxconv.train.make_train_step` on ``devices`` devices: a drop-in for the fit loop.

    ``devices``: None or 1 for the single-device step; a count for a mesh of that
    many local devices (`make_mesh`); or a mesh. The returned step takes the train
    state as `jaxconv.train.init_train_state` makes it and replicates it on the
    first call (later calls find it in place), and host batches of any size
    divisible by the device count. ``style`` picks `make_sharded_train_step`
    (``'jit'``, any net) or `make_pmap_train_step` (``'pmap'``, BatchNorm, Dropout and
    StochasticDepth with ``axis_name='data'``).
    """
    if devices is None or devices == 1:
        return single.make_train_step(
            net, optimizer, preprocess=preprocess, label_smoothing=label_smoothing, donate=donate
        )
    mesh = devices if isinstance(devices, Mesh) else make_mesh(devices)
    options = {"preprocess": preprocess, "label_smoothing": label_smoothing, "donate": donate}
    if style == "jit":
        return make_sharded_train_step(net, optimizer, mesh, shard_params=shard_params, **options)
    if style == "pmap":
        if shard_params:
            raise DataParallelError("style='pmap' replicates the parameters; shard_params needs style='jit'")
        return make_pmap_train_step(net, optimizer, mesh, **options)
    raise DataParallelError(f"style={style!r}: use 'jit' (sharded jit) or 'pmap'")


def make_sharded_eval_step(
    net: Layer, mesh: Mesh, *, preprocess: single.Preprocess | None = None, axis_name: str = DATA
) -> single.EvalStep:
    """`jaxconv.train.make_eval_step` over ``mesh``: a batch that splits over the devices is
    split along ``axis_name``; any other (a dataset's last, smaller batch) is evaluated whole on
    every device. Params and state stay where they are (replicated or split)."""
    check_mesh(mesh, axis_name)
    inner = single.make_eval_step(net, preprocess=preprocess)
    split, whole = batch_sharding(mesh, axis_name), replicated(mesh)
    by_batch = {
        # outputs replicated: every process can read the metrics and predictions of the batch
        placement: jax.jit(inner, in_shardings=(None, None, placement, placement), out_shardings=whole)
        for placement in (split, whole)
    }
    shards = mesh.shape[axis_name]

    def eval_step(params, state, images, labels) -> single.Metrics:
        placement = whole if np.shape(labels)[0] % shards else split
        return by_batch[placement](params, state, *_global((images, labels), placement))

    return eval_step


def make_eval_step(
    net: Layer, *, devices: int | Mesh | None = None, preprocess: single.Preprocess | None = None
) -> single.EvalStep:
    """`jaxconv.train.make_eval_step` on ``devices`` devices (as in `make_train_step`)."""
    if devices is None or devices == 1:
        return single.make_eval_step(net, preprocess=preprocess)
    return make_sharded_eval_step(
        net, devices if isinstance(devices, Mesh) else make_mesh(devices), preprocess=preprocess
    )


def pmean_gradients(optimizer: optax.GradientTransformation, axis_name: str) -> optax.GradientTransformation:
    """``optimizer`` applied to the gradients averaged over the mapped axis ``axis_name``; same state."""

    def update(updates, state, params=None, **extra):
        return optimizer.update(lax.pmean(updates, axis_name), state, params, **extra)

    return optax.GradientTransformationExtraArgs(optimizer.init, update)


def batch_norm_axes(net: Layer) -> dict[str, str | None]:
    """The ``axis_name`` of every BatchNorm in ``net``, by its path (``'net/batchnorm_1'``).

    Only layers that describe themselves (`jaxconv.info`) are seen; a hand-written
    ``Layer(init, apply)`` hides its insides."""
    return _axis_names(net, ("BatchNorm",))


def _axis_names(net: Layer, kinds: tuple[str, ...]) -> dict[str, str | None]:
    return {
        path: spec["axis_name"] for path, kind, spec in _walk(net, info(net).name or "net") if kind in kinds
    }


def _walk(net: Layer, path: str) -> Iterator[tuple[str, str, dict]]:
    description = info(net)
    yield path, description.kind, description.spec
    for name, child in description.children:
        yield from _walk(child, f"{path}/{name}")


def _check_axis_names(net: Layer, axis_name: str | None, where: str) -> None:
    """Raise unless every BatchNorm, Dropout and StochasticDepth of ``net`` has ``axis_name``."""
    for kinds, plain, named, why in _NAMED_AXIS_LAYERS:
        if axis_name is None:
            fix = (
                f"this step sees the global batch, so build them with {plain} (no axis_name), "
                "or use make_pmap_train_step"
            )
        else:
            fix = (
                f"build them with {named.format(axis_name=axis_name)} so {why}, "
                "or use make_sharded_train_step, which needs no axis name"
            )
        _check_kinds(net, kinds, axis_name, where, fix)


# (kinds, call without axis name, call with it, why the pmap step needs it)
_NAMED_AXIS_LAYERS = (
    (
        ("BatchNorm",),
        "BatchNorm()",
        "BatchNorm(axis_name={axis_name!r})",
        "the devices share the batch statistics (otherwise each device normalises with its own "
        "and the replicas' running statistics drift apart)",
    ),
    (
        ("Dropout", "StochasticDepth"),
        "Dropout(rate)",
        "Dropout(rate, axis_name={axis_name!r}) (StochasticDepth likewise)",
        "each device drops its rows of the global batch's mask, as one device would (otherwise "
        "every device, sharing the training key, drops the same entries of its rows)",
    ),
)


def _check_kinds(net: Layer, kinds: tuple[str, ...], axis_name: str | None, where: str, fix: str) -> None:
    wrong = {path: axis for path, axis in _axis_names(net, kinds).items() if axis != axis_name}
    if not wrong:
        return
    listed = ", ".join(f"{path} (axis_name={axis!r})" for path, axis in list(wrong.items())[:3])
    more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
    raise DataParallelError(f"{where}: {len(wrong)} {' or '.join(kinds)} layers {listed}{more}: {fix}")


def _on_global_batch(preprocess: single.Preprocess, axis_name: str) -> single.Preprocess:
    """``preprocess`` inside the mapped axis ``axis_name`` as on one device: each device gathers
    the global batch (N, ...), preprocesses it with the key every device shares, and keeps its
    own N / D rows, so per-example random crops and flips are those of the single-device step."""

    def on_device(key: jax.Array | None, images: jax.Array) -> jax.Array:
        rows = images.shape[0]
        everything = preprocess(key, lax.all_gather(images, axis_name, tiled=True))
        return lax.dynamic_slice_in_dim(everything, lax.axis_index(axis_name) * rows, rows)

    return on_device


def _checked(
    compile_for: Callable[[TrainState], Callable], mesh: Mesh, axis_name: str, shard_params: bool = False
) -> single.TrainStep:
    """The step: check the batch, place a train state that is not yet on the mesh, run the
    program compiled for this train state's structure."""
    compiled: dict = {}
    mesh_devices = set(mesh.devices.flat)

    def step(train_state: TrainState, images, labels):
        for name, array in (("images", images), ("labels", labels)):
            if np.ndim(array) == 0:
                raise DataParallelError(f"{name} is a scalar; the step takes a batch (N, ...)")
            check_batch(np.shape(array)[0], mesh, axis_name)
        if np.shape(images)[0] != np.shape(labels)[0]:
            raise DataParallelError(
                f"{np.shape(images)[0]} images but {np.shape(labels)[0]} labels; give one label per image"
            )
        images, labels = _global((images, labels), batch_sharding(mesh, axis_name))
        structure = jax.tree.structure(train_state)
        if structure not in compiled:
            compiled[structure] = compile_for(train_state)
        if not _on_mesh(train_state.step, mesh_devices):
            train_state = place_train_state(train_state, mesh, shard_params=shard_params, axis_name=axis_name)
        return compiled[structure](train_state, images, labels)

    return step


def _global(batch: tuple, sharding: NamedSharding) -> tuple:
    """Across processes, a host batch that every process holds whole becomes a global array
    (each process puts its own rows); in one process ``jit`` places host arrays itself."""
    if jax.process_count() == 1 or all(isinstance(leaf, jax.Array) for leaf in batch):
        return batch
    return put_tree(batch, (sharding, sharding))


def _on_mesh(leaf: jax.Array, devices: set) -> bool:
    return isinstance(leaf, jax.Array) and leaf.sharding.device_set == devices
