"""Data-parallel throughput: one train step on 8 (forced CPU) devices against one device.

Trains the default model (`convnet`: CONV-BN-RELU-POOL x2, FC, Dropout, FC;
Fashion-MNIST's (N, 28, 28, 1) uint8 images, normalised inside the step) on the
same global batch three ways: the single-device step of `jaxconv.train`, the
sharded-``jit`` step and the ``pmap`` step of `jaxconv.distributed` over a mesh
of all devices. Every step gets host (NumPy) batches, as in the fit loop, so the
transfer to the devices is timed too. Each round times ``--steps`` consecutive
steps of each variant (rounds interleaved); the figure is the median time per
step and the throughput ratio data-parallel / single device.

    python benchmarks/data_parallel.py [--batch-size 256] [--repeats 7] [--steps 5] [--devices 8]

On a CPU the script starts JAX with ``--devices`` forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``); they share the machine's
cores, so the ratio measures the overhead of splitting the step (collectives,
transfers, per-device dispatch), not a speed-up.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable

from _timing import median_seconds  # benchmarks/ is on the path when run as a script


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--devices", type=int, default=8, help="forced CPU devices (CPU only)")
    return parser.parse_args()


def main() -> None:
    args = parse()
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

    import jax
    import numpy as np
    import optax

    import jaxconv as jc
    from jaxconv import distributed
    from jaxconv.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch_size).astype(np.int32)
    preprocess = jc.train.make_preprocess(FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    optimizer = optax.adamw(1e-3)
    mesh = distributed.make_mesh()
    options = {"preprocess": preprocess}
    net, pmap_net = jc.models.small.convnet(), _with_synchronised_batch_norm()
    start = jc.train.init_train_state(net, optimizer, (-1, 28, 28, 1), jax.random.key(0))

    variants = {
        "single device": (jc.train.make_train_step(net, optimizer, **options), start),
        "sharded jit": (distributed.make_sharded_train_step(net, optimizer, mesh, **options), start),
        "pmap": (distributed.make_pmap_train_step(pmap_net, optimizer, mesh, **options), start),
    }
    states = {name: _copy(state) for name, (_, state) in variants.items()}

    def runner(name: str) -> Callable[[], object]:
        step = variants[name][0]

        def run_steps():
            state = states[name]
            for _ in range(args.steps):
                state, metrics = step(state, images, labels)
            states[name] = state
            return metrics["loss"]

        return run_steps

    seconds = median_seconds({name: runner(name) for name in variants}, args.repeats)
    per_step = {name: value / args.steps for name, value in seconds.items()}
    device = jax.devices()[0]
    print(
        f"{datetime.date.today()}  JAX {jax.__version__}  {len(mesh.devices.flat)} x {device.platform.upper()} "
        f"({device.device_kind}), {os.cpu_count()} cores, global batch {args.batch_size}, "
        f"median of {args.repeats} rounds x {args.steps} steps"
    )
    base = per_step["single device"]
    for name, value in per_step.items():
        print(
            f"  {name:14s} {1e3 * value:8.1f} ms/step  {args.batch_size / value:9,.0f} img/s  "
            f"throughput ratio {base / value:.3f}"
        )


def _with_synchronised_batch_norm():
    """The default model with its BatchNorm and Dropout layers synchronised over the mesh's 'data' axis."""
    import jaxconv as jc

    def stage(features: int) -> list[jc.Layer]:
        return [
            jc.Conv(features, 3, padding=1, use_bias=False),
            jc.BatchNorm(axis_name="data"),
            jc.Relu,
            jc.MaxPool(2),
        ]

    return jc.serial(
        *stage(32),
        *stage(64),
        jc.Flatten,
        jc.Dense(128),
        jc.Relu,
        jc.Dropout(0.3, axis_name="data"),
        jc.Dense(10),
    )


def _copy(tree):
    import jax

    return jax.tree.map(lambda leaf: leaf.copy(), tree)


if __name__ == "__main__":
    main()
