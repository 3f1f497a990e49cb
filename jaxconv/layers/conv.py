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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import sizing
from jaxconv.core import UNKNOWN, Layer, Shape, Traits, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.initializers import Initializer, initializer
from jaxconv.layers.shared import floating, init_key, positive
from jaxconv.sizing import SizeArg, channel_last, per_axis, slide, spatial_rank

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

    Shapes: (N, *spatial, C_in) -> (N, *out_spatial, K); params ``kernel``
    (*F, C_in / groups, K) and ``bias`` (K,).
    """
    positive("Conv", features=features, groups=groups)
    _check_sizes("Conv", kernel_size=kernel_size, stride=stride, dilation=dilation)
    if features % groups:
        raise ValueError(
            f"Conv(features={features}, groups={groups}): features must be divisible by groups; "
            f"try features={groups * max(1, round(features / groups))}"
        )
    name = "Conv"
    if dimension_numbers is not None:
        _layout(dimension_numbers, len(dimension_numbers[0]))

    def geometry(input_shape: Shape):
        rank = spatial_rank(name, input_shape, kernel_size)
        if dimension_numbers is not None and len(dimension_numbers[0]) != rank + 2:
            raise ShapeError(
                f"Conv(dimension_numbers={dimension_numbers}) expects a rank-{len(dimension_numbers[0])} "
                f"input ({dimension_numbers[0]}), got shape {tuple(input_shape)}"
            )
        dims = _layout(dimension_numbers or channel_last(rank), rank + 2)
        window = per_axis(kernel_size, rank, name, "kernel_size")
        strides = per_axis(stride, rank, name, "stride")
        dilations = per_axis(dilation, rank, name, "dilation")
        in_channels = input_shape[dims.lhs_spec[1]]
        if in_channels % groups:
            raise ShapeError(
                f"Conv(groups={groups}) on {in_channels} input channels: the channels must be "
                f"divisible by groups; use groups={np.gcd(in_channels, groups)} or change the width"
            )
        spatial = [input_shape[i] for i in dims.lhs_spec[2:]]
        geo = slide(name, spatial, window, strides, padding, dilations, strict)
        return dims, window, strides, dilations, in_channels, geo

    def init(key, input_shape):
        dims, window, _, _, in_channels, geo = geometry(input_shape)
        kernel_shape = _place(dims.rhs_spec, features, in_channels // groups, window)
        init_kernel = initializer(kernel_init, in_axis=dims.rhs_spec[1], out_axis=dims.rhs_spec[0])
        kernel_key, bias_key = jax.random.split(init_key(name, key))
        params = {"kernel": init_kernel(kernel_key, kernel_shape, jnp.float32)}
        if use_bias:
            params["bias"] = bias_init(bias_key, (features,), jnp.float32)
        batch = input_shape[dims.lhs_spec[0]]
        return _place(dims.out_spec, batch, features, geo.out_spatial), params, {}

    def apply(params, state, x, *, key=None, train=False):
        dims, _, strides, dilations, in_channels, geo = geometry(x.shape)
        kernel = params["kernel"]
        x = floating(x, kernel.dtype)
        if kernel.shape[dims.rhs_spec[1]] * groups != in_channels:
            raise ShapeError(
                f"Conv was initialised for {kernel.shape[dims.rhs_spec[1]] * groups} input "
                f"channels but got {in_channels} (input shape {x.shape})"
            )
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=strides,
            padding=geo.padding,
            rhs_dilation=dilations,
            dimension_numbers=dims,
            feature_group_count=groups,
            precision=precision,
        )
        if use_bias:
            y = y + params["bias"].astype(y.dtype).reshape(
                _place(dims.out_spec, 1, features, (1,) * (y.ndim - 2))
            )
        return y, {}

    return layer(
        name,
        init,
        apply,
        traits=Traits(
            window="kernel_size",
            field="window",
            macs="output_positions",
            tap=groups == 1 and dimension_numbers is None,
        ),
        features=features,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        use_bias=use_bias,
        dimension_numbers=dimension_numbers,
    )


def ConvTranspose(
    features: int,
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    output_padding: SizeArg = 0,
    dilation: SizeArg = 1,
    use_bias: bool = True,
    kernel_init: str | Initializer = "he_normal",
    bias_init: Initializer = zeros,
    precision: Any = None,
) -> Layer:
    """The transpose (gradient) of a strided convolution: upsamples by S.

    Follows ``torch.nn.ConvTranspose``: each axis grows to
    ``(W - 1)*S - P_lo - P_hi + D*(F - 1) + 1 + output_padding``; padding crops
    P_lo outputs at the start and P_hi at the end, ``output_padding`` adds them
    at the end. ``'SAME'`` gives ``W*S`` (the VJP of a ``'SAME'`` `Conv` with
    stride S) and ``'VALID'`` means P = 0.

    Shapes: (N, *spatial, C_in) -> (N, *out_spatial, K); params ``kernel``
    (*F, C_in, K) and ``bias`` (K,). A torch weight (C_in, K, *F) maps to
    ``kernel`` by moving its first two axes last.
    """
    positive("ConvTranspose", features=features)
    _check_sizes("ConvTranspose", kernel_size=kernel_size, stride=stride, dilation=dilation)
    name = "ConvTranspose"

    def geometry(input_shape: Shape):
        rank = spatial_rank(name, input_shape, kernel_size)
        window = per_axis(kernel_size, rank, name, "kernel_size")
        strides = per_axis(stride, rank, name, "stride")
        dilations = per_axis(dilation, rank, name, "dilation")
        extra = per_axis(output_padding, rank, name, "output_padding", minimum=0)
        if any(e >= max(s, d) for e, s, d in zip(extra, strides, dilations, strict=True)):
            raise ValueError(
                f"ConvTranspose(output_padding={output_padding}) must be smaller than the stride "
                f"{strides} or the dilation {dilations} on each axis"
            )
        pads = _transpose_padding(padding, window, strides, dilations)
        spatial = input_shape[1:-1]
        out = tuple(
            sizing.transpose_output_size(w, f, s, p, d, e)
            for w, f, s, p, d, e in zip(spatial, window, strides, pads, dilations, extra, strict=True)
        )
        if any(o != UNKNOWN and o < 1 for o in out):
            most = [
                (w - 1) * s + d * (f - 1) + e
                for w, f, s, d, e in zip(spatial, window, strides, dilations, extra, strict=True)
            ]
            raise ShapeError(
                f"ConvTranspose on {tuple(input_shape)}: (W - 1)*S - P_lo - P_hi + D*(F - 1) + 1 "
                f"+ output_padding = {out} with padding {pads}; the padding per axis (P_lo + P_hi) "
                f"must be at most {tuple(most)}"
            )
        return window, strides, dilations, pads, extra, out

    def init(key, input_shape):
        window, *_, out = geometry(input_shape)
        init_kernel = initializer(kernel_init)
        kernel_key, bias_key = jax.random.split(init_key(name, key))
        params = {"kernel": init_kernel(kernel_key, (*window, input_shape[-1], features), jnp.float32)}
        if use_bias:
            params["bias"] = bias_init(bias_key, (features,), jnp.float32)
        return (input_shape[0], *out, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        window, strides, dilations, pads, extra, _ = geometry(x.shape)
        _check_channels(name, params["kernel"].shape[-2], x.shape)
        x = floating(x, params["kernel"].dtype)
        # The transpose of a convolution is a convolution of the input spread out by
        # the stride (lhs dilation) with the spatially flipped kernel.
        full = [d * (f - 1) for f, d in zip(window, dilations, strict=True)]
        lax_padding = [(r - lo, r - hi + e) for r, (lo, hi), e in zip(full, pads, extra, strict=True)]
        kernel = jnp.flip(params["kernel"], axis=tuple(range(len(window))))
        y = lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=(1,) * len(window),
            padding=lax_padding,
            lhs_dilation=strides,
            rhs_dilation=dilations,
            dimension_numbers=channel_last(len(window)),
            precision=precision,
        )
        if use_bias:
            y = y + params["bias"].astype(y.dtype)
        return y, {}

    return layer(
        name,
        init,
        apply,
        traits=Traits(field="unknown", macs="input_positions"),
        features=features,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        use_bias=use_bias,
    )


def _transpose_padding(padding, window, strides, dilations) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str) and padding.upper() == "SAME":
        totals = [
            sizing.effective_filter(f, d) - s for f, s, d in zip(window, strides, dilations, strict=True)
        ]
        if any(t < 0 for t in totals):
            raise ValueError(
                f"ConvTranspose(padding='SAME') needs the filter {window} to span at least the "
                f"stride {strides}; use a larger kernel_size or output_padding"
            )
        return tuple((t // 2, t - t // 2) for t in totals)
    rank = len(window)
    return sizing.padding_pairs(padding, (UNKNOWN,) * rank, window, strides, dilations)


def LocallyConnected(
    features: int,
    kernel_size: SizeArg,
    stride: SizeArg = 1,
    padding: sizing.PaddingLike = 0,
    use_bias: bool = True,
    kernel_init: str | Initializer = "he_normal",
    strict: bool | None = None,
    precision: Any = None,
) -> Layer:
    """A convolution whose filters are not shared: each output position has its own.

    The notes' layer for centred inputs such as faces, where different parts of
    the image warrant different features. Needs fixed spatial sizes.
    ``precision`` is that of the per-position products (`jax.lax.Precision`).

    Shapes: (N, *spatial, C_in) -> (N, *out_spatial, K); params ``kernel``
    (*out_spatial, *F, C_in, K) and ``bias`` (*out_spatial, K).
    """
    positive("LocallyConnected", features=features)
    _check_sizes("LocallyConnected", kernel_size=kernel_size, stride=stride)
    name = "LocallyConnected"

    def geometry(input_shape: Shape):
        rank = spatial_rank(name, input_shape, kernel_size)
        window = per_axis(kernel_size, rank, name, "kernel_size")
        strides = per_axis(stride, rank, name, "stride")
        if UNKNOWN in input_shape[1:]:
            raise ShapeError(
                f"LocallyConnected needs fixed spatial sizes (a filter per position), got {input_shape}"
            )
        geo = slide(name, input_shape[1:-1], window, strides, padding, (1,) * rank, strict)
        return window, strides, geo

    def init(key, input_shape):
        window, _, geo = geometry(input_shape)
        rank = len(window)
        shape = (*geo.out_spatial, *window, input_shape[-1], features)
        init_kernel = initializer(kernel_init, batch_axis=tuple(range(rank)))
        kernel_key, _ = jax.random.split(init_key(name, key))
        params = {"kernel": init_kernel(kernel_key, shape, jnp.float32)}
        if use_bias:
            params["bias"] = jnp.zeros((*geo.out_spatial, features), jnp.float32)
        return (input_shape[0], *geo.out_spatial, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        window, strides, geo = geometry(x.shape)
        rank = len(window)
        kernel = params["kernel"]
        _check_channels(name, kernel.shape[-2], x.shape)
        x = floating(x, kernel.dtype)
        if kernel.shape[:rank] != geo.out_spatial:
            raise ShapeError(
                f"LocallyConnected has filters for {kernel.shape[:rank]} output positions but input "
                f"shape {tuple(x.shape)} gives {geo.out_spatial}; apply it to inputs of the spatial "
                "size it was initialised with"
            )
        # A patch is a copy of input values: extract it exactly whatever the default precision.
        patches = lax.conv_general_dilated_patches(
            x,
            window,
            strides,
            geo.padding,
            dimension_numbers=channel_last(rank),
            precision=lax.Precision.HIGHEST,
        )
        # patches: (N, *out, C * prod(F)), channel-major; split into (N, *out, C, *F)
        patches = patches.reshape(*patches.shape[:-1], x.shape[-1], *window)
        out, filt = "pqr"[:rank], "uvw"[:rank]
        spec = f"n{out}c{filt},{out}{filt}co->n{out}o"
        y = jnp.einsum(spec, patches, kernel.astype(x.dtype), precision=precision)
        if use_bias:
            y = y + params["bias"].astype(y.dtype)
        return y, {}

    return layer(
        name,
        init,
        apply,
        traits=Traits(window="kernel_size", field="window", macs="kernel"),
        features=features,
        kernel_size=kernel_size,
        stride=stride,
        padding=padding,
        use_bias=use_bias,
    )


def _place(spec: Sequence[int], batch_or_out: int, channels: int, spatial: Sequence[int]) -> Shape:
    """A shape with its two non-spatial sizes and the spatial sizes at a layout's positions."""
    shape = [0] * (len(spatial) + 2)
    shape[spec[0]], shape[spec[1]] = batch_or_out, channels
    for index, size in zip(spec[2:], spatial, strict=True):
        shape[index] = size
    return tuple(shape)


def _check_sizes(layer_name: str, **sizes: SizeArg) -> None:
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


def _check_channels(layer_name: str, kernel_channels: int, input_shape: Shape) -> None:
    if input_shape[-1] != kernel_channels:
        raise ShapeError(
            f"{layer_name} was initialised for {kernel_channels} input channels but got "
            f"{input_shape[-1]} (input shape {tuple(input_shape)})"
        )
