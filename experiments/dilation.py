"""Dilation: receptive-field growth of stacked dilated 3x3 convolutions, and its effect on accuracy.

Yu & Koltun 2016 ("Multi-Scale Context Aggregation by Dilated Convolutions"): stacking
3x3 convolutions with dilations 1, 2, 4, ..., 2^(L-1) grows the receptive field
exponentially, to 2^(L+1) - 1 pixels after L layers, against 2L + 1 for undilated ones,
at the same parameter count and resolution (the CS231n notes: "dilated convolutions
... merge spatial information across the inputs much more aggressively with fewer
layers"). The field of a stack is 1 + sum of 2D over its layers (D: dilation).

Measured: fields by `jaxconv.analysis.fields` and by the gradient of one output neuron
with respect to the input, against the formula; Fashion-MNIST accuracy of a
full-resolution net (no pooling before global averaging) with each stack.

    python experiments/dilation.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import common
import jax

import jaxconv as jc
from jaxconv.analysis import receptive_field

DEFAULT = common.Budget("default", None, None, 3)
FULL = common.Budget("full", None, None, 15)
LAYERS = 4
WIDTH = 32
STACKS = {"undilated (1, 1, 1, 1)": (1,) * LAYERS, "dilated (1, 2, 4, 8)": tuple(2**i for i in range(LAYERS))}


def stack(dilations: tuple[int, ...], width: int) -> jc.Layer:
    """[CONV 3x3, dilation D -> RELU] per D, padded to keep (N, H, W, width)."""
    return jc.serial(
        *[layer for D in dilations for layer in (jc.Conv(width, 3, padding=D, dilation=D), jc.Relu)]
    )


def field_growth(dilations: tuple[int, ...], width: int) -> list[dict]:
    """The field after each layer: formula, `receptive_field` and input gradients (on 41x41)."""
    rows = []
    for depth in range(1, len(dilations) + 1):
        net = stack(dilations[:depth], width)
        shape = (1, 41, 41, 1)
        _, params, state = net.init(jax.random.key(depth), shape)
        rows.append({
            "layers": depth,
            "formula": 1 + sum(2 * D for D in dilations[:depth]),
            "by_receptive": receptive_field(net, shape).size[0],
            "by_gradient": common.input_gradient_field(net, params, state, shape)[0],
        })  # fmt: skip
    return rows


def classifier(dilations: tuple[int, ...], width: int) -> jc.Layer:
    """The stack on the full 28x28 image, then global average -> FC: (N, 28, 28, 1) -> (N, 10)."""
    return jc.serial(stack(dilations, width), jc.GlobalAvgPool, jc.Dense(10))


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    width = 8 if args.budget.name == "smoke" else WIDTH
    train, test = common.load_fashion_mnist(args.budget)
    rows, growth = [], {}
    for name, dilations in STACKS.items():
        growth[name] = field_growth(dilations, width)
        result = common.train_and_evaluate(classifier(dilations, width), train, test, args.budget)
        fields = "/".join(str(row["by_receptive"]) for row in growth[name])
        rows.append(
            {
                "stack": name,
                "fields_per_layer": fields,
                "final_field_by_gradient": growth[name][-1]["by_gradient"],
                **result,
            }
        )
        print(f"{name}: fields {fields}, test top-1 {result['test_top1']:.4f}", flush=True)
    for name, table in growth.items():
        print(name)
        print(common.format_table(table))
    common.finish("dilation", args, rows, field_growth=growth)


if __name__ == "__main__":
    main()
