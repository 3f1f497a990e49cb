"""Depth: plain against residual nets of growing depth (the degradation problem).

He et al. 2016 ("Deep Residual Learning for Image Recognition", Fig. 1 and 6): on
CIFAR-10, a plain 56-layer net has a higher *training* error than a plain 20-layer
one (not overfitting: optimisation gets harder with depth), while residual nets of
the same depths improve as they deepen. The nets here are theirs: a 3x3 stem, three
stages of n two-conv blocks (16, 32, 64 channels; 6n + 2 weighted layers), global
average pooling and FC, with BatchNorm, trained alike (Nesterov SGD, cosine); the
residual ones add a shortcut to every block (a 1x1 projection where the shape changes).
The table gives each net's final training loss and accuracy beside the test accuracy.

    python experiments/depth.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import common

import jaxconv as jc

DEFAULT = common.Budget("default", 20_000, None, 3)
FULL = common.Budget("full", None, None, 15)
DEPTHS = {"smoke": (8,), "default": (20, 56), "full": (20, 32, 44, 56)}
WIDTHS = (16, 32, 64)
RECIPE = {
    "optimizer": "nesterov",
    "lr": 0.1,
    "schedule": "cosine",
    "weight_decay": 5e-4,
    "label_smoothing": 0.0,
}


def conv_bn(width: int, stride: int = 1, kernel_size: int = 3) -> list[jc.Layer]:
    return [jc.Conv(width, kernel_size, stride, padding=kernel_size // 2, use_bias=False), jc.BatchNorm()]


def block(width: int, stride: int, in_width: int, shortcut: bool) -> list[jc.Layer]:
    """CONV -> BN -> RELU -> CONV -> BN (+ shortcut) -> RELU: (N, H, W, in_width) -> (N, H/stride, W/stride, width)."""
    body = jc.serial(*conv_bn(width, stride), jc.Relu, *conv_bn(width))
    if not shortcut:
        return [body, jc.Relu]
    projection = jc.serial(*conv_bn(width, stride, 1)) if stride != 1 or in_width != width else None
    return [jc.residual(body, projection), jc.Relu]


def net(depth: int, shortcut: bool) -> jc.Layer:
    """The 6n + 2 layer CIFAR net of He et al. for (N, 28, 28, 1) -> (N, 10)."""
    blocks_per_stage = (depth - 2) // 6
    layers, in_width = [*conv_bn(WIDTHS[0]), jc.Relu], WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for index in range(blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            layers += block(width, stride, in_width, shortcut)
            in_width = width
    return jc.serial(*layers, jc.GlobalAvgPool, jc.Dense(10))


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    train, test = common.load_fashion_mnist(args.budget)
    rows = []
    for depth in DEPTHS[args.budget.name]:
        for kind, shortcut in (("plain", False), ("residual", True)):
            result = common.train_and_evaluate(net(depth, shortcut), train, test, args.budget, **RECIPE)
            rows.append({"net": f"{kind}-{depth}", "depth": depth, "kind": kind, **result})
            print(
                f"{kind}-{depth}: train loss {result['train_loss']:.4f}, test top-1 {result['test_top1']:.4f}",
                flush=True,
            )
    common.finish("depth", args, rows, recipe=RECIPE)


if __name__ == "__main__":
    main()
