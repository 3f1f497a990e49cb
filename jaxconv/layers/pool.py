"""Pooling: downsample each channel independently over sliding windows.

The notes' POOL layer takes windows of size F with stride S (most often
F=2, S=2, or the overlapping F=3, S=2) and reduces each to one number: its max,
its average, or its L2 norm. Pools work on (N, *spatial, C) inputs of any
spatial rank and keep C.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import sizing
from jaxconv.core import Layer, Shape, layer
from jaxconv.errors import ShapeError
from jaxconv.layers._util import SizeArg, per_axis, positive, reduce_window, slide, spatial_rank

Reduce = Callable[[jax.Array, tuple[int, ...], tuple[int, ...], tuple], jax.Array]


def _pool(
    kind: str,
    reduce: Reduce,
    window: SizeArg,
    stride: SizeArg | None,
    padding: sizing.PaddingLike,
    strict: bool | None,
    **spec,
) -> Layer:
    """A pooling layer from ``reduce(x, window, strides, padding_pairs)``."""
    stride = window if stride is None else stride
    positive(kind, window=window, stride=stride)

    def geometry(input_shape: Shape):
        rank = spatial_rank(kind, input_shape, window)
        windows = per_axis(window, rank, kind, "window")
        strides = per_axis(stride, rank, kind, "stride")
        geo = slide(kind, input_shape[1:-1], windows, strides, padding, (1,) * rank, strict)
        for (lo, hi), f in zip(geo.padding, windows, strict=True):
            if max(lo, hi) >= f:
                raise ShapeError(
                    f"{kind}(window={window}, padding={padding}): a padding of {max(lo, hi)} "
                    f"is at least the window {f}, so some windows would hold only padding; "
                    f"use padding < {f}"
                )
        return windows, strides, geo

    def init(key, input_shape):
        _, _, geo = geometry(input_shape)
        return (input_shape[0], *geo.out_spatial, input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        windows, strides, geo = geometry(x.shape)
        return reduce(x, windows, strides, geo.padding), {}

    return layer(kind, init, apply, window=window, stride=stride, padding=padding, **spec)


def MaxPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    strict: bool | None = None,
) -> Layer:
    """The maximum of each window (padding never wins). Stride defaults to the window.

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """

    def reduce(x, windows, strides, pads):
        return reduce_window(x, -jnp.inf, lax.max, windows, strides, pads)

    return _pool("MaxPool", reduce, window, stride, padding, strict)


def AvgPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    count_include_pad: bool = True,
    strict: bool | None = None,
) -> Layer:
    """The mean of each window. Stride defaults to the window.

    With ``count_include_pad=True`` padded zeros count in the mean (PyTorch's
    default); with False each window is averaged over its real inputs only.

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """

    def reduce(x, windows, strides, pads):
        sums = reduce_window(x, 0.0, lax.add, windows, strides, pads)
        if count_include_pad or not any(p for pair in pads for p in pair):
            return sums / np.prod(windows)
        ones = np.ones((1, *x.shape[1:-1], 1), x.dtype)
        counts = reduce_window(ones, 0.0, lax.add, windows, strides, pads)  # folded by XLA
        return sums / counts

    return _pool("AvgPool", reduce, window, stride, padding, strict, count_include_pad=count_include_pad)


def LpPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    p: float = 2.0,
    strict: bool | None = None,
) -> Layer:
    """The Lp norm of each window, ``(sum |x|^p)^(1/p)``; p=2 is the notes' L2-norm pooling.

    The norm is not differentiable at zero: an all-zero window, and for
    ``p <= 1`` an entry at zero, gets a zero gradient rather than NaN or inf.

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """
    positive("LpPool", p=p)

    def reduce(x, windows, strides, pads):
        if p == 2:
            powered = x * x
        else:  # |x|^p, with a zero (not infinite or NaN) gradient at x = 0
            nonzero = x != 0
            powered = jnp.where(nonzero, jnp.abs(jnp.where(nonzero, x, 1)) ** p, 0)
        sums = reduce_window(powered, 0.0, lax.add, windows, strides, pads)
        positive_sums = sums > 0
        safe = jnp.where(positive_sums, sums, 1.0)
        return jnp.where(positive_sums, safe ** (1.0 / p), 0.0)

    return _pool("LpPool", reduce, window, stride, padding, strict, p=p)


def _global(kind: str, reduce: Callable[..., jax.Array]) -> Layer:
    def init(key, input_shape):
        spatial_rank(kind, input_shape)
        return (input_shape[0], input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        spatial_rank(kind, x.shape)
        return reduce(x, axis=tuple(range(1, x.ndim - 1))), {}

    return layer(kind, init, apply)


GlobalAvgPool = _global("GlobalAvgPool", jnp.mean)
"""The mean over all spatial positions: (N, *spatial, C) -> (N, C)."""

GlobalMaxPool = _global("GlobalMaxPool", jnp.max)
"""The maximum over all spatial positions: (N, *spatial, C) -> (N, C)."""
