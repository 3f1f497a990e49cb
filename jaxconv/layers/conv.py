"""Convolutions: shared filters (`Conv`), their transpose, and unshared filters.

A CONV layer slides K filters of size F over the input volume with stride S,
zero-padding P and dilation D; each output is a dot product of one filter with
one window plus a bias (the notes' ``V[x, y, k] = sum(X[window] * W_k) + b_k``).
Activations are (N, *spatial, C) and kernels (*F, C_in / groups, K), so one
`Conv` serves 1-D, 2-D and 3-D inputs; other layouts are one
``dimension_numbers`` away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import sizing
from jaxconv.core import Layer, Shape, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.initializers import Initializer, initializer
from jaxconv.layers.shared import floating, init_key, positive
from jaxconv.sizing import SizeArg, channel_last, per_axis, slide, spatial_rank
from jaxconv.traits import Traits

zeros = jax.nn.initializers.zeros


def Conv(
    features: int,
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    use_bias: bool = True,
    kernel_init: str | Initializer = "he_normal",
    bias_init: Initializer = zeros,
    dimension_numbers: tuple[str, str, str] | None = None,
    strict: bool | None = None,
    precision: Any = None,
    weight_standardization: bool = False,
) -> Layer:
    """A convolution with ``features`` filters (K) of size ``kernel_size`` (F).

    Args:
      stride: S, per axis or one int.
      padding: P as an int, one int per axis, one ``(lo, hi)`` pair per axis,
        ``'SAME'`` (output ``ceil(W / S)``) or ``'VALID'`` (P = 0).
      dilation: D; the filter then spans ``D*(F - 1) + 1`` inputs. D = 1 is a
        contiguous filter (the notes call D = 2 "dilation 1": a gap of one).
      groups: split input and output channels into this many independent
        convolutions (``groups == C_in`` is a depthwise convolution).
      kernel_init: ``'he_normal'`` (default), ``'glorot_uniform'``, ``'lecun_normal'``...
        or any `jax.nn.initializers` function.
      dimension_numbers: XLA layouts, e.g. ``('NCHW', 'OIHW', 'NCHW')``; the
        default is channel-last for the input's spatial rank.
      strict: raise `SizeError` when F, S, P do not tile the input (default:
        floor, unless inside ``sizing.strict()``).
      weight_standardization: convolve with each filter standardised,
        ``(W_k - mean(W_k)) / sqrt(var(W_k) + 1e-5)`` over its F x F x C_in
        weights (Qiao et al. 2019): with GroupNorm, normalisation that does not
        mix the examples of a batch (De et al. 2022's DP-SGD nets).

    Shapes: (N, *spatial, C_in) -> (N, *out_spatial, K); params ``kernel``
    (*F, C_in / groups, K) and ``bias`` (K,).
    """
    positive("Conv", features=features, groups=groups)
    check_sizes("Conv", kernel_size=kernel_size, stride=stride, dilation=dilation)
    if features % groups:
        raise ValueError(
            f"Conv(features={features}, groups={groups}): features must be divisible by groups; "
            f"try features={groups * max(1, round(features / groups))}"
        )
    if dimension_numbers is not None:
        _layout(dimension_numbers, len(dimension_numbers[0]))
    spec = {"features": features, "kernel_size": kernel_size, "stride": stride, "padding": padding}
    spec |= {
        "dilation": dilation,
        "groups": groups,
        "use_bias": use_bias,
        "dimension_numbers": dimension_numbers,
        "weight_standardization": weight_standardization,
    }

    def init(key, input_shape):
        geo = _conv_geometry(spec, strict, input_shape)
        kernel_shape = place(geo.dims.rhs_spec, features, geo.in_channels // groups, geo.window.size)
        init_kernel = initializer(kernel_init, in_axis=geo.dims.rhs_spec[1], out_axis=geo.dims.rhs_spec[0])
        kernel_key, bias_key = jax.random.split(init_key("Conv", key))
        params = {"kernel": init_kernel(kernel_key, kernel_shape, jnp.float32)}
        if use_bias:
            params["bias"] = bias_init(bias_key, (features,), jnp.float32)
        batch = input_shape[geo.dims.lhs_spec[0]]
        return place(geo.dims.out_spec, batch, features, geo.window.out_spatial), params, {}

    def apply(params, state, x, *, key=None, train=False):
        return _convolve(_conv_geometry(spec, strict, x.shape), spec, params, x, precision), {}

    return layer("Conv", init, apply, traits=_traits(spec), **spec)


def _traits(spec: dict[str, Any]) -> Traits:
    """A Conv's traits: tapped with one group and the default layout, its filters standardised
    before the taps' product if ``weight_standardization``."""
    tap = spec["groups"] == 1 and spec["dimension_numbers"] is None
    kernel = standardized_filters if spec["weight_standardization"] else None
    return Traits(window="kernel_size", field="window", macs="output_positions", tap=tap, tap_kernel=kernel)


class _ConvGeometry(NamedTuple):
    dims: lax.ConvDimensionNumbers
    in_channels: int
    window: sizing.Window


def _conv_geometry(spec: dict[str, Any], strict: bool | None, input_shape: Shape) -> _ConvGeometry:
    """The layout, input channels and window of a `Conv` with hyperparameters ``spec`` on an input."""
    layout, kernel_size, groups = spec["dimension_numbers"], spec["kernel_size"], spec["groups"]
    rank = spatial_rank("Conv", input_shape, kernel_size)
    if layout is not None and len(layout[0]) != rank + 2:
        raise ShapeError(
            f"Conv(dimension_numbers={layout}) expects a rank-{len(layout[0])} "
            f"input ({layout[0]}), got shape {tuple(input_shape)}"
        )
    dims = _layout(layout or channel_last(rank), rank + 2)
    in_channels = input_shape[dims.lhs_spec[1]]
    if in_channels % groups:
        raise ShapeError(
            f"Conv(groups={groups}) on {in_channels} input channels: the channels must be "
            f"divisible by groups; use groups={np.gcd(in_channels, groups)} or change the width"
        )
    window = slide(
        "Conv",
        [input_shape[i] for i in dims.lhs_spec[2:]],
        per_axis(kernel_size, rank, "Conv", "kernel_size"),
        per_axis(spec["stride"], rank, "Conv", "stride"),
        spec["padding"],
        per_axis(spec["dilation"], rank, "Conv", "dilation"),
        strict,
    )
    return _ConvGeometry(dims, in_channels, window)


def _convolve(geo: _ConvGeometry, spec: dict[str, Any], params, x: jax.Array, precision: Any) -> jax.Array:
    """``lax.conv_general_dilated`` of ``x`` with the kernel, plus the bias."""
    kernel, dims, groups = params["kernel"], geo.dims, spec["groups"]
    x = floating(x, kernel.dtype)
    if spec["weight_standardization"]:
        kernel = standardized(kernel, out_axis=dims.rhs_spec[0])
    if kernel.shape[dims.rhs_spec[1]] * groups != geo.in_channels:
        raise ShapeError(
            f"Conv was initialised for {kernel.shape[dims.rhs_spec[1]] * groups} input "
            f"channels but got {geo.in_channels} (input shape {x.shape})"
        )
    if uses_patches_dot(geo, spec):
        y = patches_dot(x, kernel.astype(x.dtype), geo.window, precision)
    else:
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=geo.window.stride,
            padding=geo.window.padding,
            rhs_dilation=geo.window.dilation,
            dimension_numbers=dims,
            feature_group_count=groups,
            precision=precision,
        )
    if spec["use_bias"]:
        y = y + params["bias"].astype(y.dtype).reshape(
            place(dims.out_spec, 1, spec["features"], (1,) * (y.ndim - 2))
        )
    return y


