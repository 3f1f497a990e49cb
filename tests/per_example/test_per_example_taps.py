"""The taps reach every Conv and Dense the combinators apply (branches, shortcuts, wired graphs, a bare
layer) with the combinators' own keys: ``'einsum'`` gradients and norms equal ``'vmap'``'s."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv import core
from jaxconv.per_example import net_loss, per_example_grad_norms, per_example_grads
from jaxconv.per_example.taps import find_taps

NUM = 4
KEY = jax.random.key(5)


def branches():
    """Two branches from fan_out, each with a Conv (and Dropout, so the branch keys matter)."""
    return jc.serial(
        jc.Conv(3, 3, padding=1), jc.Relu, jc.fan_out(2),
        jc.parallel(
            jc.serial(jc.Conv(4, 3, padding=1), jc.Dropout(0.5)),
            jc.serial(jc.Dropout(0.5), jc.Conv(4, 1)),
        ),
        jc.fan_in_concat(), jc.Flatten, jc.Dense(3),
    )  # fmt: skip


def shortcut():
    """A residual block whose projection shortcut holds a Conv inside a serial, after Dropout."""
    return jc.serial(
        jc.residual(
            jc.serial(jc.Conv(4, 3, padding=1), jc.Relu),
            shortcut=jc.serial(jc.Dropout(0.3), jc.Conv(4, 1, use_bias=False)),
        ),
        jc.GlobalAvgPool, jc.Dense(3),
    )  # fmt: skip


def wired_graph():
    """A wired graph: a trunk and two heads on its output, concatenated."""
    trunk = jc.serial(jc.Conv(4, 3), jc.Relu, jc.Dropout(0.2), jc.Flatten)
    head, aux = jc.Dense(3), jc.Dense(2)

    def run(step, x):
        features = step("trunk", trunk, x)
        return step("head", head, features), step("aux", aux, features)

    children = [("trunk", trunk), ("head", head), ("aux", aux)]
    return jc.serial(jc.wired("TwoHeads", children, run), jc.fan_in_concat())


NETS = {
    "branches": branches,
    "shortcut": shortcut,
    "wired": wired_graph,
    "bare_dense": lambda: jc.Dense(3),
    # weight-standardised convolutions: tapped, their gradients pulled back through the
    # standardisation; the 3x3's 36 positions would take the ghost norm without it
    "weight_standardized": lambda: jc.serial(
        jc.Conv(3, 3, padding=1, weight_standardization=True),
        jc.Relu,
        jc.Conv(4, 1, use_bias=False, weight_standardization=True),
        jc.Flatten,
        jc.Dense(3),
    ),
    # a fixed feature extractor before the tapped layers (Tramer & Boneh's ScatterNet + linear)
    "scattering": lambda: jc.serial(
        jc.Scattering(scales=1, angles=4), jc.GroupNorm(2), jc.Flatten, jc.Dense(3)
    ),
    "remat": lambda: jc.serial(
        jc.Conv(3, 3), jc.remat(jc.serial(jc.Conv(3, 3, padding=1), jc.Relu)), jc.Flatten, jc.Dense(3)
    ),
}


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def setup(net):
    shape = (NUM, 5) if jc.info(net).kind == "Dense" else (NUM, 6, 6, 2)
    _, params, state = net.init(jax.random.key(0), (-1, *shape[1:]))
    x = jax.random.normal(jax.random.key(1), shape)
    return params, state, x, jnp.arange(NUM) % 3


def assert_trees_close(actual, expected, rtol=1e-4, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


@pytest.mark.parametrize("name", sorted(NETS))
def test_einsum_grads_and_norms_equal_vmap(name):
    net = NETS[name]()
    params, state, x, y = setup(net)
    loss_fn = net_loss(net)
    grads = {
        strategy: jax.jit(per_example_grads(loss_fn, strategy=strategy))(params, state, x, y, KEY)
        for strategy in ("einsum", "vmap")
    }
    assert_trees_close(grads["einsum"], grads["vmap"])
    norms = {
        strategy: jax.jit(per_example_grad_norms(loss_fn, strategy=strategy))(params, state, x, y, KEY)
        for strategy in ("einsum", "vmap")
    }
    np.testing.assert_allclose(norms["einsum"][0], norms["vmap"][0], rtol=1e-5)
    assert sorted(norms["einsum"][1]) == sorted(norms["vmap"][1])
    for layer, value in norms["vmap"][1].items():
        np.testing.assert_allclose(norms["einsum"][1][layer], value, rtol=1e-5, err_msg=layer)


def test_layers_in_branches_and_shortcuts_are_tapped():
    tapped = {}
    for name in sorted(NETS):
        net = NETS[name]()
        params, state, x, _ = setup(net)
        tapped[name] = sorted(find_taps(net, params, state, x, KEY, True))
    assert tapped["branches"] == [
        ("conv_0",), ("dense_6",), ("parallel_3", "serial_0", "conv_0"), ("parallel_3", "serial_1", "conv_1"),
    ]  # fmt: skip
    assert tapped["shortcut"] == [
        ("dense_2",), ("residual_0", "body", "conv_0"), ("residual_0", "shortcut", "conv_1"),
    ]  # fmt: skip
    assert tapped["wired"] == [
        ("twoheads_0", "aux"),
        ("twoheads_0", "head"),
        ("twoheads_0", "trunk", "conv_0"),
    ]
    assert tapped["bare_dense"] == [()]
    assert tapped["weight_standardized"] == [("conv_0",), ("conv_2",), ("dense_4",)]
    assert tapped["remat"] == [("conv_0",), ("dense_3",)]  # the remat sub-net's conv is left to vmap


def test_dropout_keys_in_branches_follow_the_combinators():
    """With the same example N times, only the per-example keys make the gradients differ; einsum
    must draw the same masks as vmap, branch by branch."""
    net = branches()
    params, state, x, _ = setup(net)
    same_x, same_y = jnp.broadcast_to(x[:1], x.shape), jnp.zeros(NUM, int)
    einsum = jax.jit(per_example_grads(net_loss(net), strategy="einsum"))(params, state, same_x, same_y, KEY)
    vmap = jax.jit(per_example_grads(net_loss(net), strategy="vmap"))(params, state, same_x, same_y, KEY)
    kernels = einsum["parallel_3"]["serial_1"]["conv_1"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])  # different masks for different examples
    assert_trees_close(einsum, vmap)


def test_a_layer_applied_twice_is_left_to_vmap():
    dense = jc.Dense(4)

    def init(key, input_shape):
        output_shape, params, _ = core.init_child("shared", dense, key, input_shape)
        return output_shape, {"shared": params}, {}

    def apply(params, state, x, *, key=None, train=False):
        for _ in range(2):  # the same weights twice: per-example gradients sum both uses
            x, _ = core.apply_child("shared", dense, params, state, x, None, train)
        return x, {}

    net = jc.serial(jc.Dense(4), jc.Layer(init, apply))
    _, params, state = net.init(jax.random.key(0), (-1, 4))
    x, y = jax.random.normal(jax.random.key(1), (NUM, 4)), jnp.arange(NUM) % 4
    assert sorted(find_taps(net, params, state, x, None, True)) == [("dense_0",)]
    einsum = jax.jit(per_example_grads(net_loss(net), strategy="einsum"))(params, state, x, y)
    vmap = jax.jit(per_example_grads(net_loss(net), strategy="vmap"))(params, state, x, y)
    assert_trees_close(einsum, vmap)
