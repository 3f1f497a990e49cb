"""The ``'einsum'`` strategy (patches-einsum weight gradients, book-keeping clipped sums) and two-pass
``'ghost'`` clipping against a Python loop of single-example gradients clipped in NumPy.

The reference runs `jax.grad` on one example at a time, x[i:i+1] with key fold_in(key, i), the
documented per-example convention, and clips and sums in float64 NumPy.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import loop_of_grads

import jaxconv as jc
from jaxconv.per_example import choose_strategy, net_loss, per_example_grad_norms, per_example_grads
from jaxconv.privacy import clipped_grad_sum

NUM = 5
KEY = jax.random.key(11)
NETS = {
    "conv": jc.serial(jc.Conv(3, 3, padding=1), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(4)),
    "residual": jc.serial(
        jc.Conv(4, 3, padding=1), jc.GroupNorm(2), jc.Relu,
        jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.Relu), shortcut=jc.Conv(4, 1)),
        jc.GlobalAvgPool, jc.Dense(4),
    ),
    "dropout": jc.serial(jc.Conv(3, 3), jc.Relu, jc.Dropout(0.5), jc.Flatten, jc.Dense(4)),
    # every geometry the patches must get right: stride, dilation, SAME and per-side padding,
    # a non-square kernel, no bias, a 1x1 conv with the ghost norm (4 positions < 8 * 16 / 2)
    "geometry": jc.serial(
        jc.Conv(5, (3, 2), stride=2, padding="SAME", use_bias=False), jc.Tanh,
        jc.Conv(8, 2, dilation=2, padding=((1, 0), (0, 1))), jc.Relu,
        jc.Conv(16, 1), jc.Flatten, jc.Dense(3, use_bias=False),
    ),
}  # fmt: skip


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def setup(name):
    net = NETS[name]
    _, params, state = net.init(jax.random.key(0), (-1, 6, 6, 2))
    x = jax.random.normal(jax.random.key(1), (NUM, 6, 6, 2))
    return net, params, state, x, jnp.arange(NUM) % 3


@functools.cache
def reference_grads(name):
    net, params, state, x, y = setup(name)
    with jax.default_matmul_precision("highest"):
        grads = loop_of_grads(net_loss(net), params, state, x, y, KEY)
    return jax.tree.map(lambda leaf: leaf.astype(np.float64), grads)


def numpy_clipped_sum(grads, clip, mask):
    """Sum of g_i * min(1, C / ||g_i||) * mask_i, one example at a time, and the norms."""
    leaves, treedef = jax.tree.flatten(grads)
    norms = np.array([math.sqrt(sum(float((leaf[i] ** 2).sum()) for leaf in leaves)) for i in range(NUM)])
    total = [sum(leaf[i] * min(1.0, clip / norms[i]) * mask[i] for i in range(NUM)) for leaf in leaves]
    return jax.tree.unflatten(treedef, total), norms


def assert_trees_close(actual, expected, rtol=1e-4, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


@pytest.mark.parametrize("name", sorted(NETS))
def test_einsum_per_example_grads_equal_a_loop_of_single_example_grads(name):
    net, params, state, x, y = setup(name)
    grads = jax.jit(per_example_grads(net_loss(net), strategy="einsum"))(params, state, x, y, KEY)
    assert_trees_close(grads, reference_grads(name))


@pytest.mark.parametrize("strategy", ["einsum", "ghost"])
@pytest.mark.parametrize("name", ["conv", "residual", "dropout", "geometry"])
def test_clipped_sum_equals_numpy_clipping_of_the_loop(name, strategy):
    net, params, state, x, y = setup(name)
    mask = np.array([1, 1, 0, 1, 1])
    grads = reference_grads(name)
    clip = float(np.median(numpy_clipped_sum(grads, 1.0, mask)[1]))  # about half the examples clipped
    expected, expected_norms = numpy_clipped_sum(grads, clip, mask)
    fn = jax.jit(clipped_grad_sum(net_loss(net), clip, strategy=strategy))
    clipped, norms = fn(params, state, x, y, KEY, jnp.asarray(mask))
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-5)
    assert_trees_close(clipped, expected)


def test_einsum_layer_norms_equal_numpy_norms_of_each_layer():
    net, params, state, x, y = setup("geometry")
    grads = reference_grads("geometry")
    global_norms, layer_norms = jax.jit(per_example_grad_norms(net_loss(net), strategy="einsum"))(
        params, state, x, y, KEY
    )
    assert sorted(layer_norms) == ["conv_0", "conv_2", "conv_4", "dense_6"]
    for name, layer in grads.items():
        expected = np.sqrt(sum((leaf.reshape(NUM, -1) ** 2).sum(1) for leaf in jax.tree.leaves(layer)))
        np.testing.assert_allclose(layer_norms[name], expected, rtol=1e-5, err_msg=name)
    flat = np.concatenate([leaf.reshape(NUM, -1) for leaf in jax.tree.leaves(grads)], axis=1)
    np.testing.assert_allclose(global_norms, np.linalg.norm(flat, axis=1), rtol=1e-5)


def test_auto_picks_einsum_for_a_net_loss_and_a_mapped_strategy_otherwise():
    net = NETS["conv"]
    assert choose_strategy(net_loss(net), "auto") == "einsum"
    assert choose_strategy(net_loss(net), "auto", chunk_size=4) == (
        "loop" if jax.default_backend() == "cpu" else "chunked"
    )
    assert choose_strategy(net_loss(net), "auto", has_aux=True) == (
        "loop" if jax.default_backend() == "cpu" else "vmap"
    )
    assert choose_strategy(lambda *args: 0.0, "auto") == (
        "loop" if jax.default_backend() == "cpu" else "vmap"
    )
    assert choose_strategy(net_loss(net), "vmap") == "vmap"


def test_einsum_and_ghost_need_a_net_loss():
    def plain_loss(params, state, x, y, key=None):
        return 0.0

    with pytest.raises(
        ValueError, match=r"strategy='einsum' walks the net.*net_loss\(net, loss\).*'plain_loss'"
    ):
        per_example_grads(plain_loss, strategy="einsum")
    with pytest.raises(ValueError, match=r"strategy='ghost' walks the net.*'plain_loss'.*strategy='vmap'"):
        clipped_grad_sum(plain_loss, 1.0, strategy="ghost")
    with pytest.raises(ValueError, match=r"needs the loss .* got has_aux=True"):
        per_example_grads(net_loss(NETS["conv"]), strategy="einsum", has_aux=True)
    with pytest.raises(ValueError, match=r"strategy='ghost' is not a per-example strategy"):
        per_example_grads(net_loss(NETS["conv"]), strategy="ghost")
    with pytest.raises(ValueError, match=r"'einsum' is not a mapped strategy"):
        jc.per_example.map_examples(lambda *args: ((), ()), strategy="einsum")


def test_integer_images_go_through_the_norms_pass():
    net, params, state, x, y = setup("conv")
    images = jnp.round(jnp.abs(x) * 50).astype(jnp.uint8)
    global_norms, _ = jax.jit(per_example_grad_norms(net_loss(net), strategy="einsum"))(
        params, state, images, y, KEY
    )
    expected = loop_of_grads(net_loss(net), params, state, images.astype(jnp.float32), y, KEY)
    flat = np.concatenate([leaf.reshape(NUM, -1) for leaf in jax.tree.leaves(expected)], axis=1)
    np.testing.assert_allclose(global_norms, np.linalg.norm(flat, axis=1), rtol=1e-5)
