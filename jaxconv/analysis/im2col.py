"""Convolution and pooling as im2col plus one matrix multiply: the notes' textbook reference.

`im2col` stretches every receptive field of the input into a row (the notes'
``X_col``, here one row per output position), so a convolution is one matrix
multiply with the kernel stretched into a matrix (``W_row``), and pooling is a
reduction over each row. It is slow and memory hungry and exists to be read and
to check the fast `lax` path against.

The cost is memory: each input value is copied into every window that covers
it, about ``F*F / (S*S)`` times. AlexNet's first layer (227x227x3 input,
11x11 filters, stride 4) turns 154,587 input values into a [363 x 3025]
matrix of 1,098,075 values, 7.1 times as many:

>>> patch_matrix_shape((1, 227, 227, 3), 11, stride=4)
(363, 3025)
>>> round(blowup((1, 227, 227, 3), 11, stride=4), 1)
7.1
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

from jaxconv import sizing
from jaxconv.errors import ShapeError
from jaxconv.sizing import SizeArg, per_axis, spatial_rank


def _window(name: str, input_shape, kernel_size, stride, padding, dilation) -> sizing.Window:
    """The window's geometry on an (N, *spatial, C) input: per-axis F, S, D, (lo, hi) padding, outputs."""
    rank = spatial_rank(name, input_shape, kernel_size)
    return sizing.slide(
        name,
        tuple(input_shape[1:-1]),
        per_axis(kernel_size, rank, name, "kernel_size"),
        per_axis(stride, rank, name, "stride"),
        padding,
        per_axis(dilation, rank, name, "dilation"),
        strict=False,
    )


def im2col(
    x: jax.Array,
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    dilation: SizeArg = 1,
    pad_value: float = 0.0,
) -> jax.Array:
    """Every receptive field of ``x`` stretched into a row.

    Shapes: (N, H, W, C) -> (N, out_H, out_W, F_H*F_W*C), the row ordered
    (filter row, filter column, channel) like an HWIO kernel reshaped to
    ``(-1, K)``. Any spatial rank works. ``padding`` as in `jaxconv.Conv`;
    ``pad_value`` fills the padding (``-inf`` for max pooling).
    """
    window = _window("im2col", x.shape, kernel_size, stride, padding, dilation)
    padded = jnp.pad(x, ((0, 0), *window.padding, (0, 0)), constant_values=pad_value)
    columns = []
    for offsets in itertools.product(*(range(f) for f in window.size)):
        # the input values that filter tap `offsets` sees at every output position
        index = tuple(
            slice(o * d, o * d + (n - 1) * s + 1, s)
            for o, d, n, s in zip(offsets, window.dilation, window.out_spatial, window.stride, strict=True)
        )
        columns.append(padded[(slice(None), *index, slice(None))])
    patches = jnp.stack(columns, axis=-2)  # (N, *out, F_H*F_W, C)
    return patches.reshape(*patches.shape[:-2], -1)


def conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    dilation: SizeArg = 1,
) -> jax.Array:
    """A convolution as ``im2col(x) @ kernel.reshape(-1, K)`` (``X_col`` times ``W_row``).

    Shapes: x (N, H, W, C), kernel (F_H, F_W, C, K) -> (N, out_H, out_W, K).
    """
    *window, in_channels, features = kernel.shape
    if x.shape[-1] != in_channels:
        raise ShapeError(
            f"im2col.conv: the kernel {kernel.shape} expects {in_channels} input channels but x "
            f"{x.shape} has {x.shape[-1]}"
        )
    patches = im2col(x, tuple(window), stride, padding, dilation)
    return patches @ kernel.reshape(-1, features)


def _pool_patches(x, window, stride, padding, pad_value) -> jax.Array:
    """(N, *out, F_H*F_W, C): each window's values, channel by channel."""
    stride = window if stride is None else stride
    patches = im2col(x, window, stride, padding, pad_value=pad_value)
    return patches.reshape(*patches.shape[:-1], -1, x.shape[-1])


def max_pool(
    x: jax.Array, window: SizeArg, stride: SizeArg | None = None, padding: sizing.PaddingLike = 0
) -> jax.Array:
    """The maximum of each window (padding never wins). Shapes: (N, H, W, C) -> (N, out_H, out_W, C)."""
    return jnp.max(_pool_patches(x, window, stride, padding, -jnp.inf), axis=-2)


def avg_pool(
    x: jax.Array, window: SizeArg, stride: SizeArg | None = None, padding: sizing.PaddingLike = 0
) -> jax.Array:
    """The mean of each window, padded zeros included. Shapes: (N, H, W, C) -> (N, out_H, out_W, C)."""
    return jnp.mean(_pool_patches(x, window, stride, padding, 0.0), axis=-2)


def patch_matrix_shape(
    input_shape: tuple[int, ...],
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    dilation: SizeArg = 1,
) -> tuple[int, int]:
    """The notes' ``X_col`` shape for one example: (F_H*F_W*C, out positions)."""
    window = _window("im2col", input_shape, kernel_size, stride, padding, dilation)
    return math.prod(window.size) * input_shape[-1], math.prod(window.out_spatial)


def blowup(
    input_shape: tuple[int, ...],
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    dilation: SizeArg = 1,
) -> float:
    """How many times more values ``X_col`` holds than the input volume it was copied from."""
    rows, columns = patch_matrix_shape(input_shape, kernel_size, stride, padding, dilation)
    return rows * columns / math.prod(input_shape[1:])


__all__ = ["avg_pool", "blowup", "conv", "im2col", "max_pool", "patch_matrix_shape"]
