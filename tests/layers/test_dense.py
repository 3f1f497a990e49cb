"""Dense and Flatten against NumPy (``x @ W + b``, ``reshape``) and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxconv as jc


def init_with_random_bias(net: jc.Layer, input_shape, seed: int = 0):
    """Init, then replace the (zero) bias with random values so adding it is tested."""
    out_shape, params, state = net.init(jax.random.key(seed), input_shape)
    if "bias" in params:
        params = {**params, "bias": jax.random.normal(jax.random.key(seed + 1), params["bias"].shape)}
    return out_shape, params, state


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_numpy(use_bias):
    x = np.random.default_rng(0).normal(size=(5, 7))
    net = jc.Dense(3, use_bias=use_bias)
    out_shape, params, _ = init_with_random_bias(net, (-1, 7))
    assert out_shape == (-1, 3)
    assert params["kernel"].shape == (7, 3)
    assert sorted(params) == (["bias", "kernel"] if use_bias else ["kernel"])
    with jax.default_matmul_precision("highest"):
        y, state = net.apply(params, {}, jnp.asarray(x, jnp.float32))
    expected = x @ np.asarray(params["kernel"], np.float64)
    if use_bias:
        expected = expected + np.asarray(params["bias"], np.float64)
    assert y.shape == (5, 3) and state == {}
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_dense_literal():
    params = {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "bias": jnp.array([0.5, -0.5])}
    y, _ = jc.Dense(2).apply(params, {}, jnp.array([[1.0, 0.0, -1.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(y, [[1 - 5 + 0.5, 2 - 6 - 0.5], [9 + 0.5, 12 - 0.5]])


def test_dense_on_integer_input_keeps_a_float_kernel():
    net = jc.Dense(4)
    _, params, _ = init_with_random_bias(net, (-1, 3))
    pixels = np.array([[0, 128, 255], [1, 2, 3]], np.uint8)
    y, _ = net.apply(params, {}, jnp.asarray(pixels))
    expected = pixels.astype(np.float64) @ np.asarray(params["kernel"]) + np.asarray(params["bias"])
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_dense_default_init_is_he_normal():
    """He et al. (2015): weights with variance 2 / fan_in, biases zero."""
    _, params, _ = jc.Dense(512).init(jax.random.key(0), (-1, 1024))
    kernel = np.asarray(params["kernel"])
    assert abs(kernel.mean()) < 0.01 * kernel.std()  # about 7 standard errors
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / 1024), rtol=0.02)
    np.testing.assert_array_equal(params["bias"], 0.0)


KEY = jax.random.key(0)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: jc.Dense(10).init(KEY, (-1, 7, 7, 3)),
            jc.ShapeError,
            r"Dense\(10\) expects \(N, D\) inputs, got \(-1, 7, 7, 3\); put Flatten before it",
        ),
        (lambda: jc.Dense(10).init(KEY, (-1, 7, 7, 3)), jc.ShapeError, r"or use Conv\(10, 1\)"),
        (
            lambda: jc.Dense(10).apply({"kernel": jnp.ones((3, 10))}, {}, jnp.ones((2, 1, 1, 3))),
            jc.ShapeError,
            "put Flatten before it",
        ),
        (
            lambda: jc.Dense(10).init(KEY, (-1, -1)),
            jc.ShapeError,
            r"needs a fixed input size D, got \(-1, -1\)",
        ),
        (lambda: jc.Dense(10).init(None, (-1, 3)), jc.MissingKeyError, r"init needs a key: net.init\(jax"),
        (lambda: jc.Dense(0), ValueError, "Dense: features=0 must be positive"),
        (
            lambda: jc.Flatten.init(None, (-1, -1, 4, 3)),
            jc.ShapeError,
            "Flatten needs fixed sizes after the batch",
        ),
    ],
)
def test_bad_inputs_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_flatten_order_is_numpy_reshape_of_nhwc():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out_shape, params, state = jc.Flatten.init(None, (-1, 3, 4, 5))
    y, _ = jc.Flatten.apply(params, state, jnp.asarray(x))
    assert out_shape == (-1, 60)
    np.testing.assert_array_equal(y, x.reshape(2, -1))
    # channels vary fastest, then columns, then rows: the first entries of example 0
    np.testing.assert_array_equal(y[0, :7], [x[0, 0, 0, 0], x[0, 0, 0, 1], 2, 3, 4, x[0, 0, 1, 0], 6])


def test_flatten_then_dense_matches_numpy():
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 2))
    net = jc.serial(jc.Flatten, jc.Dense(5))
    out_shape, params, state = net.init(jax.random.key(0), (-1, 4, 4, 2))
    assert out_shape == (-1, 5)
    with jax.default_matmul_precision("highest"):
        y, _ = net.apply(params, state, jnp.asarray(x, jnp.float32))
    dense = params["dense_1"]
    expected = x.reshape(3, -1) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_finite_difference_gradients():
    with jax.enable_x64(True):
        net = jc.Dense(4)
        rng = np.random.default_rng(2)
        x, kernel, bias = (jnp.asarray(rng.normal(size=shape)) for shape in [(3, 6), (6, 4), (4,)])

        def output(x, kernel, bias):
            return net.apply({"kernel": kernel, "bias": bias}, {}, x)[0]

        check_grads(jax.jit(output), (x, kernel, bias), order=1, modes=("rev",), eps=1e-5)
