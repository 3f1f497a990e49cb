"""Data parallelism on JAX's own runtime: sharded ``jit``, ``pmap``, and several processes.

    import jaxconv as jc
    from jaxconv import distributed

    mesh = distributed.make_mesh()                    # every device, one axis named 'data'
    step = distributed.make_sharded_train_step(net, optimizer, mesh)
    train_state = distributed.place_train_state(jc.train.init_train_state(net, optimizer, shape, key), mesh)
    images, labels = distributed.shard_batch((images, labels), mesh)   # (N, H, W, C), (N,)
    train_state, metrics = step(train_state, images, labels)           # = the single-device step

The sharded-``jit`` step is the single-device step partitioned by XLA: same
result, Dropout included. The ``pmap`` step (`make_pmap_train_step`) averages
gradients with ``lax.pmean`` and needs ``BatchNorm``, ``Dropout`` and
``StochasticDepth`` built with ``axis_name='data'``; it then equals the
single-device step too, Dropout and augmentation included.
Across processes: `initialize`, then each process reads `process_rows` of every
global batch and assembles it with `global_batch`; `jaxconv.train.OrbaxStore` (each
process writing its shards) and `jaxconv.train.save_checkpoint` / `load_checkpoint` (one
gathered ``.npz``) handle train states spread over processes.
"""

from jaxconv.distributed.multiprocess import initialize
from jaxconv.distributed.placement import (
    DATA,
    batch_sharding,
    check_batch,
    check_mesh,
    fsdp_shardings,
    global_batch,
    make_mesh,
    place_train_state,
    process_rows,
    replicate,
    replicated,
    shard_batch,
)
from jaxconv.distributed.steps import (
    batch_norm_axes,
    make_pmap_train_step,
    make_sharded_eval_step,
    make_sharded_train_step,
    pmean_gradients,
)

__all__ = [
    "DATA",
    "batch_norm_axes",
    "batch_sharding",
    "check_batch",
    "check_mesh",
    "fsdp_shardings",
    "global_batch",
    "initialize",
    "make_mesh",
    "make_pmap_train_step",
    "make_sharded_eval_step",
    "make_sharded_train_step",
    "place_train_state",
    "pmean_gradients",
    "process_rows",
    "replicate",
    "replicated",
    "shard_batch",
]
