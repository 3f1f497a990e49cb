"""Convolutions whose output is smaller than the kernel: XLA:CPU's own path against `patches_dot`.

Two measurements, medians of interleaved repeats in one process:

- single convolutions, batch 64: a 3x3 kernel with padding 1 on 2x2 and 1x1 maps (the end of a
  ResNet fed 64x64 images), forward and forward plus both gradients, ``lax.conv_general_dilated``
  against `jaxconv.layers.conv.patches_dot`;
- whole zoo models at 64x64 (``--models``, batch ``--batch``): the jitted forward pass and the
  gradient of the summed logits with `patches_dot` (as shipped on CPU) and without it (the
  module's `PATCHES_DOT_BACKENDS` emptied while tracing), with the largest relative difference of
  their logits.

    python benchmarks/conv_patches_dot.py [--models resnet18,resnet50,densenet121] [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds  # benchmarks/ is on the path when run as a script
from jax import lax

import jaxconv as jc
from jaxconv.layers import conv as conv_module


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,resnet50,densenet121")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def single_convolutions(repeats: int) -> None:
    rng = np.random.default_rng(0)
    for side, channels in [(2, 512), (1, 512), (2, 256)]:
        x = jnp.asarray(rng.normal(size=(64, side, side, channels)), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=(3, 3, channels, channels)) / 40, jnp.float32)
        print(
            f"{side}x{side}x{channels} -> {channels}, 3x3, padding 1, batch 64: "
            + _compare_one(x, kernel, repeats)
        )


def _compare_one(x: jax.Array, kernel: jax.Array, repeats: int) -> str:
    window = jc.sizing.slide("Conv", x.shape[1:3], (3, 3), (1, 1), 1, (1, 1), None)

    def plain(x, kernel):
        return lax.conv_general_dilated(
            x, kernel, (1, 1), window.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def patches(x, kernel):
        return conv_module.patches_dot(x, kernel, window)

    calls = {}
    for name, conv in (("lax", plain), ("patches", patches)):
        forward = jax.jit(conv)
        both = jax.jit(jax.grad(lambda x, k, conv=conv: conv(x, k).sum(), argnums=(0, 1)))
        calls[f"{name} forward"] = partial(forward, x, kernel)
        calls[f"{name} both"] = partial(both, x, kernel)
    t = median_seconds(calls, repeats)
    return (
        f"forward {t['lax forward'] * 1e3:,.1f} ms (lax) against {t['patches forward'] * 1e3:,.1f} ms (patches_dot), "
        f"{t['lax forward'] / t['patches forward']:.1f}x; with both gradients {t['lax both'] * 1e3:,.1f} against "
        f"{t['patches both'] * 1e3:,.1f} ms, {t['lax both'] / t['patches both']:.1f}x"
    )


def whole_model(name: str, batch: int, repeats: int) -> None:
    net = jc.models.get(name)
    _, params, state = jax.jit(net.init, static_argnums=1)(jax.random.key(0), (-1, 64, 64, 3))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(batch, 64, 64, 3)), jnp.float32)

    def compiled() -> tuple:  # new functions each call: jit's cache never hands back the other's
        def forward(x):
            return net.apply(params, state, x)[0]

        def gradient(params, x):
            return jax.grad(lambda p: net.apply(p, state, x)[0].sum())(params)

        return jax.jit(forward), jax.jit(gradient)

    calls, logits = {}, {}
    for label, backends in (("patches", conv_module.PATCHES_DOT_BACKENDS), ("lax", frozenset())):
        conv_module.PATCHES_DOT_BACKENDS = backends  # read while tracing: each compiled program keeps its own
        compiled_forward, compiled_gradient = compiled()
        logits[label] = np.asarray(compiled_forward(x))
        jax.block_until_ready(compiled_gradient(params, x))
        calls[f"{label} forward"] = partial(compiled_forward, x)
        calls[f"{label} gradient"] = partial(compiled_gradient, params, x)
    conv_module.PATCHES_DOT_BACKENDS = frozenset({"cpu"})
    error = np.abs(logits["patches"] - logits["lax"]).max() / np.abs(logits["lax"]).max()
    t = median_seconds(calls, repeats)
    print(
        f"{name} 64x64, batch {batch}: forward {t['lax forward']:.2f} s (lax) against {t['patches forward']:.2f} s "
        f"(patches_dot), {t['lax forward'] / t['patches forward']:.1f}x; gradient {t['lax gradient']:.2f} against "
        f"{t['patches gradient']:.2f} s, {t['lax gradient'] / t['patches gradient']:.1f}x; logits within {error:.1e}"
    )


def main() -> None:
    args = parse()
    single_convolutions(args.repeats)
    for name in args.models.split(","):
        whole_model(name, args.batch, args.repeats)


if __name__ == "__main__":
    main()
