"""MaxPool's tiled formulation (reshape and max) against `lax.reduce_window`, bit for bit.

The reference is written here with `lax` directly: ``lax.reduce_window`` with ``lax.max``, whose
gradient JAX lowers to ``select_and_scatter_add``. Forward values and input gradients must be
equal (`assert_array_equal`, NaNs in the same places, the sign of zero included in the forward) on
random and tie-heavy inputs, in 1-D, 2-D and 3-D, under jit, vmap and bfloat16; and MaxPool must
keep the reference path wherever the tiled one does not apply.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv as jc
import jaxconv.layers.pool as pool


def reference(x: jax.Array, window, stride, padding) -> jax.Array:
    """Max pooling of an (N, *spatial, C) array with `lax.reduce_window`; padding as per-side pairs."""
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), ((0, 0), *padding, (0, 0))
    )


def value_and_input_grad(pool_fn, x: jax.Array, cotangent_seed: int = 1):
    """``pool_fn(x)`` and the vjp of a random cotangent (with zeros and -0.0 in it)."""
    y, vjp = jax.vjp(pool_fn, x)
    rng = np.random.default_rng(cotangent_seed)
    cotangent = rng.choice([-1.5, -0.0, 0.0, 0.5, 2.0], y.shape) * rng.standard_normal(y.shape)
    return y, vjp(jnp.asarray(cotangent, y.dtype))[0]


@functools.cache
def jitted(window, stride, padding):
    """The jitted MaxPool layer and reference for one geometry (cached: compiled once per shape)."""
    net = jc.MaxPool(window, stride, padding=list(padding) if any(map(any, padding)) else 0)
    return jax.jit(lambda x: net.apply({}, {}, x)[0]), jax.jit(
        lambda x: reference(x, window, stride, padding)
    )


def assert_same(x: jax.Array, window, stride=None, padding=None) -> None:
    """MaxPool(window, stride, padding) equals the reference on x, forward and backward."""
    pairs = tuple(map(tuple, padding or [(0, 0)] * len(window)))
    layer, ref = jitted(window, window if stride is None else stride, pairs)
    y, grad = value_and_input_grad(layer, x)
    y_ref, grad_ref = value_and_input_grad(ref, x)
    assert y.dtype == y_ref.dtype and grad.dtype == grad_ref.dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
    np.testing.assert_array_equal(
        np.signbit(np.asarray(y, np.float32)), np.signbit(np.asarray(y_ref, np.float32))
    )
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(grad_ref, np.float32))


def uses_tiled(net: jc.Layer, x: jax.Array) -> bool:
    """Whether the gradient of ``net`` on ``x`` avoids select_and_scatter (the tiled path)."""
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(net.apply({}, {}, x)[0])))(x))
    assert ("select_and_scatter" in jaxpr) != ("reduce_window_max" not in jaxpr)
    return "select_and_scatter" not in jaxpr


RNG = np.random.default_rng(0)

INPUTS = {
    "randn": lambda shape: RNG.standard_normal(shape),
    "relu": lambda shape: np.maximum(RNG.standard_normal(shape), 0),  # half zeros: ties
    "zeros": np.zeros,
    "small integers": lambda shape: RNG.integers(-2, 3, shape),  # ties everywhere
    "signed zeros": lambda shape: RNG.choice([0.0, -0.0], shape),
    "specials": lambda shape: RNG.choice([0.0, -0.0, 1.0, -np.inf, np.inf, np.nan], shape),
}

GEOMETRIES = [  # (input shape, window)
    ((3, 12, 5), (2,)),
    ((2, 8, 6, 3), (2, 2)),
    ((1, 9, 6, 1), (3, 3)),
    ((2, 6, 8, 5), (2, 4)),
    ((1, 4, 6, 4, 3), (2, 2, 2)),
    ((2, 6, 6, 3, 2), (3, 2, 1)),
]


@pytest.mark.parametrize("shape, window", GEOMETRIES)
@pytest.mark.parametrize("kind", INPUTS)
def test_tiled_equals_reduce_window(shape, window, kind):
    x = jnp.asarray(INPUTS[kind](shape), jnp.float32)
    assert uses_tiled(jc.MaxPool(window), x)
    assert_same(x, window)


def test_constant_windows_send_the_gradient_to_the_first_element():
    """Every 2x2 window constant: the gradient goes to each window's top-left element only."""
    x = jnp.asarray(np.kron(RNG.integers(0, 3, (2, 4, 3, 3)), np.ones((1, 2, 2, 1))))  # (2, 8, 6, 3)
    assert_same(x, (2, 2))
    grad = jax.grad(lambda x: jnp.sum(jc.MaxPool(2).apply({}, {}, x)[0]))(x)
    expected = np.zeros(x.shape)
    expected[:, ::2, ::2, :] = 1.0
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("kind", ["randn", "relu", "specials"])
def test_bfloat16(kind):
    x = jnp.asarray(INPUTS[kind]((2, 8, 8, 3)), jnp.bfloat16)
    assert uses_tiled(jc.MaxPool(2), x)
    assert_same(x, (2, 2))


