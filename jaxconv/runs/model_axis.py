"""The model axis of `fit_many`: how one program holds its models, and where their arrays live
on several devices.

    over = over_models("loop", chunk=4)                     # each model's step in turn, or "vmap"
    placement = Placement.of(devices=4, shard="models", models=8)
    train_state = placement.put_state(train_state)          # 2 models per device
    sharding = placement.batch(shared_order=False)          # (M, B, ...) batches split like it

``'models'``: each device holds and trains M / D whole models (the stacked train state and the
models' batches split along the model axis; nothing is exchanged between devices). ``'batch'``:
every device holds every model and a B / D slice of each model's batch; XLA adds up the
gradients and the BatchNorm statistics over the devices, so each model trains on its whole
batch as on one device. Either gives the models of one device, to float tolerance.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxconv.core import PyTree
from jaxconv.distributed import DATA, make_mesh
from jaxconv.distributed.placement import put_tree
from jaxconv.errors import ConfigError

SHARDS = ("models", "batch")
STRATEGIES = ("vmap", "loop")  # how one program holds the models: `over_models`


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh of ``devices`` devices and which axis of `fit_many`'s arrays it splits (None: one device)."""

    mesh: Mesh | None
    shard: str

    @classmethod
    def of(cls, devices: int, shard: str, models: int, batch_size: int) -> Placement:
        """Check that ``models`` (for 'models') or ``batch_size`` (for 'batch') split over ``devices``.

        Raises:
          ConfigError: an unknown ``shard``, or an axis that does not split evenly.
        """
        if shard not in SHARDS:
            raise ConfigError(f"shard={shard!r}: split the model axis ('models') or the batch axis ('batch')")
        if devices == 1:
            return cls(None, shard)
        if shard == "models" and models % devices:
            raise ConfigError(
                f"{models} models do not split over {devices} devices; train a multiple of {devices} "
                "models, or split the batch axis (shard='batch', --shard batch)"
            )
        if shard == "batch" and batch_size % devices:
            raise ConfigError(f"batch_size={batch_size} does not split over {devices} devices")
        return cls(make_mesh(devices), shard)

    def split(self, over: Over, strategy: str) -> Over:
        """``over`` as each device runs it on its own models, for ``'loop'`` over a model axis
        split across devices (``'vmap'`` and a split batch axis are left to XLA's partitioner,
        which cannot split a loop over the models)."""
        if self.mesh is None or strategy != "loop":
            return over
        mesh = self.mesh

        def on_each_device(function: Callable[..., Any], per_model_args: tuple, shared_args: tuple) -> Any:
            split = jax.shard_map(
                functools.partial(over, function), mesh=mesh, in_specs=(PartitionSpec(DATA), PartitionSpec()),
                out_specs=PartitionSpec(DATA), check_vma=False,
            )  # fmt: skip
            return split(per_model_args, shared_args)

        return on_each_device

    def put_state(self, train_state: PyTree) -> PyTree:
        """The stacked train state on the mesh: split along the model axis, or replicated."""
        if self.mesh is None:
            return train_state
        spec = PartitionSpec(DATA) if self.shard == "models" else PartitionSpec()
        return put_tree(train_state, jax.tree.map(lambda _: NamedSharding(self.mesh, spec), train_state))

    def batch(self, shared_order: bool) -> NamedSharding | None:
        """Where the batches go: (M, B, ...) split along M or B; with ``shared_order``, (B, ...)
        replicated or split along B. None: the default device."""
        if self.mesh is None:
            return None
        if self.shard == "models":
            return NamedSharding(self.mesh, PartitionSpec() if shared_order else PartitionSpec(DATA))
        return NamedSharding(self.mesh, PartitionSpec(DATA) if shared_order else PartitionSpec(None, DATA))


def default_strategy() -> str:
    """``'loop'`` where the default device is a CPU, else ``'vmap'`` (see `over_models`)."""
    return "loop" if jax.default_backend() == "cpu" else "vmap"


Over = Callable[[Callable[..., Any], tuple, tuple], Any]  # (function, per-model args, shared args)


def over_models(strategy: str, chunk: int) -> Over:
    """``over(function, per_model_args, shared_args)``: ``function(*per_model_args[m],
    *shared_args)`` for every model m, stacked on a leading axis.

    ``'vmap'``: one ``vmap`` over the models, or ``lax.map`` over chunks of ``chunk`` of them.
    ``'loop'``: each model's own computation, one after the other in the same program (compile
    time grows with the models; XLA:CPU runs a batched convolution, which ``vmap`` makes of the
    models' kernels, far slower than M plain ones); chunks of ``chunk`` models are kept apart by
    an optimisation barrier, so only one chunk's activations are live at a time.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}: use one of {STRATEGIES}")

    def over(function: Callable[..., Any], per_model_args: tuple, shared_args: tuple) -> Any:
        def one(args: tuple) -> Any:
            return function(*args, *shared_args)

        models = len(jax.tree_util.tree_leaves(per_model_args)[0])
        if strategy == "loop":
            return _loop(one, per_model_args, models, chunk)
        if chunk >= models:
            return jax.vmap(one)(per_model_args)
        return jax.lax.map(one, per_model_args, batch_size=chunk)

    return over


def _loop(one: Callable[[tuple], Any], per_model_args: tuple, models: int, chunk: int) -> Any:
    """``one`` applied to each model's slice in turn, chunk after chunk, stacked."""
    outputs: list[Any] = []
    for start in range(0, models, chunk):
        if outputs:  # the next chunk's inputs wait for the last chunk's outputs
            outputs[-1], per_model_args = jax.lax.optimization_barrier((outputs[-1], per_model_args))
        for model in range(start, min(start + chunk, models)):
            outputs.append(one(jax.tree_util.tree_map(lambda leaf, m=model: leaf[m], per_model_args)))
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *outputs)
