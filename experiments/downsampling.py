"""Downsampling: max pooling against average pooling, L2-norm pooling and strided convolution.

The CS231n notes: average pooling "has recently fallen out of favor compared to the max
pooling operation, which has been shown to work better in practice", while Springenberg
et al. 2015 ("Striving for Simplicity: The All Convolutional Net") replace every pooling
layer by a stride-2 convolution at no loss of accuracy. The same small net is trained
with each downsampling layer at the same budget (the strided convolution adds its
weights; the table gives each net's count).

    python experiments/downsampling.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Callable

import common

import jaxconv as jc

DEFAULT = common.Budget("default", 20_000, None, 3, seeds=3)
FULL = common.Budget("full", None, None, 15)
WIDTHS = (32, 64)

DOWNSAMPLERS: dict[str, Callable[[int], jc.Layer]] = {
    "max pool 2x2": lambda width: jc.MaxPool(2),
    "average pool 2x2": lambda width: jc.AvgPool(2),
    "L2 pool 2x2": lambda width: jc.LpPool(2, p=2.0),
    "conv 3x3 stride 2": lambda width: jc.serial(jc.Conv(width, 3, stride=2, padding=1), jc.Relu),
}


def net(downsample: Callable[[int], jc.Layer], widths: tuple[int, ...]) -> jc.Layer:
    """[[CONV 3x3 -> RELU]*2 -> DOWN]*2 -> global average -> FC: (N, 28, 28, 1) -> (N, 10)."""
    stages = [
        layer
        for width in widths
        for layer in [jc.Conv(width, 3, padding=1), jc.Relu] * 2 + [downsample(width)]  # (N, H/2, W/2, width)
    ]
    return jc.serial(*stages, jc.GlobalAvgPool, jc.Dense(10))


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    widths = (8, 16) if args.budget.name == "smoke" else WIDTHS
    train, test = common.load_fashion_mnist(args.budget)
    rows = []
    for name, downsample in DOWNSAMPLERS.items():
        result = common.train_and_evaluate(net(downsample, widths), train, test, args.budget)
        rows.append({"downsampling": name, **result})
        print(f"{name}: test top-1 {result['test_top1']:.4f}", flush=True)
    common.finish("downsampling", args, rows, widths=widths)


if __name__ == "__main__":
    main()
