"""`jc.LocallyConnected` (unshared filters) against a NumPy loop, and against `jc.Conv`
when every position is given the same filter.

Kernel shape (*out_spatial, *F, C_in, K): output position (i, j) has its own (*F, C_in, K)
filter and its own bias (K,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import init_shapes

import jaxconv as jc

KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def numpy_locally_connected(x, kernel, bias, stride, pads):
    """V[n, i, j, k] = sum(X_padded[n, i*S0 : i*S0 + F0, j*S1 : j*S1 + F1, :] * W[i, j, ..., k]) + b[i, j, k]."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    padded = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_h, out_w, window_h, window_w, _, features = kernel.shape
    y = np.zeros((x.shape[0], out_h, out_w, features))
    for n in range(x.shape[0]):
        for i in range(out_h):
            for j in range(out_w):
                rows = slice(i * stride[0], i * stride[0] + window_h)
                columns = slice(j * stride[1], j * stride[1] + window_w)
                for k in range(features):
                    y[n, i, j, k] = np.sum(padded[n, rows, columns, :] * kernel[i, j, ..., k]) + bias[i, j, k]
    return y


@pytest.mark.parametrize(
    ("spatial", "channels", "features", "options", "pads", "out"),
    [
        ((6, 6), 3, 4, {"kernel_size": 3}, [(0, 0), (0, 0)], (4, 4)),
        ((7, 6), 2, 3, {"kernel_size": (3, 2), "stride": 2, "padding": 1}, [(1, 1), (1, 1)], (4, 4)),
        (
            (5, 8),
            3,
            2,
            {"kernel_size": 2, "stride": (1, 3), "padding": ((0, 1), (2, 0))},
            [(0, 1), (2, 0)],
            (5, 3),
        ),
        ((5, 5), 1, 2, {"kernel_size": 3, "stride": 2, "padding": "SAME"}, [(1, 1), (1, 1)], (3, 3)),
    ],
)
def test_matches_numpy_loop(spatial, channels, features, options, pads, out):
    rng = np.random.default_rng(0)
    net = jc.LocallyConnected(features, **options)
    shape, params, _ = init_shapes(net, (-1, *spatial, channels))
    window = (
        options["kernel_size"] if isinstance(options["kernel_size"], tuple) else (options["kernel_size"],) * 2
    )
    assert shape == (-1, *out, features)
    assert params["kernel"].shape == (*out, *window, channels, features)
    assert params["bias"].shape == (*out, features)
    params = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in params.items()}
    x = rng.standard_normal((2, *spatial, channels)).astype(np.float32)
    stride = options.get("stride", 1)
    stride = (stride,) * 2 if isinstance(stride, int) else stride
    expected = numpy_locally_connected(x, **params, stride=stride, pads=pads)
    y, _ = net.apply(params, {}, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_literal_grid_with_a_different_filter_per_position():
    # x = arange(9) as 3x3, 2x2 windows; position (i, j)'s filter is all (1 + 2i + j) and its bias 100*i:
    # window sums [[8, 12], [20, 24]] times [[1, 2], [3, 4]] plus [[0, 0], [100, 100]].
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    scale = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    kernel = np.ones((2, 2, 2, 2, 1, 1), np.float32) * scale[:, :, None, None, None, None]
    bias = np.array([[0.0, 0.0], [100.0, 100.0]], np.float32)[..., None]
    y, _ = jc.LocallyConnected(1, 2).apply({"kernel": kernel, "bias": bias}, {}, x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[8, 24], [160, 196]])


@pytest.mark.parametrize(
    ("spatial", "options"),
    [
        ((6, 7), {"kernel_size": 3}),
        ((9, 8), {"kernel_size": (2, 3), "stride": (2, 1), "padding": ((1, 0), (0, 2))}),
    ],
)
def test_the_same_filter_everywhere_is_a_convolution(spatial, options):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *spatial, 3)).astype(np.float32)
    local = jc.LocallyConnected(4, **options)
    _, params, _ = init_shapes(local, x.shape)
    out = params["kernel"].shape[:2]
    kernel = rng.standard_normal(params["kernel"].shape[2:]).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    shared = {
        "kernel": np.broadcast_to(kernel, (*out, *kernel.shape)),
        "bias": np.broadcast_to(bias, (*out, 4)),
    }
    y_local, _ = local.apply(shared, {}, x)
    y_conv, _ = jc.Conv(4, **options).apply({"kernel": kernel, "bias": bias}, {}, x)
    np.testing.assert_allclose(y_local, y_conv, rtol=1e-5, atol=1e-5)


