"""DP-SGD on fixed features: Tramer & Boneh's ScatterNet + linear model on Fashion-MNIST.

Claims: at (epsilon 3, delta 1e-5) a linear model on scattering features reaches 89.7% on
Fashion-MNIST, beating end-to-end CNNs trained with DP-SGD (86.0%): the features cost no
privacy and leave few weights for the noise (Tramer & Boneh 2021, "Differentially Private
Learning Needs Better Features (or Much More Data)").

Measured: `scatternet_linear` (the scattering transform, GroupNorm, a linear classifier) with
their setting (Poisson batches of 8192, SGD lr 16 with momentum 0.9, clip 0.1, 40 epochs) at
epsilon 1, 2, 3 and 8, each with an EMA of the weights (decay 0.99) evaluated beside them.
The scattering has no parameters, so the features of every image are computed once and the
GroupNorm and the classifier train on them: the same steps as `jaxconv train --model
scatternet_linear ...`, which recomputes the features at every step, about 20x faster. The
smoke run checks that: both ways, one epoch from one seed give the same weights.

    python experiments/dp_scatternet.py [--smoke | --full] [--out DIR] [--only 3,8]
"""

from __future__ import annotations

import dataclasses
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

import jaxconv as jc
from jaxconv.runs import TrainConfig, fit

DEFAULT = common.Budget("default", None, None, 40, 8192)
FULL = DEFAULT
SMOKE = common.Budget("smoke", 256, 128, 1, 64)
EPSILONS = (1.0, 2.0, 3.0, 8.0)
DP = {
    "optimizer": "sgd", "lr": 16.0, "momentum": 0.9, "schedule": "constant", "weight_decay": 0.0,
    "label_smoothing": 0.0, "augment": "none", "dp_clip": 0.1, "dp_delta": 1e-5, "ema_decay": 0.99,
}  # fmt: skip


def features(layer: jc.Layer, data: jc.data.Dataset, batch_size: int = 1024) -> jc.data.Dataset:
    """``data`` with its images replaced by ``layer``'s float32 output on them, normalised as
    `fit` normalises them (so a net trained on these sees what its first layer would), with mean
    0 and std 1 so that `fit` leaves them as they are."""
    shape, params, state = layer.init(None, (-1, *data.images.shape[1:]))
    if jax.tree.leaves(params) or jax.tree.leaves(state):
        raise ValueError(f"features: {jc.info(layer).kind} learns; only a fixed layer's output can be kept")
    transform = jax.jit(
        lambda images: layer.apply(params, state, jc.data.normalize(images, data.mean, data.std))[0]
    )
    chunks = [
        np.asarray(transform(data.images[start : start + batch_size]))
        for start in range(0, len(data), batch_size)
    ]
    channels = shape[-1]
    return dataclasses.replace(
        data, images=np.concatenate(chunks), mean=(0.0,) * channels, std=(1.0,) * channels
    )


def head(net: jc.Layer) -> jc.Layer:
    """``net`` (a serial) with its first layer replaced by the identity: the same parameter names."""
    _, *rest = jc.info(net).children
    return jc.serial(jc.Identity, *(child for _, child in rest))


def train(net, train_data, test_data, budget: common.Budget, epsilon: float):
    config = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, dp_epsilon=epsilon, **DP)
    started = time.perf_counter()
    result = fit(net, train_data, test_data, config, progress=False, divergence_rule=None)
    return result, time.perf_counter() - started


def same_steps(train_data, test_data, train_features, test_features, budget: common.Budget) -> float:
    """The largest difference between the weights of one epoch trained on the images (the
    features recomputed each step) and on the features computed once."""
    net = jc.models.get("scatternet_linear")
    one_epoch = dataclasses.replace(budget, epochs=1)
    on_images, _ = train(net, train_data, test_data, one_epoch, 3.0)
    on_features, _ = train(head(net), train_features, test_features, one_epoch, 3.0)
    differences = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))),
        on_images.train_state.params,
        on_features.train_state.params,
    )
    return max(jax.tree.leaves(differences))


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL, SMOKE, rows=[f"epsilon {e:g}" for e in EPSILONS])
    train_data, test_data = common.load_fashion_mnist(args.budget)
    net = jc.models.get("scatternet_linear")
    scattering = jc.info(net).children[0][1]
    started = time.perf_counter()
    train_features, test_features = features(scattering, train_data), features(scattering, test_data)
    feature_seconds = round(time.perf_counter() - started, 1)
    print(
        f"scattering features of {len(train_data) + len(test_data):,} images: {feature_seconds} s", flush=True
    )
    rows = []
    for row, epsilon in zip(args.rows, (float(name.split()[-1]) for name in args.rows), strict=True):
        result, seconds = train(head(net), train_features, test_features, args.budget, epsilon)
        last = result.history[-1]
        rows.append({
            "net": "scatternet_linear", "epsilon": round(last["epsilon"], 4),
            "noise_multiplier": round(result.privacy.noise_multiplier, 4), "test_top1": last["test_top1"],
            "test_ema_top1": last.get("test_ema_top1"), "seconds": round(seconds, 1),
        })  # fmt: skip
        print(f"{row}: test top-1 {last['test_top1']:.4f} (EMA {last.get('test_ema_top1')})", flush=True)
    extra = {"dp": DP, "feature_seconds": feature_seconds}
    if args.budget.name == "smoke":
        extra["same_steps_max_difference"] = same_steps(
            train_data, test_data, train_features, test_features, args.budget
        )
    common.finish("dp_scatternet", args, rows, **extra)


if __name__ == "__main__":
    main()
