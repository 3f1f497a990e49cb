"""DP-SGD on fixed features: Tramer & Boneh's ScatterNet models on Fashion-MNIST.

Claims: at (epsilon 3, delta 1e-5) a linear model on scattering features reaches 89.7% on
Fashion-MNIST and a small CNN on them 89.0%, beating end-to-end CNNs trained with DP-SGD
(86.0%): the features cost no privacy and leave few weights for the noise (Tramer & Boneh
2021, "Differentially Private Learning Needs Better Features (or Much More Data)").
De et al. (2022) add GroupNorm after each convolution and weight standardisation (WS).

Measured, each row with an EMA of the weights (decay 0.99) evaluated beside them:
- `scatternet_linear` (the scattering, GroupNorm, a linear classifier) in their setting
  (Poisson batches of 8192, SGD lr 16 with momentum 0.9, clip 0.1, 40 epochs) at epsilon 1,
  2, 3 and 8;
- `scatternet_cnn` in theirs (batches of 2048, lr 4) at epsilon 3, as published (tanh
  convolutions), with GroupNorm after each convolution, and with GroupNorm and WS.
The scattering has no parameters, so the features of every image are computed once (here once
for all rows; `fit` does the same for each run, `jaxconv.runs.fixed_front`) and the rest of
each net trains on them. The smoke run checks that one epoch gives the same weights as
computing the scattering at every step.

    python experiments/dp_scatternet.py [--smoke | --full] [--out DIR] [--only linear,cnn]
"""

from __future__ import annotations

import dataclasses
import time

import common
import jax
import jax.numpy as jnp

import jaxconv as jc
from jaxconv.models.small import scatternet_cnn
from jaxconv.runs import TrainConfig, fit, fixed_front
from jaxconv.runs.recipes import recipe

RECIPE = recipe("dp_scatternet")  # `jaxconv train --recipe dp_scatternet`: the linear model at epsilon 3
DEFAULT = common.Budget("default", None, None, RECIPE["epochs"], RECIPE["batch_size"])
FULL = DEFAULT
SMOKE = common.Budget("smoke", 256, 128, 1, 64)
DP = {
    key: value
    for key, value in RECIPE.items()
    if key not in ("model", "dataset", "epochs", "batch_size", "dp_epsilon")
}
CNN = {"batch_size": 2048, "lr": 4.0}  # Tramer & Boneh's for the CNN on scattering features
ROWS = {  # name -> (net, epsilon, options over DP)
    **{f"linear, epsilon {e:g}": (jc.models.get("scatternet_linear"), e, {}) for e in (1.0, 2.0, 3.0, 8.0)},
    "cnn, epsilon 3": (scatternet_cnn(), 3.0, CNN),
    "cnn + GroupNorm, epsilon 3": (scatternet_cnn(norm="group"), 3.0, CNN),
    "cnn + GroupNorm + WS, epsilon 3": (scatternet_cnn(norm="ws_group"), 3.0, CNN),
}


def train(net, train_data, test_data, budget: common.Budget, epsilon: float, options=None, **fit_options):
    options = options or {}
    batch_size = budget.batch_size if budget.name == "smoke" else options.get("batch_size", budget.batch_size)
    config = TrainConfig(
        epochs=budget.epochs, dp_epsilon=epsilon, **(DP | options | {"batch_size": batch_size})
    )
    started = time.perf_counter()
    result = fit(net, train_data, test_data, config, progress=False, divergence_rule=None, **fit_options)
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
    args = common.parse_args(__doc__, DEFAULT, FULL, SMOKE, rows=list(ROWS))
    train_data, test_data = common.load_fashion_mnist(args.budget)
    front, _ = fixed_front.split(jc.models.get(RECIPE["model"]))  # every row's nets start with it
    started = time.perf_counter()
    train_features, test_features = (
        fixed_front.outputs(front, train_data),
        fixed_front.outputs(front, test_data),
    )
    feature_seconds = round(time.perf_counter() - started, 1)
    print(f"features of {len(train_data) + len(test_data):,} images: {feature_seconds} s", flush=True)
    rows = []
    for name in args.rows:
        net, epsilon, options = ROWS[name]
        _, rest = fixed_front.split(net)
        result, seconds = train(rest, train_features, test_features, args.budget, epsilon, options)
        last = result.history[-1]
        rows.append({
            "net": name, "epsilon": round(last["epsilon"], 4),
            "noise_multiplier": round(result.privacy.noise_multiplier, 4), "test_top1": last["test_top1"],
            "test_ema_top1": last.get("test_ema_top1"), "seconds": round(seconds, 1),
        })  # fmt: skip
        print(f"{name}: test top-1 {last['test_top1']:.4f} (EMA {last.get('test_ema_top1')})", flush=True)
    extra = {"dp": DP, "cnn": CNN, "feature_seconds": feature_seconds}
    if args.budget.name == "smoke":
        extra["same_steps_max_difference"] = same_steps(train_data, test_data, args.budget)
    common.finish("dp_scatternet", args, rows, **extra)


if __name__ == "__main__":
    main()
