"""Framework overhead: jaxconv's train step against the same step written by hand in `jax.lax`.

Both train the default Fashion-MNIST model (`jaxconv.models.small.convnet`: CONV-BN-RELU-POOL twice,
FC-RELU-DROPOUT-FC) with the same step: flip augmentation and normalisation on the device,
label-smoothed cross-entropy, AdamW, top-1/top-5 metrics, donated buffers. The hand-written
version is a few functions over a dict of arrays, with no layer objects and no combinators.
Both are first checked to compute the same losses, then timed in interleaved repeats.

    python benchmarks/framework_overhead.py [--batch-size 128] [--steps 20] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxconv.train as jt
from jaxconv.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, augment
from jaxconv.layers import pool
from jaxconv.models.small import convnet

LABEL_SMOOTHING, DROPOUT, NUM_LAYERS, DROPOUT_INDEX = 0.1, 0.3, 13, 11


# --- the hand-written net and step -------------------------------------------------------------


def conv_bn_relu_pool(params, state, x, train):
    """3x3 convolution (padding 1, no bias), BatchNorm, ReLU, 2x2 max pooling. (N, H, W, C)."""
    x = lax.conv_general_dilated(
        x, params["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    if train:
        mean = jnp.mean(x, (0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
        count = x.size // x.shape[-1]
        state = {
            "mean": 0.9 * state["mean"] + 0.1 * mean,
            "var": 0.9 * state["var"] + 0.1 * var * (count / (count - 1)),
        }
    else:
        mean, var = state["mean"], state["var"]
    multiplier = lax.rsqrt(var + 1e-5) * params["scale"]
    x = x * multiplier + (params["bias"] - mean * multiplier)
    x = jax.nn.relu(x)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), state


def forward(params, state, x, key, train):
    """(N, 28, 28, 1) -> (N, 10) logits, and the new BatchNorm statistics."""
    x, state1 = conv_bn_relu_pool(params["stage1"], state["stage1"], x, train)
    x, state2 = conv_bn_relu_pool(params["stage2"], state["stage2"], x, train)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    if train:  # the dropout key is drawn as jaxconv's serial draws its children's keys, to compare exactly
        keep = jax.random.bernoulli(jax.random.split(key, NUM_LAYERS)[DROPOUT_INDEX], 1 - DROPOUT, x.shape)
        x = jnp.where(keep, x / (1 - DROPOUT), 0.0)
    return x @ params["output"]["kernel"] + params["output"]["bias"], {"stage1": state1, "stage2": state2}


def make_lax_step(optimizer):
    def step(carry, images, labels):
        params, state, opt_state, count, key = carry
        augment_key, dropout_key = jax.random.split(jax.random.fold_in(key, count))
        x = augment(augment_key, images, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, flip=True)

        def loss_fn(params):
            logits, new_state = forward(params, state, x, dropout_key, True)
            targets = optax.smooth_labels(jax.nn.one_hot(labels, 10), LABEL_SMOOTHING)
            return optax.softmax_cross_entropy(logits, targets).mean(), (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        top5 = jnp.any(lax.top_k(logits, 5)[1] == labels[:, None], axis=-1)
        metrics = {"loss": loss, "top1": jnp.mean(jnp.argmax(logits, -1) == labels), "top5": jnp.mean(top5)}
        return (optax.apply_updates(params, updates), new_state, opt_state, count + 1, key), metrics

    return jax.jit(step, donate_argnums=0)


def to_lax_tree(tree):
    """jaxconv's params or state of `convnet` in the hand-written layout."""
    return {
        "stage1": {**tree.get("conv_0", {}), **tree["batchnorm_1"]},
        "stage2": {**tree.get("conv_4", {}), **tree["batchnorm_5"]},
        **({"hidden": tree["dense_9"], "output": tree["dense_12"]} if "dense_9" in tree else {}),
    }


# --- the comparison ------------------------------------------------------------------------------


