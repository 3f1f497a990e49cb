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

from collections.abc import Callable

import jax
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding

from jaxconv.core import Layer, LayerInfo, info, walk
from jaxconv.distributed.placement import (
    DATA,
    batch_sharding,
    check_batch,
    check_mesh,
    fsdp_shardings,
    place_train_state,
    put_tree,
    replicated,
)
from jaxconv.errors import DataParallelError
from jaxconv.train import step as single
from jaxconv.train.state import TrainState


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

    ``net``'s BatchNorm layers must be built with ``BatchNorm(axis_name=axis_name)``, so
    that their batch and running statistics are the global batch's on every device, and
    its Dropout and StochasticDepth with ``axis_name=axis_name``, so that each device
    drops its rows of the global batch's mask (drawn from the key all devices share).
    ``preprocess`` runs on the global batch (``lax.all_gather``), each device keeping its
    rows. So the step is the single-device step. Placements as `make_sharded_train_step`
    (the batch (N, ...) is reshaped to (D, N / D, ...) inside, without copies).

    Raises:
      ShapeError: before compiling, when the batch does not split over the devices.
      DataParallelError: the mesh is not 1-D along ``axis_name`` or does not match the
        devices, or a BatchNorm, Dropout or StochasticDepth's ``axis_name`` is another.
    """
    check_mesh(mesh, axis_name)
    if mesh.devices.ndim != 1:
        raise DataParallelError(
            f"make_pmap_train_step maps over one axis, but the mesh has axes {mesh.axis_names}; "
            "use make_mesh(), or make_sharded_train_step for meshes of several axes"
        )
    _check_axis_names(net, axis_name, "make_pmap_train_step")
    inner = single.make_train_step(
        net,
        pmean_gradients(optimizer, axis_name),
        preprocess=None if preprocess is None else _on_global_batch(preprocess, axis_name),
        label_smoothing=label_smoothing,
        donate=False,
    )
    global_step, batch = _mapped_over(inner, mesh, axis_name), batch_sharding(mesh, axis_name)

    def compile_for(train_state: TrainState) -> Callable:
        return jax.jit(
            global_step,
            in_shardings=(replicated(mesh), batch, batch),
            out_shardings=(replicated(mesh), replicated(mesh)),
            donate_argnums=0 if donate else (),
        )

    return _checked(compile_for, mesh, axis_name)


def _mapped_over(inner: single.TrainStep, mesh: Mesh, axis_name: str) -> single.TrainStep:
    """``inner`` (a single-device step on N / D examples, averaging its gradients over
    ``axis_name``) ``pmap``-ed over the mesh's D devices: a step on the global batch (N, ...),
    each device taking its own rows, the metrics averaged over the devices."""

    def device_step(train_state: TrainState, images: jax.Array, labels: jax.Array):
        new_state, metrics = inner(train_state, images, labels)  # the same key on every device
        return new_state, lax.pmean(metrics, axis_name)

    devices = list(mesh.devices.flat)
    mapped = jax.pmap(device_step, axis_name, in_axes=(None, 0, 0), out_axes=None, devices=devices)

    def global_step(train_state: TrainState, images: jax.Array, labels: jax.Array):
        def split(x: jax.Array) -> jax.Array:  # (N, ...) -> (D, N / D, ...): each device its own rows
            return x.reshape(len(devices), x.shape[0] // len(devices), *x.shape[1:])

        return mapped(train_state, split(images), split(labels))

    return global_step


def make_sharded_eval_step(
    net: Layer,
    mesh: Mesh,
    *,
    preprocess: single.Preprocess | None = None,
    axis_name: str = DATA,
    crop_padding: int = 0,
    flip: bool = False,
) -> single.EvalStep:
    """`jaxconv.train.make_eval_step` over ``mesh``: a batch that splits over the devices is
    split along ``axis_name``; any other (a dataset's last, smaller batch) is evaluated whole on
    every device. Params and state stay where they are (replicated or split). ``crop_padding``
    and ``flip``: test-time augmentation, each device averaging its own images' views."""
    check_mesh(mesh, axis_name)
    inner = single.make_eval_step(net, preprocess=preprocess, crop_padding=crop_padding, flip=flip)
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


def pmean_gradients(optimizer: optax.GradientTransformation, axis_name: str) -> optax.GradientTransformation:
    """``optimizer`` applied to the gradients averaged over the mapped axis ``axis_name``; same state."""

    def update(updates, state, params=None, **extra):
        return optimizer.update(lax.pmean(updates, axis_name), state, params, **extra)

    return optax.GradientTransformationExtraArgs(optimizer.init, update)


def batch_norm_axes(net: Layer) -> dict[str, str | None]:
    """The ``axis_name`` of every layer of ``net`` whose batch statistics mix the examples
    (BatchNorm: ``traits.mixes_examples``), by its path (``'net/batchnorm_1'``).

    Only layers that describe themselves (`jaxconv.info`) are seen; a hand-written
    ``Layer(init, apply)`` hides its insides."""
    return _axis_names(net, _mixes_examples)


def _mixes_examples(layer_info: LayerInfo) -> bool:
    return layer_info.traits is not None and layer_info.traits.mixes_examples


def _draws_per_example(layer_info: LayerInfo) -> bool:
    """A layer with an ``axis_name`` that does not mix examples: its random draws (Dropout,
    StochasticDepth) are made for the global batch and sliced per device."""
    return not _mixes_examples(layer_info)


def _axis_names(net: Layer, selected: Callable[[LayerInfo], bool]) -> dict[str, str | None]:
    """``{'net/...': axis_name}`` of every layer of ``net`` with an ``axis_name`` that ``selected`` picks."""
    root = info(net).name or "net"
    return {
        "/".join((root, *path)): layer_info.spec["axis_name"]
        for path, layer_info in walk(net)
        if "axis_name" in layer_info.spec and selected(layer_info)
    }


def _check_axis_names(net: Layer, axis_name: str | None, where: str) -> None:
    """Raise unless every BatchNorm, Dropout and StochasticDepth of ``net`` has ``axis_name``."""
    for selected, kinds, plain, named, why in _NAMED_AXIS_LAYERS:
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
        _check_layers(net, selected, kinds, axis_name, where, fix)


# (which layers, what they are called, the call without axis name, with it, why the pmap step needs it)
_NAMED_AXIS_LAYERS = (
    (
        _mixes_examples,
        "BatchNorm",
        "BatchNorm()",
        "BatchNorm(axis_name={axis_name!r})",
        "the devices share the batch statistics (otherwise each device normalises with its own "
        "and the replicas' running statistics drift apart)",
    ),
    (
        _draws_per_example,
        "Dropout or StochasticDepth",
        "Dropout(rate)",
        "Dropout(rate, axis_name={axis_name!r}) (StochasticDepth likewise)",
        "each device drops its rows of the global batch's mask, as one device would (otherwise "
        "every device, sharing the training key, drops the same entries of its rows)",
    ),
)


def _check_layers(
    net: Layer,
    selected: Callable[[LayerInfo], bool],
    kinds: str,
    axis_name: str | None,
    where: str,
    fix: str,
) -> None:
    wrong = {path: axis for path, axis in _axis_names(net, selected).items() if axis != axis_name}
    if not wrong:
        return
    listed = ", ".join(f"{path} (axis_name={axis!r})" for path, axis in list(wrong.items())[:3])
    more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
    raise DataParallelError(f"{where}: {len(wrong)} {kinds} layers {listed}{more}: {fix}")


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
