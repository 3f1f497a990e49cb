"""Normalisation: BatchNorm against none, and local response normalisation (LRN) against none.

Claims: BatchNorm (Ioffe & Szegedy 2015) makes a net train faster and to a better
accuracy at the same learning rate; LRN (Krizhevsky et al. 2012: -1.4 and -1.2 points of
top-1 and top-5 error on ImageNet) has "fallen out of favor because in practice [its]
contribution has been shown to be minimal, if any" (CS231n notes; Simonyan &
Zisserman 2015 found no gain from LRN in VGG-A).

Measured: a 6-conv VGG-style net with and without BatchNorm after every conv, trained
with plain SGD with momentum (a setting where the difference shows), and without
BatchNorm once more at a fifth of the learning rate (what the plain net needs); a small
AlexNet-style net (5x5 convs, LRN after the first two as in AlexNet, then three 3x3
convs and two FC layers) with and without LRN. Test accuracy after the first epoch
and at the end.

    python experiments/normalisation.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import common

import jaxconv as jc

DEFAULT = common.Budget("default", 20_000, None, 3)
FULL = common.Budget("full", None, None, 15)
SGD = {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "label_smoothing": 0.0}


def vgg_style(batch_norm: bool, widths: tuple[int, ...]) -> jc.Layer:
    """[[CONV 3x3 -> (BN) -> RELU]*2 -> POOL]*3 -> FC: (N, 28, 28, 1) -> (N, 10)."""
    layers = []
    for width in widths:
        for _ in range(2):
            layers += [jc.Conv(width, 3, padding=1, use_bias=not batch_norm)]
            layers += [jc.BatchNorm()] if batch_norm else []
            layers += [jc.Relu]
        layers.append(jc.MaxPool(2))  # 28 -> 14 -> 7 -> 3 (floor)
    return jc.serial(*layers, jc.GlobalAvgPool, jc.Dense(10))


def alexnet_style(lrn: bool, widths: tuple[int, ...]) -> jc.Layer:
    """CONV 5x5 -> RELU -> (LRN) -> POOL, twice, then [CONV 3x3 -> RELU]*3 -> FC -> RELU -> FC."""
    first, second, third = widths
    normalise = [jc.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []
    return jc.serial(
        jc.Conv(first, 5, padding=2), jc.Relu, *normalise, jc.MaxPool(2),  # (N, 14, 14, first)
        jc.Conv(second, 5, padding=2), jc.Relu, *normalise, jc.MaxPool(2),  # (N, 7, 7, second)
        jc.Conv(third, 3, padding=1), jc.Relu,
        jc.Conv(third, 3, padding=1), jc.Relu,
        jc.Conv(second, 3, padding=1), jc.Relu,  # (N, 7, 7, second)
        jc.Flatten, jc.Dense(256), jc.Relu, jc.Dropout(0.5), jc.Dense(10),
    )  # fmt: skip


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    smoke = args.budget.name == "smoke"
    train, test = common.load_fashion_mnist(args.budget)
    nets = {
        ("VGG-style 6 conv", "BatchNorm"): (vgg_style(True, (8, 16, 32) if smoke else (32, 64, 128)), SGD),
        ("VGG-style 6 conv", "none"): (vgg_style(False, (8, 16, 32) if smoke else (32, 64, 128)), SGD),
        ("VGG-style 6 conv", "none, lr / 5"): (
            vgg_style(False, (8, 16, 32) if smoke else (32, 64, 128)),
            SGD | {"lr": SGD["lr"] / 5},
        ),
        ("AlexNet-style", "LRN"): (alexnet_style(True, (8, 16, 16) if smoke else (48, 96, 128)), {}),
        ("AlexNet-style", "none"): (alexnet_style(False, (8, 16, 16) if smoke else (48, 96, 128)), {}),
    }
    rows = []
    for (net_name, normalisation), (net, options) in nets.items():
        result = common.train_and_evaluate(net, train, test, args.budget, **options)
        first_epoch = result["history"][0]["test_top1"]
        rows.append(
            {"net": net_name, "normalisation": normalisation, "epoch1_test_top1": first_epoch, **result}
        )
        print(f"{net_name}, {normalisation}: test top-1 {result['test_top1']:.4f}", flush=True)
    common.finish("normalisation", args, rows, sgd=SGD)


if __name__ == "__main__":
    main()