def test_one_dimensional_input():
    rng = np.random.default_rng(2)
    net = jc.LocallyConnected(2, 3, stride=2)
    shape, params, _ = init_shapes(net, (-1, 9, 2))
    assert shape == (-1, 4, 2) and params["kernel"].shape == (4, 3, 2, 2)
    params = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in params.items()}
    x = rng.standard_normal((1, 9, 2)).astype(np.float32)
    y, _ = net.apply(params, {}, x)
    for i in range(4):
        expected = np.einsum("fc,fck->k", x[0, 2 * i : 2 * i + 3], params["kernel"][i]) + params["bias"][i]
        np.testing.assert_allclose(y[0, i], expected, rtol=1e-5, atol=1e-5)


def test_gradient_reaches_every_position_filter():
    rng = np.random.default_rng(3)
    net = jc.LocallyConnected(2, 2, stride=2)
    _, params, _ = init_shapes(net, (-1, 4, 4, 1))
    params = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in params.items()}
    x = rng.standard_normal((1, 4, 4, 1)).astype(np.float32)
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, {}, x)[0]))(params)
    # d(sum y)/dW[i, j, a, b, 0, k] = x[2i + a, 2j + b]: each position's filter sees its own patch
    patches = x[0, :, :, 0].reshape(2, 2, 2, 2).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(grads["kernel"][..., 0, :], np.repeat(patches[..., None], 2, -1), rtol=1e-6)
    np.testing.assert_array_equal(grads["bias"], np.ones((2, 2, 2)))


def test_strict_and_floor():
    assert init_shapes(jc.LocallyConnected(2, 3, stride=2), (-1, 10, 10, 1))[0] == (-1, 4, 4, 2)
    with pytest.raises(
        jc.SizeError, match=r"LocallyConnected\(F=3, S=2, P=0\) on W=10: .* = 4\.5 is not an integer"
    ):
        init_shapes(jc.LocallyConnected(2, 3, stride=2, strict=True), (-1, 10, 10, 1))


def test_bad_input():
    with pytest.raises(
        jc.ShapeError, match=r"LocallyConnected needs fixed spatial sizes .* got \(-1, -1, 8, 1\)"
    ):
        init_shapes(jc.LocallyConnected(2, 3), (-1, -1, 8, 1))
    with pytest.raises(jc.ShapeError, match=r"LocallyConnected expects a rank-4 input \(N, H, W, C\)"):
        init_shapes(jc.LocallyConnected(2, (3, 3)), (-1, 8, 1))
    with pytest.raises(jc.SizeError, match=r"the filter spans 5 but the padded input is only W \+ 2P = 4"):
        init_shapes(jc.LocallyConnected(2, 5), (-1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"LocallyConnected: kernel_size=0 must be positive"):
        jc.LocallyConnected(2, 0)
    with pytest.raises(jc.MissingKeyError, match=r"LocallyConnected has parameters; init needs a key"):
        jc.LocallyConnected(2, 3).init(None, (-1, 8, 8, 1))
    net = jc.LocallyConnected(2, 3)
    _, params, _ = init_shapes(net, (-1, 8, 8, 3))
    with pytest.raises(
        jc.ShapeError, match=r"LocallyConnected was initialised for 3 input channels but got 2"
    ):
        net.apply(params, {}, jnp.ones((1, 8, 8, 2)))
    with pytest.raises(
        jc.ShapeError,
        match=r"has filters for \(6, 6\) output positions but input shape \(1, 9, 8, 3\) gives \(7, 6\)",
    ):
        net.apply(params, {}, jnp.ones((1, 9, 8, 3)))
