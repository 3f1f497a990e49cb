"""Run in a subprocess with 8 forced CPU devices by test_data_parallel.py; prints one JSON object.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python data_parallel_runner.py

Each comparison is the largest relative difference, max |a - b| / max |b| over a
tree's leaves, between a data-parallel run and the single-device step of
`jaxconv.train` on the same global batches, Dropout, StochasticDepth and random
crops and flips included.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv as jc
from jaxconv import distributed
from jaxconv.runs.loop import _make_eval_step, _make_train_step
from jaxconv.train import TrainState, init_train_state, make_eval_step, make_preprocess, make_train_step

DEVICES, BATCH, STEPS = 8, 64, 2
SHAPE = (-1, 8, 8, 3)
compiles: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: (
        compiles.append(event) if event.endswith("backend_compile_duration") else None
    )
)


def bn_net(axis_name: str | None) -> jc.Layer:
    return jc.serial(
        jc.Conv(8, 3, padding=1, use_bias=False), jc.BatchNorm(axis_name=axis_name), jc.Relu, jc.MaxPool(2),
        jc.Flatten, jc.Dense(10),
    )  # fmt: skip


def dropout_net(axis_name: str | None = None) -> jc.Layer:
    return jc.serial(
        jc.Conv(8, 3, padding=1), jc.Relu,
        jc.residual(jc.serial(jc.Conv(8, 3, padding=1), jc.StochasticDepth(0.5, axis_name))),
        jc.Flatten, jc.Dropout(0.5, axis_name), jc.Dense(10),
    )  # fmt: skip


def batches(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(BATCH, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, BATCH).astype(np.int32))
        for _ in range(steps)
    ]


def uint8_batches(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [
        (rng.integers(0, 256, (BATCH, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, BATCH).astype(np.int32))
        for _ in range(steps)
    ]


def relative(result, reference) -> float:
    diffs = jax.tree.map(
        lambda a, b: float(
            np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(np.asarray(b))), 1e-30)
        ),
        result,
        reference,
    )
    return max(jax.tree.leaves(diffs), default=0.0)


class Trained(NamedTuple):
    state: TrainState
    losses: jax.Array
    recompiles: int  # compilations after the first step


def run(step, train_state, data) -> Trained:
    losses, recompiles = [], 0
    for t, (images, labels) in enumerate(data):
        compiled_before = len(compiles)
        train_state, metrics = step(train_state, images, labels)
        recompiles += (len(compiles) - compiled_before) if t else 0
        losses.append(metrics["loss"])
    return Trained(train_state, jnp.stack(losses), recompiles)


def compare(result: Trained, reference: Trained) -> dict:
    (state, losses, recompiles), (ref_state, ref_losses, _) = result, reference
    return {
        "params": relative(state.params, ref_state.params),
        "state": relative(state.state, ref_state.state),
        "loss": relative(losses, ref_losses),
        "steps": int(state.step),
        "recompiles": recompiles,
        "split_leaves": sum(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state)),
        "devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
    }


def error(call) -> dict:
    before = len(compiles)
    try:
        call()
    except ValueError as caught:
        return {"type": type(caught).__name__, "message": str(caught), "compiled": len(compiles) - before}
    return {"type": None, "message": "", "compiled": len(compiles) - before}


def fit_with_devices() -> dict:
    """`jaxconv.runs.fit` with ``devices=8`` (what ``jaxconv train --devices 8`` runs) against 1 device,
    evaluating with test-time augmentation."""
    rng = np.random.default_rng(1)

    def split(name: str, n: int) -> jc.data.Dataset:
        images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int32)
        return jc.data.Dataset(
            "synthetic", name, images, labels, tuple("0123456789"), (0.5,) * 3, (0.25,) * 3
        )

    train, test = split("train", 128), split("test", 64)
    results = [
        jc.runs.fit(
            bn_net(None),
            train,
            test,
            jc.runs.TrainConfig(
                epochs=1,
                batch_size=64,
                eval_batch_size=64,
                devices=devices,
                augment="flip",
                tta="crop=1,flip",
            ),
            progress=False,
        )
        for devices in (1, DEVICES)
    ]
    single, parallel = (result.train_state for result in results)
    return {
        "params": relative(parallel.params, single.params),
        "state": relative(parallel.state, single.state),
        "top1": abs(results[1].evaluation.top1 - results[0].evaluation.top1),  # over 10 test-time views
        "loss": abs(results[1].evaluation.loss - results[0].evaluation.loss),
    }


def main() -> None:
    jax.config.update("jax_default_matmul_precision", "highest")
    optimizer = optax.sgd(0.1, momentum=0.9)
    mesh = distributed.make_mesh(DEVICES)
    data = batches(STEPS)
    key = jax.random.key(0)
    out: dict = {"device_count": jax.device_count()}

    state = init_train_state(bn_net(None), optimizer, SHAPE, key)
    reference = run(make_train_step(bn_net(None), optimizer, donate=False), state, data)
    out["bn_jit"] = compare(
        run(distributed.make_sharded_train_step(bn_net(None), optimizer, mesh), state, data),
        reference,
    )
    out["bn_fsdp"] = compare(
        run(
            distributed.make_sharded_train_step(bn_net(None), optimizer, mesh, shard_params=True), state, data
        ),
        reference,
    )
    out["bn_pmap"] = compare(
        run(distributed.make_pmap_train_step(bn_net("data"), optimizer, mesh), state, data),
        reference,
    )

    state = init_train_state(dropout_net(), optimizer, SHAPE, key)
    reference = run(make_train_step(dropout_net(), optimizer, donate=False), state, data)
    out["dropout_jit"] = compare(
        run(distributed.make_sharded_train_step(dropout_net(), optimizer, mesh), state, data),
        reference,
    )
    out["dropout_devices_8"] = compare(
        run(_make_train_step(dropout_net(), optimizer, devices=DEVICES), state, data),
        reference,
    )
    out["dropout_pmap"] = compare(
        run(distributed.make_pmap_train_step(dropout_net("data"), optimizer, mesh), state, data),
        reference,
    )
    augment = {"preprocess": make_preprocess((0.5,) * 3, (0.25,) * 3, crop_padding=2, flip=True)}
    augmented = uint8_batches(STEPS)
    out["augment_pmap"] = compare(
        run(
            distributed.make_pmap_train_step(dropout_net("data"), optimizer, mesh, **augment),
            state,
            augmented,
        ),
        run(make_train_step(dropout_net(), optimizer, donate=False, **augment), state, augmented),
    )

    trained = reference.state
    single_eval = make_eval_step(dropout_net())
    sharded_eval = _make_eval_step(dropout_net(), devices=DEVICES)
    placed = distributed.place_train_state(trained, mesh)
    out["eval"] = {
        size: relative(
            sharded_eval(placed.params, placed.state, images[:size], labels[:size]),
            single_eval(trained.params, trained.state, images[:size], labels[:size]),
        )
        for size, (images, labels) in ((64, data[0]), (12, data[0]))
    }

    sharded = distributed.make_sharded_train_step(bn_net(None), optimizer, mesh)
    pmap_step = distributed.make_pmap_train_step(bn_net("data"), optimizer, mesh)
    state = init_train_state(bn_net(None), optimizer, SHAPE, key)
    images, labels = data[0]
    out["errors"] = {
        "jit_batch": error(lambda: sharded(state, images[:60], labels[:60])),
        "pmap_batch": error(lambda: pmap_step(state, images[:60], labels[:60])),
        "labels": error(lambda: sharded(state, images, labels[:56])),
        "mesh_too_big": error(lambda: distributed.make_mesh(16)),
        "mesh_axis": error(
            lambda: distributed.make_sharded_train_step(
                bn_net(None), optimizer, distributed.make_mesh(8, "batch")
            )
        ),
        "shard_batch": error(lambda: distributed.shard_batch((images[:12], labels[:12]), mesh)),
        "pmap_dropout": error(lambda: distributed.make_pmap_train_step(dropout_net(), optimizer, mesh)),
        "jit_dropout": error(
            lambda: distributed.make_sharded_train_step(dropout_net("data"), optimizer, mesh)
        ),
    }
    out["fit"] = fit_with_devices()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
