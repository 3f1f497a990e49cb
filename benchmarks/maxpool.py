"""MaxPool's tiled formulation (reshape and max, custom derivative) against `lax.reduce_window`.

XLA's CPU backend lowers max pooling's gradient (``select_and_scatter``) slowly. For windows that
tile the input, `jaxconv.layers.pool` computes the same numbers as a reshape and a max
(`pool.tiled_max`); `pool.max_pool_impl(...)`, read at trace time, switches it off. Two comparisons,
each first checked to compute identical results, then timed in interleaved repeats (medians):

1. the default model's train step (`jaxconv.models.small.convnet`, AdamW, batch 128, float32 images);
2. the 2x2 MaxPool layer alone, forward and backward, on the default model's two pool inputs.

    python benchmarks/maxpool.py [--batch-size 128] [--steps 10] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxconv as jc
import jaxconv.layers.pool as pool
import jaxconv.train as jt
from jaxconv.models.small import convnet

PATHS = {"tiled": True, "reduce_window": False}  # name -> whether the tiled form is traced


def traced_with(fast: bool, fn: Callable, *args):
    """Call the jitted ``fn`` once (tracing and compiling it) with the tiled max pool or not,
    after checking that its program has a ``select_and_scatter`` exactly when ``fast`` is off."""
    with pool.max_pool_impl("tiled" if fast else "reduce_window"):
        assert ("select_and_scatter" in fn.lower(*args).as_text()) != fast, "not the intended path"
        return jax.block_until_ready(fn(*args))


def interleaved(run: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each ``run[name]()``, the contestants alternating in order."""
    times: dict[str, list[float]] = {name: [] for name in run}
    for repeat in range(repeats):
        for name in list(run) if repeat % 2 == 0 else list(run)[::-1]:
            times[name].append(run[name]())
    return times


def seconds_per_call(fn: Callable, x: jax.Array, calls: int) -> Callable[[], float]:
    """A timer: ``calls`` calls of ``fn(x)``, seconds per call."""

    def run() -> float:
        begin = time.perf_counter()
        for _ in range(calls):
            out = fn(x)
        jax.block_until_ready(out)
        return (time.perf_counter() - begin) / calls

    return run


def report(title: str, times: dict[str, list[float]], unit_count: int, unit: str) -> None:
    """Print each path's median (and range) and the ratio of the medians."""
    print(title)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in median.items():
        spread = f"{1e3 * min(times[name]):.2f}-{1e3 * max(times[name]):.2f}"
        print(f"  {name:14s} {1e3 * seconds:9.2f} ms ({spread})  {unit_count / seconds:10.0f} {unit}/s")
    print(f"  speed-up (reduce_window / tiled): {median['reduce_window'] / median['tiled']:.2f}x")


# --- 1. the default model's train step ------------------------------------------------------------


def train_step_benchmark(batch_size: int, steps: int, repeats: int) -> None:
    net, optimizer = convnet(), optax.adamw(1e-3)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch_size, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)
    start = jt.init_train_state(net, optimizer, (-1, 28, 28, 1), jax.random.key(0))
    step_of = {name: jt.make_train_step(net, optimizer, donate=False) for name in PATHS}
    states, losses = {}, {}
    for name, fast in PATHS.items():  # compile each with its path; three steps from the same start
        states[name], losses[name] = start, []
        for _ in range(3):
            states[name], metrics = traced_with(fast, step_of[name], states[name], images, labels)
            losses[name].append(float(metrics["loss"]))
    same_params = jax.tree.all(
        jax.tree.map(np.array_equal, states["tiled"].params, states["reduce_window"].params)
    )
    print(
        f"identical: losses {losses['tiled'] == losses['reduce_window']}, params after 3 steps {same_params}"
    )
    assert losses["tiled"] == losses["reduce_window"] and same_params, "the two paths disagree"

    def timed(name: str) -> Callable[[], float]:
        def run() -> float:
            state, begin = states[name], time.perf_counter()
            for _ in range(steps):
                state, metrics = step_of[name](state, images, labels)
            jax.block_until_ready(metrics)
            states[name] = state
            return (time.perf_counter() - begin) / steps

        return run

    times = interleaved({name: timed(name) for name in PATHS}, repeats)
    report(
        f"train step, batch {batch_size}, {repeats} interleaved blocks of {steps} steps:",
        times,
        batch_size,
        "images",
    )


# --- 2. the MaxPool layer alone -------------------------------------------------------------------


def layer_benchmark(batch_size: int, repeats: int, calls: int = 20) -> None:
    def forward_backward():  # a new function each time: jit caches traces by function
        def pooled_and_gradient(x):
            y, vjp = jax.vjp(lambda x: jc.MaxPool(2).apply({}, {}, x)[0], x)
            return y, vjp(y)[0]

        return jax.jit(pooled_and_gradient)

    rng = np.random.default_rng(0)
    for shape in [(batch_size, 28, 28, 32), (batch_size, 14, 14, 64)]:
        x = jnp.asarray(np.maximum(rng.standard_normal(shape), 0), jnp.float32)  # a ReLU's output
        fn = {name: forward_backward() for name in PATHS}
        results = {name: traced_with(fast, fn[name], x) for name, fast in PATHS.items()}
        same = all(np.array_equal(a, b) for a, b in zip(*results.values(), strict=True))
        assert same, "the two paths disagree"

        times = interleaved({name: seconds_per_call(fn[name], x, calls) for name in PATHS}, repeats)
        report(f"MaxPool(2) forward + backward on {shape} (identical results):", times, shape[0], "images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per path")
    parser.add_argument("--smoke", action="store_true", help="a quick run (CI): 2 blocks of 2 steps")
    args = parser.parse_args()
    steps, repeats = (2, 2) if args.smoke else (args.steps, args.repeats)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, load average {os.getloadavg()[0]:.1f}")
    train_step_benchmark(args.batch_size, steps, repeats)
    layer_benchmark(args.batch_size, repeats)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
