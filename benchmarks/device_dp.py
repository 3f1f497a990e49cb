"""Device check of De et al. (2022)'s DP-SGD recipe: WRN-16-4 (GroupNorm, weight standardisation),
Poisson batches of 4096 CIFAR-10-sized examples, augmentation multiplicity 16, physical chunks.

Runs a few hundred DP-SGD steps of `jaxconv.runs.private.make_private_train_step` on synthetic
uint8 images (no data set to carry), with crop and flip augmentation, and reports steps/s, the
device's peak memory and the projected time for the recipe's 875 steps, as one JSON line and a
short table. ``--smoke`` runs WRN-10-1, batch 32, K=2, 2 steps: it checks the script on a CPU.

    python benchmarks/device_dp.py [--steps 200] [--physical-batch-size 256] [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv.models.resnet import cifar_options, resnet
from jaxconv.privacy import noise_multiplier_for, padded_batch_size
from jaxconv.runs.private import PrivacyPlan, make_private_train_step
from jaxconv.train import init_train_state, make_preprocess

CIFAR_EXAMPLES, RECIPE_STEPS, DELTA = 50_000, 875, 1e-5


def settings(args: argparse.Namespace) -> dict:
    if args.smoke:
        return {"depth": 10, "widen": 1, "batch": 32, "augmult": 2, "physical": 16, "steps": 2}
    return {
        "depth": 16,
        "widen": 4,
        "batch": args.batch_size,
        "augmult": args.augmult,
        "physical": args.physical_batch_size,
        "steps": args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--augmult", type=int, default=16)
    parser.add_argument("--physical-batch-size", type=int, default=256)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    run = settings(args)
    rate = run["batch"] / CIFAR_EXAMPLES
    sigma = noise_multiplier_for(1.0, rate, RECIPE_STEPS, DELTA)  # De et al.'s epsilon-1 row: sigma 10
    plan = PrivacyPlan(rate, RECIPE_STEPS, sigma, 1.0, DELTA, CIFAR_EXAMPLES, run["augmult"], run["physical"])
    options = cifar_options(run["depth"], widen=run["widen"], extra_layers=4)
    net = resnet(**options, num_classes=10, preact=True, norm="ws_group")
    optimizer = optax.sgd(2.0)
    state = init_train_state(net, optimizer, (-1, 32, 32, 3), jax.random.key(0))
    preprocess = make_preprocess(np.full(3, 120.0), np.full(3, 64.0), crop_padding=4, flip=True)
    step = make_private_train_step(net, optimizer, plan, preprocess=preprocess)
    rows = plan.max_batch_size
    images = jax.random.randint(jax.random.key(1), (rows, 32, 32, 3), 0, 256).astype(jnp.uint8)
    labels = jnp.arange(rows) % 10
    real = padded_batch_size(CIFAR_EXAMPLES, rate) - 6 * int(np.sqrt(run["batch"]))  # about the expected size

    def masks(index: int) -> jax.Array:
        return jnp.arange(rows) < real + (index % 7) * 3  # the realised size varies; shapes do not

    begin = time.perf_counter()
    state, metrics = step(state, images, labels, masks(0))
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - begin
    begin = time.perf_counter()
    for index in range(1, run["steps"] + 1):
        state, metrics = step(state, images, labels, masks(index))
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - begin) / run["steps"]
    stats = jax.devices()[0].memory_stats() or {}
    result = {
        "device": jax.devices()[0].device_kind,
        "model": f"WRN-{run['depth']}-{run['widen']} ws_group",
        "batch": run["batch"],
        "augmult": run["augmult"],
        "physical_batch_size": run["physical"],
        "noise_multiplier": round(sigma, 3),
        "first_step_s": round(compile_seconds, 2),
        "steps_per_s": round(1 / seconds, 4),
        "examples_per_s": round(real / seconds, 1),
        "peak_memory_gib": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),
        "projected_875_steps_min": round(RECIPE_STEPS * seconds / 60, 1),
        "loss": float(metrics["loss"]),
    }
    print(json.dumps(result))
    for name, value in result.items():
        print(f"{name:26s} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
