"""DP-SGD on fixed features: Tramer & Boneh's ScatterNet + linear model on Fashion-MNIST.

Claims: at (epsilon 3, delta 1e-5) a linear model on scattering features reaches 89.7% on
Fashion-MNIST, beating end-to-end CNNs trained with DP-SGD (86.0%): the features cost no
privacy and leave few weights for the noise (Tramer & Boneh 2021, "Differentially Private
Learning Needs Better Features (or Much More Data)").

Measured: `scatternet_linear` (the scattering transform, GroupNorm, a linear classifier) with
their setting (Poisson batches of 8192, SGD lr 16 with momentum 0.9, clip 0.1, 40 epochs) at
epsilon 1, 2, 3 and 8, each with an EMA of the weights (decay 0.99) evaluated beside them.
The scattering has no parameters, so the features of every image are computed once (here once
for all rows; `fit` does the same for each run, `jaxconv.runs.fixed_front`) and the GroupNorm
and the classifier train on them. The smoke run checks that one epoch gives the same weights
as computing the scattering at every step.

    python experiments/dp_scatternet.py [--smoke | --full] [--out DIR] [--only 3,8]
"""

from __future__ import annotations

import dataclasses
import time

import common
import jax
import jax.numpy as jnp

import jaxconv as jc
from jaxconv.runs import TrainConfig, fit, fixed_front
from jaxconv.runs.recipes import recipe

RECIPE = recipe("dp_scatternet")  # `jaxconv train --recipe dp_scatternet`: these settings at epsilon 3
DEFAULT = common.Budget("default", None, None, RECIPE["epochs"], RECIPE["batch_size"])
FULL = DEFAULT
SMOKE = common.Budget("smoke", 256, 128, 1, 64)
EPSILONS = (1.0, 2.0, 3.0, 8.0)
DP = {
    key: value
    for key, value in RECIPE.items()
    if key not in ("model", "dataset", "epochs", "batch_size", "dp_epsilon")
}


def train(net, train_data, test_data, budget: common.Budget, epsilon: float, **options):
    config = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, dp_epsilon=epsilon, **DP)
    started = time.perf_counter()
    result = fit(net, train_data, test_data, config, progress=False, divergence_rule=None, **options)
    return result, time.perf_counter() - started


def same_steps(train_data, test_data, budget: common.Budget) -> float:
    """The largest difference between the weights of one epoch with the scattering computed at
    each step and with it computed once (`fit`'s default, `jaxconv.runs.fixed_front`)."""
    net = jc.models.get(RECIPE["model"])
    one_epoch = dataclasses.replace(budget, epochs=1)
    each_step, _ = train(net, train_data, test_data, one_epoch, 3.0, fixed_front_once=False)
    once, _ = train(net, train_data, test_data, one_epoch, 3.0)
    differences = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), each_step.train_state.params, once.train_state.params
    )
    return max(jax.tree.leaves(differences))


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL, SMOKE, rows=[f"epsilon {e:g}" for e in EPSILONS])
    train_data, test_data = common.load_fashion_mnist(args.budget)
    front, rest = fixed_front.split(jc.models.get(RECIPE["model"]))
    started = time.perf_counter()
    train_features, test_features = (
        fixed_front.outputs(front, train_data),
        fixed_front.outputs(front, test_data),
    )
    feature_seconds = round(time.perf_counter() - started, 1)
    print(
        f"scattering features of {len(train_data) + len(test_data):,} images: {feature_seconds} s", flush=True
    )
    rows = []
    for row in args.rows:
        epsilon = float(row.split()[-1])
        result, seconds = train(rest, train_features, test_features, args.budget, epsilon)
        last = result.history[-1]
        rows.append({
            "net": RECIPE["model"], "epsilon": round(last["epsilon"], 4),
            "noise_multiplier": round(result.privacy.noise_multiplier, 4), "test_top1": last["test_top1"],
            "test_ema_top1": last.get("test_ema_top1"), "seconds": round(seconds, 1),
        })  # fmt: skip
        print(f"{row}: test top-1 {last['test_top1']:.4f} (EMA {last.get('test_ema_top1')})", flush=True)
    extra = {"dp": DP, "feature_seconds": feature_seconds}
    if args.budget.name == "smoke":
        extra["same_steps_max_difference"] = same_steps(train_data, test_data, args.budget)
    common.finish("dp_scatternet", args, rows, **extra)


if __name__ == "__main__":
    main()
