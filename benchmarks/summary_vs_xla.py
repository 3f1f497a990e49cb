"""`jc.summary`'s multiply-adds against XLA's cost analysis of the compiled forward pass.

For each zoo model, at batch 1 and the given input size, prints the papers' count
(every tap of every kernel, `Summary.macs`), the count without the taps that fall on
zero padding (`Summary.valid_macs`, what XLA counts for a convolution) and XLA's
``cost_analysis()['flops'] / 2``, which adds the elementwise work (biases,
activations, pooling, normalisation).

    python benchmarks/summary_vs_xla.py [MODEL[:SIZE] ...]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jaxconv as jc

MODELS = (
    "lenet5",
    "alexnet_tv",
    "vgg11:224",
    "resnet18:224",
    "resnet50:224",
    "squeezenet1_1",
    "mobilenet_v2",
    "googlenet",
    "densenet121",
)


def xla_multiply_adds(net: jc.Layer, input_shape: tuple[int, ...]) -> float:
    """``flops / 2`` of XLA's cost analysis of ``net``'s forward pass on one example."""
    params, state = jax.eval_shape(lambda key: net.init(key, input_shape)[1:], jax.random.key(0))
    forward = jax.jit(lambda p, s, x: net.apply(p, s, x)[0])
    x = jax.ShapeDtypeStruct((1, *input_shape[1:]), jnp.float32)
    return forward.lower(params, state, x).compile().cost_analysis()["flops"] / 2


def model_shape(entry: str) -> tuple[str, tuple[int, ...]]:
    """``'resnet18:112'`` -> ('resnet18', (-1, 112, 112, 3)); no size: the native input."""
    name, _, size = entry.partition(":")
    shape = jc.models.input_shape(name)
    return name, (shape if not size else (-1, int(size), int(size), shape[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS, help="MODEL or MODEL:SIZE (square input)")
    args = parser.parse_args()
    print("| model | input | MACs (papers') | valid MACs | XLA flops/2 | valid / XLA | papers' / XLA |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for entry in args.models:
        name, shape = model_shape(entry)
        net = jc.models.get(name)
        s = jc.summary(net, shape)
        xla = xla_multiply_adds(net, shape)
        print(
            f"| {name} | {'x'.join(map(str, shape[1:]))} | {s.macs:,} | {s.valid_macs:,} | {xla:,.0f} "
            f"| {s.valid_macs / xla:.3f} | {s.macs / xla:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
