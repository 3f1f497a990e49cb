"""What jaxconv adds to XLA's program: one optimised train step against the same step hand-written in `jax.lax`.

Two nets, each built with jaxconv and written by hand over the same params tree:
the default small CNN (`jaxconv.models.small.convnet`; the hand-written version is
`framework_overhead.forward`) and He et al.'s CIFAR ResNet-20 (written here).
One train step: softmax cross-entropy, SGD with momentum 0.9 (Optax), params,
optimiser state and layer state donated. For each, the optimised HLO
(``jax.jit(step).lower(...).compile().as_text()``) is compared op by op (every
instruction of the module, fused or not, by opcode; fusions counted as
instructions), with XLA's flop count, and the two steps are timed (medians of
interleaved repeats). The small CNN is also compiled with jaxconv's plain
``reduce_window`` max pooling (``pool.max_pool_impl('reduce_window')``), the like-for-like
comparison: on CPU jaxconv deliberately pools non-overlapping windows as a
reshape and a max.

    python benchmarks/hlo_vs_lax.py [--batch-size 128] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import median_seconds
from framework_overhead import forward as convnet_forward
from framework_overhead import to_lax_tree
from jax import lax

import jaxconv as jc
from jaxconv.layers import pool
from jaxconv.models.small import convnet

OPTIMIZER = optax.sgd(0.1, momentum=0.9)
KINDS = ("convolution", "transpose", "copy", "convert", "reduce-window", "select-and-scatter", "custom-call")
BN_MOMENTUM, BN_EPS = 0.9, 1e-5
SHOW = 8  # differing instructions printed per side


# --- ResNet-20 by hand, over jaxconv's params tree ---------------------------------------------------


def conv(x, kernel, stride=1):
    """3x3 convolution, padding 1, no bias: (N, H, W, C) -> (N, H / stride, W / stride, K)."""
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def batch_norm(params, state, x):
    """Training-mode BatchNorm with PyTorch's unbiased running variance."""
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
    count = x.size // x.shape[-1]
    new_state = {
        "mean": BN_MOMENTUM * state["mean"] + (1 - BN_MOMENTUM) * mean,
        "var": BN_MOMENTUM * state["var"] + (1 - BN_MOMENTUM) * var * (count / (count - 1)),
    }
    multiplier = lax.rsqrt(var + BN_EPS) * params["scale"]
    return x * multiplier + (params["bias"] - mean * multiplier), new_state


def conv_bn(params, state, x, stride=1):
    return batch_norm(params["norm"], state["norm"], conv(x, params["conv"]["kernel"], stride))


def basic_block(params, state, x, stride):
    """relu(conv-bn-relu-conv-bn(x) + shortcut(x)); the shortcut subsamples and zero-pads (option A)."""
    body, body_state = params["body"], state["body"]
    y, state1 = conv_bn(body["conv1"], body_state["conv1"], x, stride)
    y, state2 = conv_bn(body["conv2"], body_state["conv2"], jax.nn.relu(y), 1)
    if stride != 1 or x.shape[-1] != y.shape[-1]:
        x = x[:, ::stride, ::stride, :]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, y.shape[-1] - x.shape[-1])))
    return jax.nn.relu(y + x), {"body": {"conv1": state1, "conv2": state2}}


def resnet20_forward(params, state, x, key, train):
    """(N, 32, 32, 3) -> (N, 10) logits, and the new BatchNorm statistics (training mode only)."""
    del key, train
    x, stem_state = conv_bn(params["stem"], state["stem"], x)
    x, new_state = jax.nn.relu(x), {"stem": stem_state}
    for stage in (1, 2, 3):
        name, stage_state = f"stage{stage}", {}
        for block in range(3):
            stride = 2 if stage > 1 and block == 0 else 1
            x, stage_state[f"block{block}"] = basic_block(
                params[name][f"block{block}"], state[name][f"block{block}"], x, stride
            )
        new_state[name] = stage_state
    x = jnp.mean(x, (1, 2))
    return x @ params["head"]["fc"]["kernel"] + params["head"]["fc"]["bias"], new_state


# --- the step and its HLO -----------------------------------------------------------------------------


