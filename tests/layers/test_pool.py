"""Pooling layers against independent references.

References: `torch.nn.functional` pools (NC* layout), a direct NumPy loop over
windows (any padding, including asymmetric 'SAME'), literal grids a human can
check, an arg-max mask built with NumPy, and finite-difference gradients.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxconv as jc

TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
TORCH_LP = {1: F.lp_pool1d, 2: F.lp_pool2d, 3: F.lp_pool3d}


def run(net: jc.Layer, x) -> np.ndarray:
    """Apply a parameter-free layer and check init's shape agrees with apply's."""
    out_shape, params, state = net.init(None, x.shape)
    with jax.default_matmul_precision("highest"):
        y, _ = net.apply(params, state, jnp.asarray(x))
    assert out_shape == y.shape
    return np.asarray(y)


def torch_pool(fn, x: np.ndarray, *args, **kwargs) -> np.ndarray:
    """A torch channels-first pool applied to an (N, *spatial, C) array."""
    y = fn(torch.from_numpy(np.moveaxis(x, -1, 1)), *args, **kwargs)
    return np.moveaxis(y.numpy(), 1, -1)


def numpy_pool(x: np.ndarray, window, stride, pads, reduce) -> np.ndarray:
    """Direct loop: ``reduce(values, axis=1)`` over each window of the padded input.

    ``x`` is (N, *spatial, C); padding cells are NaN so ``reduce`` decides what they mean.
    """
    padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out_sizes = [
        (w + lo + hi - f) // s + 1
        for w, (lo, hi), f, s in zip(x.shape[1:-1], pads, window, stride, strict=True)
    ]
    out = np.empty((x.shape[0], *out_sizes, x.shape[-1]))
    for index in itertools.product(*map(range, out_sizes)):
        region = tuple(slice(i * s, i * s + f) for i, s, f in zip(index, stride, window, strict=True))
        values = padded[(slice(None), *region, slice(None))].reshape(x.shape[0], -1, x.shape[-1])
        out[(slice(None), *index, slice(None))] = reduce(values, axis=1)
    return out


def max_of(values, axis):
    return np.nanmax(values, axis=axis)  # padding never wins


def mean_with_padding(values, axis):
    return np.mean(np.nan_to_num(values), axis=axis)  # padded zeros count


def mean_of_real(values, axis):
    return np.nanmean(values, axis=axis)


def lp_norm(p):
    return lambda values, axis: np.nansum(np.abs(values) ** p, axis=axis) ** (1 / p)


@st.composite
def pool_geometry(draw, max_rank=3):
    """(input shape, window, stride, symmetric padding) with padding <= window // 2, as torch needs."""
    rank = draw(st.integers(1, max_rank))
    window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, f // 2)) for f in window)
    spatial = tuple(draw(st.integers(f, f + 4)) for f in window)  # torch wants W >= F
    return (2, *spatial, 3), window, stride, padding


def expected_shape(shape, window, stride, padding):
    """The notes' sizing rule, floor((W - F + 2P) / S) + 1, on every spatial axis."""
    spatial = [
        (w - f + 2 * p) // s + 1 for w, f, s, p in zip(shape[1:-1], window, stride, padding, strict=True)
    ]
    return (shape[0], *spatial, shape[-1])


@settings(max_examples=20, deadline=None)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_max_pool_matches_torch(geometry, seed):
    shape, window, stride, padding = geometry
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    y = run(jc.MaxPool(window, stride, padding), x)
    assert y.shape == expected_shape(shape, window, stride, padding)
    expected = torch_pool(TORCH_MAX[len(window)], x, window, stride, padding)
    np.testing.assert_array_equal(y, expected)


@settings(max_examples=20, deadline=None)
@given(geometry=pool_geometry(), include_pad=st.booleans(), seed=st.integers(0, 2**16))
def test_avg_pool_matches_torch(geometry, include_pad, seed):
    shape, window, stride, padding = geometry
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    y = run(jc.AvgPool(window, stride, padding, count_include_pad=include_pad), x)
    assert y.shape == expected_shape(shape, window, stride, padding)
    expected = torch_pool(TORCH_AVG[len(window)], x, window, stride, padding, count_include_pad=include_pad)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(geometry=pool_geometry(), p=st.sampled_from([2.0, 3.0, 1.5]), seed=st.integers(0, 2**16))
