"""Small filters: three stacked 3x3 convolutions against one 7x7 on the same volume.

The CS231n notes ("Prefer a stack of small filter CONV to one large receptive field
CONV layer", after Simonyan & Zisserman 2015): three 3x3 CONV layers of C channels see
a 7x7 region of the input, as one 7x7 CONV does, with 3 * 9C^2 = 27C^2 weights
instead of 49C^2, and three non-linearities instead of one.

Measured here: the parameter counts by `jc.summary` (checked against the formula), the
receptive fields by `jaxconv.analysis.fields` and by the gradient of one output neuron with
respect to the input, and Fashion-MNIST accuracy of the same small net built with
either block.

    python experiments/small_filters.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import common
import jax

import jaxconv as jc
from jaxconv.analysis import receptive_field

DEFAULT = common.Budget("default", None, None, 3, seeds=3)
FULL = common.Budget("full", None, None, 15)
CHANNELS = 32  # C


def three_3x3(channels: int) -> jc.Layer:
    """[CONV 3x3 -> RELU]*3 without biases: (N, H, W, C) -> (N, H, W, C), 27C^2 weights."""
    return jc.serial(*[jc.Conv(channels, 3, padding=1, use_bias=False), jc.Relu] * 3)


def one_7x7(channels: int) -> jc.Layer:
    """CONV 7x7 -> RELU without bias: (N, H, W, C) -> (N, H, W, C), 49C^2 weights."""
    return jc.serial(jc.Conv(channels, 7, padding=3, use_bias=False), jc.Relu)


BLOCKS = {"3 x CONV 3x3": (three_3x3, 27), "1 x CONV 7x7": (one_7x7, 49)}


def classifier(block, channels: int) -> jc.Layer:
    """CONV 3x3 -> RELU -> POOL -> block -> POOL -> block -> global average -> FC: (N, 28, 28, 1) -> (N, 10)."""
    return jc.serial(
        jc.Conv(channels, 3, padding=1), jc.Relu, jc.MaxPool(2),  # (N, 14, 14, C)
        block(channels), jc.MaxPool(2),  # (N, 7, 7, C)
        block(channels), jc.GlobalAvgPool, jc.Dense(10),
    )  # fmt: skip


def measure_block(name: str, channels: int) -> dict:
    build, factor = BLOCKS[name]
    block = build(channels)
    shape = (-1, 15, 15, channels)
    params = jc.summary(block, shape).params
    _, weights, state = block.init(jax.random.key(0), shape)
    return {
        "block": name,
        "params": params,
        "formula": f"{factor}C^2 = {factor * channels**2:,}",
        "params_match_formula": params == factor * channels**2,
        "field_by_receptive": "x".join(map(str, receptive_field(block, shape).size)),
        "field_by_gradient": "x".join(
            map(str, common.input_gradient_field(block, weights, state, (1, 15, 15, channels)))
        ),
    }


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    channels = 8 if args.budget.name == "smoke" else CHANNELS
    train, test = common.load_fashion_mnist(args.budget)
    rows = []
    for name, (build, _) in BLOCKS.items():
        row = measure_block(name, channels)
        result = common.train_and_evaluate(classifier(build, channels), train, test, args.budget)
        rows.append(row | {"net_params": result.pop("params"), **result})
    common.finish("small_filters", args, rows, channels=channels)


if __name__ == "__main__":
    main()
