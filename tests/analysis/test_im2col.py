"""`jaxconv.analysis.im2col`: patches, convolution and pooling against NumPy loops and the lax-based layers."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.analysis import im2col as ic
from jaxconv.analysis import summary
from jaxconv.errors import ShapeError


def numpy_patches(x, F, S, P, D):
    """Patches by a direct loop: row (out_y, out_x) holds x[y*S + i*D, x*S + j*D, c] for (i, j, c)."""
    padded = np.pad(x, ((0, 0), (P, P), (P, P), (0, 0)))
    n, height, width, channels = padded.shape
    span = D * (F - 1) + 1
    rows, cols = (height - span) // S + 1, (width - span) // S + 1
    out = np.zeros((n, rows, cols, F * F * channels), x.dtype)
    for b, r, c in itertools.product(range(n), range(rows), range(cols)):
        window = padded[b, r * S : r * S + span : D, c * S : c * S + span : D, :]
        out[b, r, c] = window.reshape(-1)
    return out


GEOMETRIES = [(3, 1, 0, 1), (3, 2, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2), (2, 3, 0, 1), (1, 1, 0, 1)]


@pytest.mark.parametrize(("F", "S", "P", "D"), GEOMETRIES)
def test_patches_match_a_numpy_loop(F, S, P, D):
    x = np.random.default_rng(0).normal(size=(2, 11, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(ic.im2col(x, F, S, P, D), numpy_patches(x, F, S, P, D))


def test_patches_of_a_literal_grid():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    patches = ic.im2col(x, 2, stride=2)
    np.testing.assert_array_equal(
        patches[0, :, :, :], [[[0, 1, 4, 5], [2, 3, 6, 7]], [[8, 9, 12, 13], [10, 11, 14, 15]]]
    )


@pytest.mark.parametrize(("F", "S", "P", "D"), GEOMETRIES)
def test_convolution_is_one_matrix_multiply(F, S, P, D):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    kernel = rng.normal(size=(F, F, 3, 4)).astype(np.float32)
    expected = numpy_patches(x, F, S, P, D) @ kernel.reshape(-1, 4)  # NumPy's X_col @ W_row.T
    layer = jc.Conv(4, F, stride=S, padding=P, dilation=D, use_bias=False)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(ic.conv(x, kernel, S, P, D), expected, rtol=1e-5, atol=1e-5)
        lax_path, _ = layer.apply({"kernel": kernel}, {}, x)
        np.testing.assert_allclose(ic.conv(x, kernel, S, P, D), lax_path, rtol=1e-5, atol=1e-5)


def test_same_padding_and_per_side_pairs_follow_conv():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 10, 7, 2)).astype(np.float32)
    kernel = rng.normal(size=(4, 4, 2, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        for padding in ("SAME", ((1, 2), (0, 3))):
            expected, _ = jc.Conv(3, 4, stride=2, padding=padding, use_bias=False).apply(
                {"kernel": kernel}, {}, x
            )
            np.testing.assert_allclose(ic.conv(x, kernel, 2, padding), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("window", "stride", "padding"), [(2, None, 0), (3, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pooling_through_im2col_matches_the_pool_layers(window, stride, padding):
    x = -np.abs(np.random.default_rng(3).normal(size=(2, 9, 9, 3))).astype(np.float32)  # padding must not win
    maximum, _ = jc.MaxPool(window, stride, padding).apply({}, {}, x)
    average, _ = jc.AvgPool(window, stride, padding).apply({}, {}, x)
    np.testing.assert_array_equal(ic.max_pool(x, window, stride, padding), maximum)
    np.testing.assert_allclose(ic.avg_pool(x, window, stride, padding), average, rtol=1e-6)


def test_alexnet_first_layer_blowup_as_in_the_notes():
    """[227x227x3] with 11x11x3 filters at stride 4: X_col is [363 x 3025], W_row [96 x 363]."""
    assert ic.patch_matrix_shape((1, 227, 227, 3), 11, stride=4) == (363, 3025)
    assert ic.blowup((1, 227, 227, 3), 11, stride=4) == pytest.approx(363 * 3025 / (227 * 227 * 3))
    assert round(ic.blowup((1, 227, 227, 3), 11, stride=4), 1) == 7.1
    assert summary(jc.Conv(96, 11, stride=4), (-1, 227, 227, 3)).rows[1].im2col == 363 * 3025
    x = jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32)
    assert jax.eval_shape(lambda a: ic.im2col(a, 11, 4), x).shape == (1, 55, 55, 363)


def test_channel_mismatch_is_an_error():
    with pytest.raises(
        ShapeError, match=r"kernel \(3, 3, 2, 4\) expects 2 input channels but x \(1, 5, 5, 3\) has 3"
    ):
        ic.conv(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 2, 4)))