PATCHES_DOT_BACKENDS = frozenset({"cpu"})
"""The backends (`jax.default_backend()`) where a convolution whose output is smaller than its
kernel runs as `patches_dot`. XLA:CPU turns such a convolution (a 3x3 kernel on the 2x2
maps of ResNet's last stage at 64x64, or its gradient) into one that slides the activation over
the kernel, which ran 76x slower than `patches_dot` forward and 51x with gradients (batch 16,
2x2x512 -> 512; `benchmarks/profile_steps.py`)."""


def uses_patches_dot(geo: _ConvGeometry, spec: dict[str, Any]) -> bool:
    """Whether a `Conv` runs as `patches_dot` here: on a backend of `PATCHES_DOT_BACKENDS`, a 2-D,
    channel-last, ungrouped, undilated convolution whose output is smaller than the kernel along
    every spatial axis."""
    window = geo.window
    plain = spec["dimension_numbers"] is None and spec["groups"] == 1 and len(window.size) == 2
    plain = plain and all(d == 1 for d in window.dilation)
    small = all(out < size for out, size in zip(window.out_spatial, window.size, strict=True))
    return bool(plain and small and jax.default_backend() in PATCHES_DOT_BACKENDS)


def patches_dot(x: jax.Array, kernel: jax.Array, window: sizing.Window, precision: Any = None) -> jax.Array:
    """A 2-D convolution as one matrix product: the F_h * F_w shifted, strided views of the
    padded input side by side on the channel axis (N, H', W', F_h * F_w * C), times the kernel
    reshaped to (F_h * F_w * C, K). Shapes: (N, H, W, C), (F_h, F_w, C, K) -> (N, H', W', K)."""
    padded = jnp.pad(x, ((0, 0), *window.padding, (0, 0)))
    (out_h, out_w), (stride_h, stride_w) = window.out_spatial, window.stride
    views = [
        lax.slice(
            padded,
            (0, i, j, 0),
            (x.shape[0], i + (out_h - 1) * stride_h + 1, j + (out_w - 1) * stride_w + 1, x.shape[-1]),
            (1, stride_h, stride_w, 1),
        )
        for i in range(window.size[0])
        for j in range(window.size[1])
    ]
    flat_kernel = kernel.reshape(-1, kernel.shape[-1])
    return lax.dot_general(
        jnp.concatenate(views, -1), flat_kernel, (((3,), (0,)), ((), ())), precision=precision
    )


