"""The locally-connected layer: a convolution whose filters are not shared across positions."""

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
from jaxconv.sizing import SizeArg, channel_last, per_axis, slide, spatial_rank
from jaxconv.traits import Traits

zeros = jax.nn.initializers.zeros


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
    check_sizes("LocallyConnected", kernel_size=kernel_size, stride=stride)

    def init(key, input_shape):
        window, _, geo = _geometry(kernel_size, stride, padding, strict, input_shape)
        shape = (*geo.out_spatial, *window, input_shape[-1], features)
        init_kernel = initializer(kernel_init, batch_axis=tuple(range(len(window))))
        kernel_key, _ = jax.random.split(init_key("LocallyConnected", key))
        params = {"kernel": init_kernel(kernel_key, shape, jnp.float32)}
        if use_bias:
            params["bias"] = jnp.zeros((*geo.out_spatial, features), jnp.float32)
        return (input_shape[0], *geo.out_spatial, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        geometry = _geometry(kernel_size, stride, padding, strict, x.shape)
        y = _locally_connected(x, params["kernel"], geometry, precision)
        return (y + trailing(params["bias"].astype(y.dtype), y.ndim) if use_bias else y), {}

    traits = Traits(window="kernel_size", field="window", macs="kernel")
    spec = {"kernel_size": kernel_size, "stride": stride, "padding": padding, "use_bias": use_bias}
    return layer("LocallyConnected", init, apply, traits=traits, features=features, **spec)


def _geometry(kernel_size, stride, padding, strict, input_shape: Shape):
    """Window, strides and the sliding `sizing.Window` on a fixed-size input."""
    name = "LocallyConnected"
    rank = spatial_rank(name, input_shape, kernel_size)
    window = per_axis(kernel_size, rank, name, "kernel_size")
    strides = per_axis(stride, rank, name, "stride")
    if UNKNOWN in input_shape[1:]:
        raise ShapeError(
            f"LocallyConnected needs fixed spatial sizes (a filter per position), got {input_shape}"
        )
    geo = slide(name, input_shape[1:-1], window, strides, padding, (1,) * rank, strict)
    return window, strides, geo


def _locally_connected(x: jax.Array, kernel: jax.Array, geometry, precision: Any) -> jax.Array:
    """Each output position's own filter applied to its patch: (N, *spatial, C) -> (N, *out, K)."""
    window, strides, geo = geometry
    rank = len(window)
    check_channels("LocallyConnected", kernel.shape[-2], x.shape)
    x = floating(x, kernel.dtype)
    if kernel.shape[:rank] != geo.out_spatial:
        raise ShapeError(
            f"LocallyConnected has filters for {kernel.shape[:rank]} output positions but input "
            f"shape {tuple(x.shape)} gives {geo.out_spatial}; apply it to inputs of the spatial "
            "size it was initialised with"
        )
    # A patch is a copy of input values: extract it exactly whatever the default precision.
    patches = lax.conv_general_dilated_patches(
        x, window, strides, geo.padding, dimension_numbers=channel_last(rank), precision=lax.Precision.HIGHEST
    )
    # patches: (N, *out, C * prod(F)), channel-major; split into (N, *out, C, *F)
    patches = patches.reshape(*patches.shape[:-1], x.shape[-1], *window)
    out, filt = "pqr"[:rank], "uvw"[:rank]
    return jnp.einsum(
        f"n{out}c{filt},{out}{filt}co->n{out}o", patches, kernel.astype(x.dtype), precision=precision
    )
