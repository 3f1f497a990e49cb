"""One of two processes of a data-parallel run on localhost, started by test_multiprocess.py.

    JAXCONV_COORDINATOR=localhost:PORT JAXCONV_NUM_PROCESSES=2 JAXCONV_PROCESS_ID=I \
    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu python multiprocess_worker.py DIR

Both processes train the same net on a mesh of their 4 devices, on even steps each
reading only its own rows of the global batch (`global_batch`), on odd steps passing the
whole host batch that both hold; halfway they save a checkpoint (process 0 writes),
restore it and carry on. Each then trains the same net on one of its own devices on
the whole global batches with `jaxconv.train.make_train_step` (the reference) and
writes DIR/result_I.json with the largest relative differences. Last, both save the
trained state with an FSDP-style parameter split over the 4 devices (rows 0-3 on process
0's, 4-7 on process 1's) through Orbax, each process writing its own shards, restore it
into the same split and check their shards; process 0 writes the gathered state as
DIR/final.npz for the test to compare the Orbax checkpoint read in one process with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import optax

import jaxconv as jc
from jaxconv import distributed
from jaxconv.train import (
    OrbaxStore,
    init_train_state,
    load_checkpoint,
    make_preprocess,
    make_train_step,
    save_checkpoint,
)

BATCH, STEPS, SAVE_AFTER = 16, 4, 2


def net() -> jc.Layer:
    return jc.serial(
        jc.Conv(4, 3, padding=1, use_bias=False), jc.BatchNorm(), jc.Relu, jc.MaxPool(2),
        jc.Flatten, jc.Dropout(0.3), jc.Dense(10),
    )  # fmt: skip


def global_batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's global batches, (16, 8, 8, 1) uint8 images and (16,) labels, known to every process
    (as a dataset on a shared disk is); each process reads only its rows."""
    rng = np.random.default_rng(0)
    return [
        (rng.integers(0, 256, (BATCH, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, BATCH).astype(np.int32))
        for _ in range(STEPS)
    ]


def local_copy(tree):
    """This process's copy of a replicated tree, as NumPy arrays (keys as their data)."""

    def copy(leaf: jax.Array) -> np.ndarray:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.asarray(leaf.addressable_data(0))

    return jax.tree.map(copy, tree)


def relative(result, reference) -> float:
    diffs = [
        float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
        for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(reference), strict=True)
    ]
    return max(diffs)


def sharded_round_trip(directory: Path, train_state, mesh) -> bool:
    """Save ``train_state`` and an (8, 3) parameter split by rows over the mesh through Orbax and
    restore both into the same placement: is every shard this process holds what it saved?"""
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    whole = np.arange(24, dtype=np.float32).reshape(8, 3)
    fsdp = jax.make_array_from_callback(whole.shape, split, lambda index: whole[index])
    store = OrbaxStore(directory / "orbax")
    store.save(STEPS, {"fsdp": fsdp, "train": train_state}, {"step": STEPS})
    store.close()
    like = {"fsdp": jax.make_array_from_callback(whole.shape, split, lambda index: 0 * whole[index]),
            "train": train_state}  # fmt: skip
    restored, metadata = OrbaxStore(directory / "orbax", writer=False).restore(like)
    shards_equal = all(
        np.array_equal(np.asarray(shard.data), whole[shard.index])
        for shard in restored["fsdp"].addressable_shards
    )
    save_checkpoint(directory / "final.npz", train_state)
    return (
        shards_equal
        and restored["fsdp"].sharding == split
        and relative(local_copy(restored["train"]), local_copy(train_state)) == 0.0
        and metadata == {"step": STEPS}
    )


def main(directory: Path) -> None:
    distributed.initialize()  # from JAXCONV_COORDINATOR, JAXCONV_NUM_PROCESSES, JAXCONV_PROCESS_ID
    jax.config.update("jax_default_matmul_precision", "highest")
    optimizer = optax.sgd(0.1, momentum=0.9)
    preprocess = make_preprocess(127.0, 64.0, flip=True)
    start = init_train_state(net(), optimizer, (-1, 8, 8, 1), jax.random.key(0))
    data = global_batches()

    mesh = distributed.make_mesh()
    rows = distributed.process_rows(BATCH, mesh)
    step = distributed.make_sharded_train_step(net(), optimizer, mesh, preprocess=preprocess)
    train_state = distributed.place_train_state(start, mesh)
    losses = []
    for t, (images, labels) in enumerate(data):
        if t == SAVE_AFTER:
            save_checkpoint(directory / "checkpoint.npz", train_state, {"step": t})
            saved = local_copy(train_state)
            train_state, metadata = load_checkpoint(directory / "checkpoint.npz", like=train_state)
            restored_equal = relative(local_copy(train_state), saved) == 0.0 and metadata == {"step": t}
        # even steps: each process reads only its rows; odd steps: every process holds the whole
        # batch, as in the fit loop, and the step takes this process's rows
        local = (images[rows], labels[rows])
        batch = (images, labels) if t % 2 else distributed.global_batch(local, mesh)
        train_state, metrics = step(train_state, *batch)
        losses.append(float(metrics["loss"]))

    reference_step = make_train_step(net(), optimizer, preprocess=preprocess, donate=False)
    reference, reference_losses = start, []
    for images, labels in data:
        reference, metrics = reference_step(reference, images, labels)
        reference_losses.append(float(metrics["loss"]))

    result = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "rows": [rows.start, rows.stop],
        "params": relative(local_copy(train_state.params), local_copy(reference.params)),
        "state": relative(local_copy(train_state.state), local_copy(reference.state)),
        "loss": relative(np.array(losses), np.array(reference_losses)),
        "steps": int(np.asarray(train_state.step.addressable_data(0))),
        "restored_equal": restored_equal,
        "orbax_equal": sharded_round_trip(directory, train_state, mesh),
    }
    (directory / f"result_{jax.process_index()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