def test_lp_pool_matches_torch_without_padding(geometry, p, seed):
    shape, window, stride, _ = geometry
    shape = (shape[0], *(max(w, f) for w, f in zip(shape[1:-1], window, strict=True)), shape[-1])
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    if p != 2:  # torch raises x to the power p without abs: compare on positive inputs
        x = np.abs(x) + 0.1
    y = run(jc.LpPool(window, stride, p=p), x)
    if len(window) == 1:  # torch's lp_pool1d wants plain ints
        window, stride = window[0], stride[0]
    expected = torch_pool(TORCH_LP[x.ndim - 2], x, p, window, stride)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_lp_pool_with_padding_and_signs_matches_numpy_loop(geometry, seed):
    shape, window, stride, padding = geometry
    x = np.random.default_rng(seed).normal(size=shape)
    pads = [(p, p) for p in padding]
    for p in (2.0, 3.0):
        y = run(jc.LpPool(window, stride, padding, p=p), x.astype(np.float32))
        np.testing.assert_allclose(y, numpy_pool(x, window, stride, pads, lp_norm(p)), rtol=1e-4, atol=1e-5)


def test_pools_on_a_4x4_arange_grid():
    x = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)
    # windows: [[0 1 4 5], [2 3 6 7], [8 9 12 13], [10 11 14 15]]
    np.testing.assert_array_equal(run(jc.MaxPool(2), x)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(run(jc.AvgPool(2), x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    l2 = [
        [np.sqrt(0 + 1 + 16 + 25), np.sqrt(4 + 9 + 36 + 49)],
        [np.sqrt(64 + 81 + 144 + 169), np.sqrt(100 + 121 + 196 + 225)],
    ]
    np.testing.assert_allclose(run(jc.LpPool(2), x)[0, :, :, 0], l2, rtol=1e-6)
    # overlapping F=3, S=1 on the same grid: the bottom-right corner of each window
    np.testing.assert_array_equal(run(jc.MaxPool(3, stride=1), x)[0, :, :, 0], [[10, 11], [14, 15]])


def test_lp_pool_literal_3_4_5():
    x = np.array([3.0, -4.0, 0.0, 0.0], np.float32).reshape(1, 4, 1)
    np.testing.assert_allclose(run(jc.LpPool(2), x)[0, :, 0], [5.0, 0.0])
    np.testing.assert_allclose(run(jc.LpPool(2, p=1), x)[0, :, 0], [7.0, 0.0])


def test_padding_never_wins_a_max_and_counts_in_a_mean_only_when_asked():
    x = np.array([-1.0, -2.0, -3.0], np.float32).reshape(1, 3, 1)
    np.testing.assert_array_equal(run(jc.MaxPool(3, stride=1, padding=1), x)[0, :, 0], [-1, -1, -2])
    np.testing.assert_allclose(run(jc.AvgPool(3, stride=1, padding=1), x)[0, :, 0], [-1, -2, -5 / 3])
    exclude = jc.AvgPool(3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_allclose(run(exclude, x)[0, :, 0], [-1.5, -2, -2.5])


ONE_TO_FIVE = [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("net", "values", "expected"),
    [
        (jc.MaxPool(2, padding="SAME"), ONE_TO_FIVE, [2, 4, 5]),  # pads (0, 1): ceil(5 / 2) = 3 outputs
        (jc.MaxPool(2, padding="VALID"), ONE_TO_FIVE, [2, 4]),
        (jc.MaxPool(3, stride=1, padding="SAME"), [1.0, 5.0, 2.0, 4.0, 3.0], [5, 5, 5, 4, 4]),
        (jc.AvgPool(2, padding="SAME"), ONE_TO_FIVE, [1.5, 3.5, 2.5]),
        (jc.AvgPool(2, padding="SAME", count_include_pad=False), ONE_TO_FIVE, [1.5, 3.5, 5.0]),
        (jc.LpPool(2, padding="SAME"), ONE_TO_FIVE, [np.sqrt(5), 5.0, 5.0]),
    ],
)
def test_same_and_valid_padding_literal_1d(net, values, expected):
    x = np.array(values, np.float32).reshape(1, 5, 1)
    np.testing.assert_allclose(run(net, x)[0, :, 0], expected, rtol=1e-6)


def tf_same_padding(width: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME': ceil(W / S) outputs, the extra padding at the end."""
    total = max((-(-width // stride) - 1) * stride + window - width, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 7, 6, 3), (1, 5, 4, 6, 2)])
@pytest.mark.parametrize(("window", "stride"), [(2, 2), (3, 2), (3, 1), (2, 3)])
def test_same_padding_matches_numpy_loop(shape, window, stride):
    x = np.random.default_rng(0).normal(size=shape)
    rank = len(shape) - 2
    pads = [tf_same_padding(w, window, stride) for w in shape[1:-1]]
    windows, strides = (window,) * rank, (stride,) * rank
    cases = [
        (jc.MaxPool(window, stride, "SAME"), max_of),
        (jc.AvgPool(window, stride, "SAME"), mean_with_padding),
        (jc.AvgPool(window, stride, "SAME", count_include_pad=False), mean_of_real),
        (jc.LpPool(window, stride, "SAME"), lp_norm(2)),
    ]
    for net, reduce in cases:
        y = run(net, x.astype(np.float32))
        assert y.shape[1:-1] == tuple(-(-w // stride) for w in shape[1:-1])
        np.testing.assert_allclose(y, numpy_pool(x, windows, strides, pads, reduce), rtol=1e-5, atol=1e-6)


def test_asymmetric_padding_matches_numpy_loop():
    x = np.random.default_rng(1).normal(size=(2, 6, 7, 3))
    pads = ((0, 1), (2, 1))
    for net, reduce in [
        (jc.MaxPool(3, 2, pads), max_of),
        (jc.AvgPool(3, 2, pads, count_include_pad=False), mean_of_real),
        (jc.AvgPool(3, 2, pads), mean_with_padding),
    ]:
        y = run(net, x.astype(np.float32))
        np.testing.assert_allclose(y, numpy_pool(x, (3, 3), (2, 2), pads, reduce), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("window", "stride"), [((2, 2), None), ((3, 2), None), ((2, 3), None), ((3, 3), (2, 2))]
)
def test_max_pool_gradient_reaches_only_the_argmax(window, stride):
    shape = (2, 7, 6, 3)  # 7 rows: with F=2 the last row is never pooled
    rng = np.random.default_rng(0)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # distinct values
    net = jc.MaxPool(window, stride)
    grad = np.asarray(jax.grad(lambda x: jnp.sum(net.apply({}, {}, x)[0]))(jnp.asarray(x)))

    stride = stride or window
    expected = np.zeros(shape)
    out_h, out_w = ((w - f) // s + 1 for w, f, s in zip(shape[1:3], window, stride, strict=True))
    for n, i, j, c in itertools.product(range(shape[0]), range(out_h), range(out_w), range(shape[3])):
        rows, cols = (
            slice(i * stride[0], i * stride[0] + window[0]),
            slice(j * stride[1], j * stride[1] + window[1]),
        )
        r, q = np.unravel_index(np.argmax(x[n, rows, cols, c]), window)
        expected[n, rows.start + r, cols.start + q, c] += 1
    np.testing.assert_array_equal(grad, expected)
    if stride == window:  # non-overlapping: a 0/1 mask, one 1 per window
        assert set(np.unique(grad)) == {0.0, 1.0}
        assert grad.sum() == shape[0] * out_h * out_w * shape[3]


@pytest.mark.parametrize("shape", [(2, 9, 4), (2, 5, 6, 4), (2, 3, 4, 5, 4)])
def test_global_pools_match_numpy(shape):
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    axes = tuple(range(1, len(shape) - 1))
    for net, reduce in [(jc.GlobalAvgPool, np.mean), (jc.GlobalMaxPool, np.max)]:
        assert net.init(None, (-1, *shape[1:]))[0] == (-1, shape[-1])
        np.testing.assert_allclose(run(net, x), reduce(x.astype(np.float64), axis=axes), rtol=1e-5, atol=1e-6)


def test_unknown_sizes_stay_unknown():
    assert jc.MaxPool(2).init(None, (-1, -1, -1, 3))[0] == (-1, -1, -1, 3)
    assert jc.AvgPool(3, 2, "SAME").init(None, (-1, 9, -1, 3))[0] == (-1, 5, -1, 3)


@pytest.mark.parametrize(
    ("net", "shape", "error", "match"),
    [
        (jc.MaxPool(2, padding=2), (-1, 8, 8, 1), jc.ShapeError, "a padding of 2 is at least the window 2"),
        (jc.AvgPool((2, 2)), (-1, 8, 1), jc.ShapeError, r"expects a rank-4 input \(N, H, W, C\)"),
        (jc.LpPool((2, 2, 2)), (-1, 8, 8, 1), jc.ShapeError, r"rank-5 input \(N, D, H, W, C\)"),
        (jc.MaxPool(2), (-1, 8), jc.ShapeError, "expects a rank-3"),
        (jc.MaxPool(5), (-1, 4, 4, 1), jc.SizeError, "the filter spans 5 but the padded input is only"),
        (
            jc.MaxPool(2, strict=True),
            (-1, 5, 4, 1),
            jc.SizeError,
            r"= 2.5 is not an integer; padding \(0, 1\) per side would give 3",
        ),
        (jc.AvgPool(2, padding="FULL"), (-1, 4, 4, 1), ValueError, "'FULL' is not a mode"),
        (jc.GlobalAvgPool, (-1, 10), jc.ShapeError, r"GlobalAvgPool expects a rank-3\+ input"),
        (jc.GlobalMaxPool, (-1, 10), jc.ShapeError, r"GlobalMaxPool expects a rank-3\+ input"),
    ],
)
def test_bad_inputs_raise_at_init_and_apply(net, shape, error, match):
    with pytest.raises(error, match=match):
        net.init(None, shape)
    with pytest.raises(error, match=match):
        net.apply({}, {}, jnp.zeros([1 if d == -1 else d for d in shape]))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: jc.MaxPool(0), "MaxPool: window=0 must be positive"),
        (lambda: jc.AvgPool(2, stride=(1, 0)), r"AvgPool: stride=\(1, 0\) must be positive"),
        (lambda: jc.LpPool(2, p=0), "LpPool: p=0 must be positive"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_strict_sizing_context_applies_to_pools():
    with jc.sizing.strict(), pytest.raises(jc.SizeError, match="MaxPool"):
        jc.MaxPool(3, stride=2).init(None, (-1, 8, 8, 1))
    assert jc.MaxPool(3, stride=2).init(None, (-1, 8, 8, 1))[0] == (-1, 3, 3, 1)


# --- finite-difference gradients (float64) ----------------------------------------------------


def pool_fn(net):
    return lambda x: net.apply({}, {}, x)[0]


@pytest.mark.parametrize(
    "net",
    [
        jc.AvgPool(3, 2, 1),
        jc.AvgPool(3, 2, 1, count_include_pad=False),
        jc.AvgPool(2, padding="SAME", count_include_pad=False),
        jc.LpPool(2, 1),
        jc.LpPool(3, 2, 1, p=3.0),
        jc.LpPool(2, p=1.5),
        jc.MaxPool(3, 2, 1),
    ],
)
def test_finite_difference_gradients(net):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        # distinct values at least 0.01 apart (max pool) and away from zero (Lp norms)
        x = rng.permutation(2 * 5 * 6 * 2).reshape(2, 5, 6, 2) * 0.01 + 0.5
        x = x * rng.choice([-1.0, 1.0], size=x.shape)
        check_grads(pool_fn(net), (jnp.asarray(x, jnp.float64),), order=1, modes=("rev",), eps=1e-5)


@pytest.mark.parametrize("p", [2.0, 3.0, 1.0, 0.5])
def test_lp_pool_gradient_is_zero_not_nan_at_zero(p):
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 2:, 2:, 0] = [[1.0, 0.0], [2.0, 2.0]]  # one all-zero window, one window with a zero entry
    grad = np.asarray(jax.grad(lambda x: jnp.sum(jc.LpPool(2, p=p).apply({}, {}, x)[0]))(jnp.asarray(x)))
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0, :2, :, 0], 0.0)  # the zero windows
    norm = (1 + 2 * 2**p) ** (1 / p)  # d/dx_i (sum |x|^p)^(1/p) = |x_i|^(p-1) sign(x_i) / norm^(p-1)
    expected = np.array([[1.0, 0.0], [2 ** (p - 1), 2 ** (p - 1)]]) / norm ** (p - 1)
    np.testing.assert_allclose(grad[0, 2:, 2:, 0], expected, rtol=1e-5)


def test_lp_pool_of_integer_pixels_does_not_overflow():
    x = jnp.asarray([0, 3, 12, 15], jnp.uint8).reshape(1, 2, 2, 1)
    y, _ = jc.LpPool(2).apply({}, {}, x)
    np.testing.assert_allclose(y.reshape(()), np.sqrt(0 + 9 + 144 + 225), rtol=1e-6)
    y8, _ = jc.LpPool(2).apply({}, {}, jnp.full((1, 2, 2, 1), 12, jnp.int8))
    np.testing.assert_allclose(y8.reshape(()), 24.0, rtol=1e-6)