def test_vmap_over_single_examples():
    """Per-example gradients: vmap over (1, H, W, C) examples equals the reference per example."""
    x = jnp.asarray(np.maximum(RNG.standard_normal((5, 1, 8, 6, 3)), 0), jnp.float32)
    weights = jnp.asarray(RNG.standard_normal((4, 3, 3)), jnp.float32)

    def loss(pool_fn):
        return lambda example: jnp.sum(pool_fn(example) * weights)

    net = jc.MaxPool(2)
    tiled = jax.jit(jax.vmap(jax.value_and_grad(loss(lambda e: net.apply({}, {}, e)[0]))))(x)
    plain = jax.jit(jax.vmap(jax.value_and_grad(loss(lambda e: reference(e, (2, 2), (2, 2), [(0, 0)] * 2)))))(
        x
    )
    for a, b in zip(tiled, plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_order_and_forward_mode():
    """grad of grad, jvp and jacfwd work (a custom_jvp) and agree with the reference."""
    x = jnp.asarray(RNG.standard_normal((1, 4, 4, 2)), jnp.float32)
    net = jc.MaxPool(2)

    def cubed(pool_fn):
        return lambda x: jnp.sum(pool_fn(x) ** 3)

    tiled = cubed(lambda x: net.apply({}, {}, x)[0])
    plain = cubed(lambda x: reference(x, (2, 2), (2, 2), [(0, 0)] * 2))
    for transform in (jax.jacrev, jax.jacfwd):  # Hessians: reverse over reverse, forward over reverse
        np.testing.assert_array_equal(transform(jax.grad(tiled))(x), transform(jax.grad(plain))(x))
    np.testing.assert_array_equal(jax.jvp(tiled, (x,), (x,))[1], jax.jvp(plain, (x,), (x,))[1])


@pytest.mark.parametrize(
    "shape, window, stride, padding",
    [
        ((2, 9, 9, 3), (3, 3), (2, 2), None),  # overlapping
        ((2, 8, 8, 3), (2, 2), (2, 2), [(1, 1), (1, 1)]),  # padded
        ((2, 8, 8, 3), (2, 2), (2, 2), [(0, 1), (1, 0)]),  # padded on one side
        ((2, 7, 8, 3), (2, 2), (2, 2), None),  # 7 does not divide by 2: floored
        ((1, 9, 9, 1), (9, 9), (9, 9), None),  # 81 elements per window: over the unrolling limit
        ((2, 8, 9, 3), (2, 3), (1, 3), None),  # window = stride on one axis only
    ],
)
def test_other_geometries_keep_reduce_window(shape, window, stride, padding):
    x = jnp.asarray(np.maximum(RNG.standard_normal(shape), 0), jnp.float32)
    net = jc.MaxPool(window, stride, padding=[tuple(p) for p in padding] if padding else 0)
    assert not uses_tiled(net, x)
    assert_same(x, window, stride, padding)


def test_same_padding_that_pads_nothing_is_tiled():
    x = jnp.asarray(RNG.standard_normal((2, 8, 8, 3)), jnp.float32)
    assert uses_tiled(jc.MaxPool(2, padding="SAME"), x)
    assert not uses_tiled(jc.MaxPool(2, padding="SAME"), x[:, :7, :7])


def test_switch_and_backend_table(monkeypatch):
    x = jnp.asarray(RNG.standard_normal((2, 8, 8, 3)), jnp.float32)
    assert uses_tiled(jc.MaxPool(2), x)
    with pool.max_pool_impl("reduce_window"):
        assert not uses_tiled(jc.MaxPool(2), x)
        assert uses_tiled(jc.MaxPool(2, impl="tiled"), x)  # the layer's own choice wins
    assert not uses_tiled(jc.MaxPool(2, impl="reduce_window"), x)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not uses_tiled(jc.MaxPool(2), x)
    with pool.max_pool_impl("tiled"):
        assert uses_tiled(jc.MaxPool(2), x)


def test_impl_is_checked():
    with pytest.raises(ValueError, match=r"MaxPool\(impl='fast'\): impl must be one of"):
        jc.MaxPool(2, impl="fast")
    with (
        pytest.raises(ValueError, match=r"max_pool_impl\('fast'\): impl must be one of"),
        pool.max_pool_impl("fast"),
    ):
        pass


def test_integer_inputs_keep_reduce_window():
    x = jnp.asarray(RNG.integers(-5, 5, (2, 8, 8, 3)), jnp.int32)
    y, _ = jc.MaxPool(2).apply({}, {}, x)
    jaxpr = str(jax.make_jaxpr(lambda x: jc.MaxPool(2).apply({}, {}, x)[0])(x))
    assert "reduce_window_max" in jaxpr
    np.testing.assert_array_equal(y, np.asarray(x).reshape(2, 4, 2, 4, 2, 3).max(axis=(2, 4)))