def standardized(kernel: jax.Array, out_axis: int, eps: float = 1e-5) -> jax.Array:
    """Each filter (the slices along ``out_axis``) minus its mean, over ``sqrt(var + eps)``."""
    axes = tuple(axis for axis in range(kernel.ndim) if axis != out_axis)
    mean = kernel.mean(axes, keepdims=True)
    return (kernel - mean) * lax.rsqrt(kernel.var(axes, keepdims=True) + eps)


def standardized_filters(kernel: jax.Array) -> jax.Array:
    """`standardized` for the default layout, filters on the last axis: (*F, C, K) -> (*F, C, K)."""
    return standardized(kernel, out_axis=kernel.ndim - 1)


def place(spec: Sequence[int], batch_or_out: int, channels: int, spatial: Sequence[int]) -> Shape:
    """A shape with its two non-spatial sizes and the spatial sizes at a layout's positions."""
    shape = [0] * (len(spatial) + 2)
    shape[spec[0]], shape[spec[1]] = batch_or_out, channels
    for index, size in zip(spec[2:], spatial, strict=True):
        shape[index] = size
    return tuple(shape)


def check_sizes(layer_name: str, **sizes: SizeArg) -> None:
    """Check size hyperparameters at construction: an int or ints, all positive."""
    for key, value in sizes.items():
        rank = len(value) if isinstance(value, Sequence) else 1
        per_axis(value, rank, layer_name, key)


def _layout(dimension_numbers: tuple[str, str, str], ndim: int) -> lax.ConvDimensionNumbers:
    """XLA's dimension numbers for a layout such as ``('NCHW', 'OIHW', 'NCHW')``."""
    try:
        return lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Conv(dimension_numbers={dimension_numbers!r}) is not a layout ({error}); give three "
            "strings such as ('NCHW', 'OIHW', 'NCHW'): N batch, C channels, O/I out/in features"
        ) from None


def check_channels(layer_name: str, kernel_channels: int, input_shape: Shape) -> None:
    if input_shape[-1] != kernel_channels:
        raise ShapeError(
            f"{layer_name} was initialised for {kernel_channels} input channels but got "
            f"{input_shape[-1]} (input shape {tuple(input_shape)})"
        )
