"""Pooling conventions of the other frameworks: dilation, AvgPool's ceil_mode and the 'SAME'
average of TensorFlow/Keras, against the frameworks' published examples and torch.nn.functional.

The literal arrays are copied from the frameworks' documentation and test suites, as cited at
each one; jaxconv computed none of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxconv as jc
from jaxconv import sizing
from jaxconv.layers.pool import uses_tiled_max

ONE_TO_16 = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)  # ONNX's [[1..4], ..., [13..16]]


def run(net: jc.Layer, x: np.ndarray) -> np.ndarray:
    """Apply a parameter-free layer; init's shape must be apply's."""
    out_shape, params, state = net.init(None, x.shape)
    y, _ = net.apply(params, state, jnp.asarray(x))
    assert out_shape == y.shape
    return np.asarray(y)


def test_max_pool_dilation_is_onnx_maxpool_2d_dilations():
    # onnx/backend/test/case/node/maxpool.py, export_maxpool_2d_dilations: kernel 2x2, strides 1,
    # dilations 2 on 1..16 gives [[11, 12], [15, 16]]
    y = run(jc.MaxPool(2, 1, dilation=2), ONE_TO_16)
    np.testing.assert_array_equal(y[0, :, :, 0], [[11, 12], [15, 16]])


def test_max_pool_ceil_mode_is_onnx_maxpool_2d_ceil():
    # onnx/backend/test/case/node/maxpool.py, export_maxpool_2d_ceil: kernel 3x3, strides 2,
    # ceil_mode=True on 1..16 gives [[11, 12], [15, 16]]
    y = run(jc.MaxPool(3, 2, ceil_mode=True), ONE_TO_16)
    np.testing.assert_array_equal(y[0, :, :, 0], [[11, 12], [15, 16]])


def test_avg_pool_ceil_mode_is_onnx_averagepool_2d_ceil():
    # onnx/backend/test/case/node/averagepool.py, export_averagepool_2d_ceil: kernel 3x3,
    # strides 2, ceil_mode=True on 1..16 gives [[6, 7.5], [12, 13.5]] (the overhang never counts)
    for count_include_pad in (True, False):  # no padding: both conventions agree
        y = run(jc.AvgPool(3, 2, ceil_mode=True, count_include_pad=count_include_pad), ONE_TO_16)
        np.testing.assert_allclose(y[0, :, :, 0], [[6, 7.5], [12, 13.5]])


def test_avg_pool_dilation_is_onnx_averagepool_2d_dilations():
    # onnx/backend/test/case/node/averagepool.py, export_averagepool_2d_dilations (opset 19):
    # kernel 2x2, strides 1, dilations 2, ceil_mode=True on 1..16 gives [[6, 7], [10, 11]]
    y = run(jc.AvgPool(2, 1, dilation=2, ceil_mode=True), ONE_TO_16)
    np.testing.assert_allclose(y[0, :, :, 0], [[6, 7], [10, 11]])


def test_same_average_over_real_inputs_is_keras_average_pooling_2d():
    # keras.layers.AveragePooling2D docstring, padding="same": pool 2x2, strides 1 on
    # [[1, 2, 3], [4, 5, 6], [7, 8, 9]] gives [[3, 4, 4.5], [6, 7, 7.5], [7.5, 8.5, 9]]
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    y = run(jc.AvgPool(2, 1, padding="SAME", count_include_pad=False), x)
    np.testing.assert_allclose(y[0, :, :, 0], [[3, 4, 4.5], [6, 7, 7.5], [7.5, 8.5, 9]])
    counted = run(jc.AvgPool(2, 1, padding="SAME"), x)  # PyTorch's convention counts the zeros
    assert counted[0, 0, 2, 0] == pytest.approx((3 + 6) / 4)


@pytest.mark.parametrize(
    ("window", "stride", "padding", "dilation", "ceil_mode", "size"),
    [(3, 2, 1, 2, False, 9), (2, 2, 0, 3, True, 10), (3, 1, 1, 2, True, 7), (2, 3, 1, 1, True, 8)],
)
def test_max_pool_matches_torch(window, stride, padding, dilation, ceil_mode, size):
    x = np.random.default_rng(size).standard_normal((2, size, size + 1, 3)).astype(np.float32)
    net = jc.MaxPool(window, stride, padding, ceil_mode=ceil_mode, dilation=dilation)
    expected = F.max_pool2d(
        torch.from_numpy(np.moveaxis(x, -1, 1)),
        window,
        stride,
        padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
    )
    np.testing.assert_array_equal(run(net, x), np.moveaxis(expected.numpy(), 1, -1))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("window", "stride", "padding", "size"), [(3, 2, 1, 8), (2, 2, 1, 7), (3, 3, 1, 10)])
def test_avg_pool_ceil_mode_matches_torch(window, stride, padding, size, count_include_pad):
    x = np.random.default_rng(size).standard_normal((2, size, size + 2, 3)).astype(np.float32)
    net = jc.AvgPool(window, stride, padding, count_include_pad=count_include_pad, ceil_mode=True)
    expected = F.avg_pool2d(
        torch.from_numpy(np.moveaxis(x, -1, 1)), window, stride, padding,
        ceil_mode=True, count_include_pad=count_include_pad,
    )  # fmt: skip
    np.testing.assert_allclose(run(net, x), np.moveaxis(expected.numpy(), 1, -1), rtol=1e-6, atol=1e-6)


def test_dilated_max_pool_never_takes_the_tiled_path():
    assert uses_tiled_max((8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), impl="tiled")
    assert not uses_tiled_max((8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), impl="tiled", dilation=(2, 1))
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 2)).astype(np.float32)
    tiled = jc.MaxPool(2, 2, dilation=2, impl="tiled")  # windows equal strides, but dilated
    expected = F.max_pool2d(torch.from_numpy(np.moveaxis(x, -1, 1)), 2, 2, dilation=2)
    np.testing.assert_array_equal(run(tiled, x), np.moveaxis(expected.numpy(), 1, -1))
    grad = jax.grad(lambda v: tiled.apply({}, {}, v)[0].sum())(jnp.asarray(x))
    inputs = torch.from_numpy(np.moveaxis(x, -1, 1)).requires_grad_()
    F.max_pool2d(inputs, 2, 2, dilation=2).sum().backward()
    np.testing.assert_array_equal(grad, np.moveaxis(inputs.grad.numpy(), 1, -1))


def test_the_window_of_a_dilated_pool_reaches_the_tools():
    net = jc.serial(jc.MaxPool(3, 1, dilation=2), jc.AvgPool(2, 2, ceil_mode=True))
    info = jc.core.walk(net)
    pool = next(description for _, description in info if description.kind == "MaxPool")
    window = sizing.layer_window(pool, (1, 9, 9, 1))
    assert window.dilation == (2, 2) and window.out_spatial == (5, 5)  # (9 - 5)/1 + 1
    out_shape, _, _ = net.init(None, (1, 9, 9, 1))
    assert out_shape == (1, 3, 3, 1)  # ceil((5 - 2)/2) + 1
    assert sizing.receptive_fields([(3, 1, 2), (2, 2, 1)])[-1][0] == 6  # 5, then + 1


@pytest.mark.parametrize("make", [jc.MaxPool, jc.AvgPool])
def test_pool_arguments_are_refused_with_the_layer_name(make):
    with pytest.raises(ValueError, match=f"{make.__name__}.*dilation"):
        make(2, dilation=0)
    with pytest.raises(ValueError, match=f"{make.__name__}.*ceil_mode"):
        make(2, padding="SAME", ceil_mode=True)
    with pytest.raises(
        ValueError, match=f"{make.__name__}.*dilation=2.*window 3"
    ):  # a window of only padding
        make(2, dilation=2, padding=3).init(None, (1, 8, 8, 1))
