"""The transposed convolution: a strided convolution's gradient, used to upsample."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv import sizing
from jaxconv.core import UNKNOWN, Layer, Shape, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.conv import check_channels, check_sizes
from jaxconv.layers.initializers import Initializer, initializer
from jaxconv.layers.shared import floating, init_key, positive, trailing
from jaxconv.sizing import SizeArg, channel_last, per_axis, spatial_rank
from jaxconv.traits import Traits

zeros = jax.nn.initializers.zeros


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
    check_sizes("ConvTranspose", kernel_size=kernel_size, stride=stride, dilation=dilation)

    def init(key, input_shape):
        window, *_, out = _geometry(kernel_size, stride, padding, output_padding, dilation, input_shape)
        init_kernel = initializer(kernel_init)
        kernel_key, bias_key = jax.random.split(init_key("ConvTranspose", key))
        params = {"kernel": init_kernel(kernel_key, (*window, input_shape[-1], features), jnp.float32)}
        if use_bias:
            params["bias"] = bias_init(bias_key, (features,), jnp.float32)
        return (input_shape[0], *out, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        geometry = _geometry(kernel_size, stride, padding, output_padding, dilation, x.shape)
        check_channels("ConvTranspose", params["kernel"].shape[-2], x.shape)
        y = _transposed(floating(x, params["kernel"].dtype), params["kernel"], geometry, precision)
        return (y + trailing(params["bias"].astype(y.dtype), y.ndim) if use_bias else y), {}

    spec = {"kernel_size": kernel_size, "stride": stride, "padding": padding}
    spec |= {"output_padding": output_padding, "dilation": dilation, "use_bias": use_bias}
    traits = Traits(field="unknown", macs="input_positions")
    return layer("ConvTranspose", init, apply, traits=traits, features=features, **spec)


def _geometry(kernel_size, stride, padding, output_padding, dilation, input_shape: Shape):
    """Window, strides, dilations, (lo, hi) paddings, output paddings and output sizes."""
    name = "ConvTranspose"
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
    if any(w != UNKNOWN and o < 1 for w, o in zip(spatial, out, strict=True)):
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


def _transposed(x: jax.Array, kernel: jax.Array, geometry, precision: Any) -> jax.Array:
    """The transpose of a convolution: a convolution of the input spread out by the stride (lhs
    dilation) with the spatially flipped kernel."""
    window, strides, dilations, pads, extra, _ = geometry
    full = [d * (f - 1) for f, d in zip(window, dilations, strict=True)]
    lax_padding = [(r - lo, r - hi + e) for r, (lo, hi), e in zip(full, pads, extra, strict=True)]
    flipped = jnp.flip(kernel, axis=tuple(range(len(window))))
    return lax.conv_general_dilated(
        x,
        flipped.astype(x.dtype),
        window_strides=(1,) * len(window),
        padding=lax_padding,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=channel_last(len(window)),
        precision=precision,
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
    return sizing.padding_pairs(padding, (UNKNOWN,) * rank, window, strides, dilations, "ConvTranspose")