def make_step(apply: Callable) -> Callable:
    """``step(params, state, opt_state, x, labels, key) -> (params, state, opt_state, loss)``."""

    def step(params, state, opt_state, x, labels, key):
        def loss_fn(params):
            logits, new_state = apply(params, state, x, key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    return step


INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][\w\-]*)\(")


def op_counts(hlo: str) -> collections.Counter:
    """Instructions of an HLO module by opcode (inside fusions too), plus ``fusion`` instructions."""
    return collections.Counter(m.group(1) for m in map(INSTRUCTION.match, hlo.splitlines()) if m)


def instructions(hlo: str) -> collections.Counter:
    """The module's instructions with names, parameter numbers (the order of the params tree's keys)
    and metadata blanked out: equal for the same program."""
    blank = (
        re.sub(r"%[\w.\-]+|(?<=parameter\()\d+", "_", re.sub(r",?\s*metadata=\{[^}]*\}", "", line))
        for line in hlo.splitlines()
        if INSTRUCTION.match(line)
    )
    return collections.Counter(line.strip() for line in blank)


def flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
    return float(analysis.get("flops", float("nan")))


def contestants(batch_size: int):
    """name -> (apply(params, state, x, key), params, state, images) for each net and writing."""
    rng = np.random.default_rng(0)
    cnn = convnet()
    _, cnn_params, cnn_state = cnn.init(jax.random.key(0), (-1, 28, 28, 1))
    cnn_images = jnp.asarray(rng.normal(size=(batch_size, 28, 28, 1)), jnp.float32)
    resnet = jc.models.get("resnet20")
    _, resnet_params, resnet_state = resnet.init(jax.random.key(0), (-1, 32, 32, 3))
    resnet_images = jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32)

    def jaxconv_apply(net):
        return lambda params, state, x, key: net.apply(params, state, x, key=key, train=True)

    def lax_cnn(params, state, x, key):
        logits, new_state = convnet_forward(params, state, x, key, True)
        return logits, new_state

    lax_cnn_params, lax_cnn_state = to_lax_tree(cnn_params), to_lax_tree(cnn_state)
    return {
        "small CNN": {
            "jaxconv": (jaxconv_apply(cnn), cnn_params, cnn_state, cnn_images),
            "jaxconv, plain pool": (jaxconv_apply(cnn), cnn_params, cnn_state, cnn_images),
            "jax.lax": (lax_cnn, lax_cnn_params, lax_cnn_state, cnn_images),
        },
        "ResNet-20": {
            "jaxconv": (jaxconv_apply(resnet), resnet_params, resnet_state, resnet_images),
            "jax.lax": (
                lambda p, s, x, key: resnet20_forward(p, s, x, key, True),
                resnet_params,
                resnet_state,
                resnet_images,
            ),
        },
    }


def compare(title: str, entries: dict, batch_size: int, repeats: int) -> None:
    labels = jnp.asarray(np.arange(batch_size) % 10, jnp.int32)
    key = jax.random.key(1)
    compiled, runs, losses = {}, {}, {}
    for name, (apply, params, state, images) in entries.items():
        step = jax.jit(make_step(apply))
        arguments = (params, state, OPTIMIZER.init(params), images, labels, key)
        with pool.max_pool_impl("reduce_window" if name == "jaxconv, plain pool" else "auto"):
            compiled[name] = jax.jit(make_step(apply), donate_argnums=(0, 1, 2)).lower(*arguments).compile()
            losses[name] = float(step(*arguments)[-1])  # traced here, with this formulation
        runs[name] = lambda step=step, arguments=arguments: step(*arguments)[-1]
    counts = {name: op_counts(c.as_text()) for name, c in compiled.items()}
    names = list(entries)
    print(f"## {title}, batch {batch_size}: optimised HLO of one train step")
    print("losses: " + ", ".join(f"{name} {loss:.6f}" for name, loss in losses.items()))
    print("| op | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    differing = sorted(
        op for op in set().union(*counts.values()) if len({c[op] for c in counts.values()}) > 1
    )
    for op in (*KINDS, "fusion", *(op for op in differing if op not in (*KINDS, "fusion"))):
        marker = " *" if op in differing else ""
        print(f"| {op}{marker} | " + " | ".join(str(counts[name][op]) for name in names) + " |")
    print("| GFLOP (cost analysis) | " + " | ".join(f"{flops(compiled[n]) / 1e9:.3f}" for n in names) + " |")
    seconds = median_seconds(runs, repeats)
    print("| ms per step | " + " | ".join(f"{1e3 * seconds[n]:.1f}" for n in names) + " |")
    print("| time / jax.lax | " + " | ".join(f"{seconds[n] / seconds['jax.lax']:.3f}" for n in names) + " |")
    reference = instructions(compiled["jax.lax"].as_text())
    for name in names[:-1]:
        extra = instructions(compiled[name].as_text()) - reference
        missing = reference - instructions(compiled[name].as_text())
        print(f"{name}: {sum(extra.values())} instructions not in jax.lax's, {sum(missing.values())} missing")
        for sign, lines in (("+", extra), ("-", missing)):
            for line in sorted(lines.elements())[:SHOW]:
                print(f"    {sign} {line[:120]}")
    print("(* the counts differ)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="batch 8, 2 repeats")
    args = parser.parse_args()
    batch_size, repeats = (8, 2) if args.smoke else (args.batch_size, args.repeats)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}\n")
    for title, entries in contestants(batch_size).items():
        compare(title, entries, batch_size, repeats)


if __name__ == "__main__":
    main()
