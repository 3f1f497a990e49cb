"""Where `fit_many`'s arrays live on several devices: the model axis or the batch axis split.

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

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxconv.core import PyTree
from jaxconv.distributed import DATA, make_mesh
from jaxconv.distributed.placement import put_tree
from jaxconv.errors import ConfigError

SHARDS = ("models", "batch")


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