def setup(batch_size: int):
    net = convnet()
    optimizer = jt.make_optimizer("adamw", 1e-3, weight_decay=5e-4)
    preprocess = jt.make_preprocess(FASHION_MNIST_MEAN, FASHION_MNIST_STD, flip=True)
    jaxconv_step = jt.make_train_step(net, optimizer, preprocess=preprocess, label_smoothing=LABEL_SMOOTHING)
    start = jt.init_train_state(net, optimizer, (-1, 28, 28, 1), jax.random.key(0))
    lax_params, lax_state = to_lax_tree(start.params), to_lax_tree(start.state)
    lax_optimizer = optax.adamw(1e-3, weight_decay=5e-4, mask=jt.optim.kernels_only)
    lax_carry = (lax_params, lax_state, lax_optimizer.init(lax_params), start.step, start.key)
    lax_step = make_lax_step(lax_optimizer)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch_size, 28, 28, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, batch_size, dtype=np.int32))
    return (jaxconv_step, start), (lax_step, lax_carry), images, labels


def copy(tree):
    return jax.tree_util.tree_map(lambda leaf: leaf.copy() if isinstance(leaf, jax.Array) else leaf, tree)


def check_same(jaxconv, handwritten, images, labels, steps: int = 3) -> float:
    """Run both from the same start; return the largest relative difference of their losses."""
    (step_a, state_a), (step_b, state_b) = jaxconv, handwritten
    state_a, state_b = copy(state_a), copy(state_b)
    worst = 0.0
    for _ in range(steps):
        state_a, metrics_a = step_a(state_a, images, labels)
        state_b, metrics_b = step_b(state_b, images, labels)
        loss_a, loss_b = float(metrics_a["loss"]), float(metrics_b["loss"])
        worst = max(worst, abs(loss_a - loss_b) / abs(loss_b))
    return worst


def time_steps(step, state, images, labels, steps: int):
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, images, labels)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per contestant")
    parser.add_argument("--smoke", action="store_true", help="a quick run (CI): 2 blocks of 2 steps")
    args = parser.parse_args()
    steps, repeats = (2, 2) if args.smoke else (args.steps, args.repeats)

    jaxconv, handwritten, images, labels = setup(args.batch_size)
    difference = check_same(jaxconv, handwritten, images, labels)
    print(f"same computation: largest relative loss difference over 3 steps {difference:.1e}")
    assert difference < 1e-4, "the two steps disagree; the comparison would be meaningless"

    # Like for like: jaxconv with the same max-pool formulation as the hand-written step
    # (reduce_window). jaxconv's own default, the reshape-and-max MaxPool, is faster on CPU.
    plain = "jaxconv, plain pool"
    states = {"jaxconv": copy(jaxconv[1]), plain: copy(jaxconv[1]), "jax.lax": copy(handwritten[1])}
    steps_of = {"jaxconv": jaxconv[0], plain: setup(args.batch_size)[0][0], "jax.lax": handwritten[0]}
    times: dict[str, list[float]] = {name: [] for name in states}
    for name in states:  # warm up (compile) each; the formulation is chosen while tracing
        with pool.max_pool_impl("reduce_window" if name == plain else "auto"):
            _, states[name] = time_steps(steps_of[name], states[name], images, labels, 1)
    for repeat in range(repeats):
        order = list(states) if repeat % 2 == 0 else list(states)[::-1]
        for name in order:
            seconds, states[name] = time_steps(steps_of[name], states[name], images, labels, steps)
            times[name].append(seconds / steps)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"batch {args.batch_size}, {repeats} interleaved blocks of {steps} steps, median per step:")
    for name, seconds in median.items():
        print(f"  {name:20s} {1e3 * seconds:8.2f} ms/step  {args.batch_size / seconds:8.0f} images/s")
    for name in (plain, "jaxconv"):
        ratio = median[name] / median["jax.lax"]
        print(f"{name} / jax.lax time per step: {ratio:.3f} ({100 * (ratio - 1):+.1f}%)")


if __name__ == "__main__":
    main()
