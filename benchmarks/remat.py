"""Rematerialisation and mixed precision: how large a batch fits, and what each costs per step.

1. The largest batch whose train step fits a memory budget, with and without
   ``remat=True`` (every residual block recomputed in the backward pass). The
   measure is XLA's: ``argument + output + temp - alias`` bytes of the compiled,
   donated train step's ``memory_analysis()`` (SGD with momentum), so nothing
   needs to run and any budget can be asked of any machine. The search fits a
   line through two small batches, then brackets and bisects around its guess.
2. Step time (medians of interleaved repeats) and memory of ResNet-20 in float32,
   in bfloat16 (`mixed_precision`) and with remat, at one batch size.

    python benchmarks/remat.py [--model resnet50] [--budget-gib 8] [--batch-size 64] [--smoke] [--no-step-table]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import median_seconds
from memory_vs_xla import xla_train_step_bytes

import jaxconv as jc
import jaxconv.train as jt

GIB, MIB = 2**30, 2**20
OPTIMIZER = optax.sgd(0.1, momentum=0.9)


def largest_batch(bytes_at: Callable[[int], int], budget: int, probes: tuple[int, int] = (8, 16)) -> int:
    """The largest batch ``b`` with ``bytes_at(b) <= budget``, for ``bytes_at`` increasing in ``b``."""
    memo: dict[int, int] = {}

    def fits(batch: int) -> bool:
        if batch not in memo:
            memo[batch] = bytes_at(batch)
        return memo[batch] <= budget

    small, large = probes
    if not fits(small):
        return _bisect(fits, 0, small)
    fits(large)
    per_example = max(1.0, (memo[large] - memo[small]) / (large - small))
    guess = max(small, small + int((budget - memo[small]) / per_example))
    step = max(1, guess // 64)
    if fits(guess):
        low, high = guess, guess + step
        while fits(high):
            low, high, step = high, high + 2 * step, 2 * step
    else:
        low, high = guess - step, guess
        while not fits(max(low, small)):
            high, low, step = low, low - 2 * step, 2 * step
        low = max(low, small)
    return _bisect(fits, low, high)


def _bisect(fits: Callable[[int], bool], low: int, high: int) -> int:
    """The largest batch in [low, high) that fits, given that ``low`` fits (or is 0) and ``high`` does not."""
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def batch_table(model: str, budget: int) -> None:
    shape = jc.models.input_shape(model)
    print(
        f"## {model} at {shape[1]}x{shape[2]}: the largest batch whose train step fits {budget / GIB:g} GiB"
    )
    print(
        "| variant | largest batch | bytes at that batch (GiB) | per extra example (MiB) | compiles | seconds |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    found = {}
    for variant, remat in (("plain", False), ("remat=True", True)):
        net = jc.models.get(model, remat=remat)
        measured: dict[int, int] = {}

        def bytes_at(batch: int, net=net, measured=measured) -> int:
            measured[batch] = xla_train_step_bytes(net, shape, batch, OPTIMIZER)
            return measured[batch]

        start = time.perf_counter()
        found[variant] = batch = largest_batch(bytes_at, budget)
        seconds = time.perf_counter() - start
        slope = (measured[16] - measured[8]) / 8 / MIB if 16 in measured else float("nan")
        print(
            f"| {variant} | {batch} | {measured.get(batch, 0) / GIB:.2f} | {slope:.1f} | {len(measured)} "
            f"| {seconds:.0f} |"
        )
    print(f"\nremat fits **{found['remat=True'] / max(found['plain'], 1):.2f}x** the batch\n")


def step_table(batch_size: int, repeats: int) -> None:
    shape = jc.models.input_shape("resnet20")
    variants = {
        "float32": jc.models.get("resnet20"),
        "bfloat16": jc.models.get("resnet20", dtype=jnp.bfloat16),
        "float32, remat": jc.models.get("resnet20", remat=True),
    }
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch_size, *shape[1:])), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)
    calls = {}
    for name, net in variants.items():
        step = jt.make_train_step(net, OPTIMIZER, donate=False)
        start = jt.init_train_state(net, OPTIMIZER, shape, jax.random.key(0))
        calls[name] = lambda step=step, start=start: step(start, images, labels)[1]["loss"]
    seconds = median_seconds(calls, repeats)
    memory = {name: xla_train_step_bytes(net, shape, batch_size, OPTIMIZER) for name, net in variants.items()}
    print(
        f"## resnet20 train step, batch {batch_size}, {repeats} interleaved repeats, {jax.devices()[0].platform}"
    )
    print("| variant | ms/step | images/s | time / float32 | memory (MiB) | memory / float32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in variants:
        print(
            f"| {name} | {1e3 * seconds[name]:.1f} | {batch_size / seconds[name]:.0f} "
            f"| {seconds[name] / seconds['float32']:.2f} | {memory[name] / MIB:.1f} "
            f"| {memory[name] / memory['float32']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a zoo model with residual blocks")
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=64, help="for the ResNet-20 step timings")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--smoke", action="store_true", help="resnet20, a 0.25 GiB budget, batch 8, 2 repeats"
    )
    parser.add_argument("--no-step-table", action="store_true", help="only the largest batches (part 1)")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.budget_gib, args.batch_size, args.repeats = "resnet20", 0.25, 8, 2
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}\n")
    batch_table(args.model, int(args.budget_gib * GIB))
    if not args.no_step_table:
        step_table(args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
