"""`AdaptiveAvgPool`, `MaxPool(ceil_mode=True)` and `Relu6` against `torch.nn.functional`.

The PyTorch behaviours that torchvision's models rely on: adaptive average
pooling to a fixed size (AlexNet, VGG, GoogLeNet's auxiliary heads), max
pooling that rounds its output size up (GoogLeNet, SqueezeNet) and ReLU6
(MobileNetV2). Torch works channels first; the helpers move the channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxconv.errors import ShapeError
from jaxconv.layers import AdaptiveAvgPool, MaxPool, Relu6

ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def run(net, x: np.ndarray) -> np.ndarray:
    """Apply a parameter-free layer, checking that init predicts apply's shape."""
    out_shape, params, state = net.init(None, (-1, *x.shape[1:]))
    y, _ = net.apply(params, state, jnp.asarray(x))
    assert out_shape == (-1, *y.shape[1:])
    return np.asarray(y)


def channels_first(fn, x: np.ndarray, *args, **kwargs) -> np.ndarray:
    return np.moveaxis(fn(torch.from_numpy(np.moveaxis(x, -1, 1)), *args, **kwargs).numpy(), 1, -1)


# --- AdaptiveAvgPool -----------------------------------------------------------------------------


@settings(max_examples=40)
@given(
    rank=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 12), min_size=3, max_size=3),
    outputs=st.lists(st.integers(1, 8), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_adaptive_avg_pool_equals_torch(rank, sizes, outputs, seed):
    x = np.random.default_rng(seed).normal(size=(2, *sizes[:rank], 3)).astype(np.float32)
    output_size = tuple(outputs[:rank])
    expected = channels_first(ADAPTIVE[rank], x, output_size)
    np.testing.assert_allclose(run(AdaptiveAvgPool(output_size), x), expected, rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_literal_grid():
    # W=5 to 3 cells: inputs [0, 2), [1, 4), [3, 5), so means 0.5, 2, 3.5
    x = np.arange(5, dtype=np.float32).reshape(1, 5, 1)
    np.testing.assert_array_equal(run(AdaptiveAvgPool(3), x)[0, :, 0], [0.5, 2.0, 3.5])


def test_adaptive_avg_pool_int_means_every_axis():
    x = np.ones((1, 14, 10, 2), np.float32)
    assert run(AdaptiveAvgPool(7), x).shape == (1, 7, 7, 2)


def test_adaptive_avg_pool_needs_known_sizes():
    with pytest.raises(
        ShapeError, match=r"AdaptiveAvgPool\(7\) needs known spatial sizes, got \(-1, -1, 9, 3\)"
    ):
        AdaptiveAvgPool(7).init(None, (-1, -1, 9, 3))


def test_adaptive_avg_pool_checks_rank_and_size():
    with pytest.raises(ShapeError, match="rank-4 input"):
        AdaptiveAvgPool((2, 2)).init(None, (-1, 9, 3))
    with pytest.raises(ValueError, match=r"output_size=0 must be positive"):
        AdaptiveAvgPool(0)


# --- MaxPool(ceil_mode=True) ---------------------------------------------------------------------


@settings(max_examples=60)
@given(
    size=st.integers(1, 20),
    window=st.integers(1, 4),
    stride=st.integers(1, 4),
    padding=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_ceil_mode_max_pool_equals_torch(size, window, stride, padding, seed):
    padding = min(padding, window // 2)  # torch's rule: padding at most half the window
    size = max(size, window - 2 * padding)
    x = np.random.default_rng(seed).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    expected = channels_first(F.max_pool2d, x, window, stride, padding, ceil_mode=True)
    np.testing.assert_array_equal(run(MaxPool(window, stride, padding, ceil_mode=True), x), expected)


@pytest.mark.parametrize("size", [13, 14, 55, 112])
def test_ceil_mode_keeps_the_last_partial_window(size):
    x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32)
    expected = channels_first(F.max_pool2d, x, 3, 2, ceil_mode=True)
    np.testing.assert_array_equal(run(MaxPool(3, 2, ceil_mode=True), x), expected)


def test_ceil_mode_literal_grid():
    x = np.arange(5, dtype=np.float32).reshape(1, 5, 1)  # windows [0, 1], [2, 3], [4]
    np.testing.assert_array_equal(run(MaxPool(2, ceil_mode=True), x)[0, :, 0], [1, 3, 4])
    np.testing.assert_array_equal(run(MaxPool(2), x)[0, :, 0], [1, 3])


def test_ceil_mode_drops_a_window_that_starts_in_the_padding():
    # W=4, F=2, S=2, P=1: ceil((4 + 2 - 2) / 2) + 1 = 3 windows; a 4th would start in the padding
    x = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    expected = channels_first(F.max_pool1d, x, 2, 2, 1, ceil_mode=True)
    np.testing.assert_array_equal(run(MaxPool(2, 2, 1, ceil_mode=True), x), expected)
    assert expected.shape == (1, 3, 1)


def test_ceil_mode_needs_an_int_padding():
    with pytest.raises(ValueError, match=r"MaxPool\(ceil_mode=True, padding='SAME'\): .* give padding=0"):
        MaxPool(3, 2, "SAME", ceil_mode=True)


# --- Relu6 ---------------------------------------------------------------------------------------


def test_relu6_equals_torch_with_gradient():
    values = np.array([-3.0, -1e-3, 0.0, 1e-3, 2.5, 5.999, 6.0, 6.001, 9.0], np.float32)
    y, vjp = jax.vjp(lambda v: Relu6.apply({}, {}, v)[0], jnp.asarray(values))
    reference = torch.tensor(values, requires_grad=True)
    expected = F.relu6(reference)
    expected.sum().backward()
    np.testing.assert_array_equal(y, expected.detach().numpy())
    interior = (values != 0) & (values != 6)  # the kinks: frameworks choose either one-sided slope
    np.testing.assert_array_equal(vjp(jnp.ones_like(y))[0][interior], reference.grad.numpy()[interior])
