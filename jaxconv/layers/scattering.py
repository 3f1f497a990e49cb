"""The scattering transform (Mallat 2012; Oyallon & Mallat 2015): fixed, non-learned features.

A cascade of Morlet wavelet convolutions, moduli and a Gaussian low-pass, computed by Kymatio's
JAX frontend. It has no parameters, so under DP-SGD it costs no privacy: Tramer & Boneh (2021)
train a linear model or a small CNN on these features and beat end-to-end CNNs at epsilon 3.
"""

from __future__ import annotations

import functools

import einops
import jax.numpy as jnp

from jaxconv.core import Layer, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.shared import positive
from jaxconv.traits import Traits


def coefficients(scales: int, angles: int, max_order: int = 2) -> int:
    """Scattering coefficients per input channel: 1 low-pass, ``scales * angles`` first-order
    paths, and ``angles**2 * scales * (scales - 1) / 2`` second-order paths (scale j1 < j2)."""
    second = angles**2 * scales * (scales - 1) // 2 if max_order == 2 else 0
    return 1 + scales * angles + second


def Scattering(scales: int = 2, angles: int = 8, max_order: int = 2) -> Layer:
    """The 2-D scattering transform of each channel, up to order ``max_order`` (1 or 2), with
    ``angles`` wavelet orientations at each of ``scales`` dyadic scales (Kymatio's J and L).

    Shapes: (N, H, W, C) -> (N, H / 2**scales, W / 2**scales, C * K), K = `coefficients(...)`;
    channel c's K coefficients are consecutive, in Kymatio's order (the low-pass, then the
    first-order paths, then the second-order ones). H and W must be multiples of 2**scales.
    No parameters; computed in float32 through FFTs.
    """
    positive("Scattering", scales=scales, angles=angles)
    if max_order not in (1, 2):
        raise ValueError(f"Scattering(max_order={max_order!r}): use 1 or 2")

    def init(key, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f"Scattering takes (N, H, W, C) images; got input shape {input_shape}")
        _, height, width, channels = input_shape
        step = 2**scales
        if height % step or width % step:
            raise ShapeError(
                f"Scattering(scales={scales}) on {height}x{width}: H and W must be multiples of "
                f"2**scales = {step}; pad or crop the input, or use fewer scales"
            )
        per_channel = coefficients(scales, angles, max_order)
        return (input_shape[0], height // step, width // step, channels * per_channel), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        transform = _transform(scales, angles, max_order, x.shape[-3], x.shape[-2])
        images = einops.rearrange(x.astype(jnp.float32), "n h w c -> n c h w")
        features = transform(images)  # (N, C, K, H', W')
        return einops.rearrange(features, "n c k h w -> n h w (c k)").astype(x.dtype), {}

    traits = Traits(field="whole", fixed=True)  # FFT convolutions over the padded image
    return layer("Scattering", init, apply, traits=traits, scales=scales, angles=angles, max_order=max_order)


@functools.lru_cache(maxsize=16)
def _transform(scales: int, angles: int, max_order: int, height: int, width: int):
    """Kymatio's transform for one image size: its filter bank is built once per size."""
    # the 2-D frontend itself: `kymatio.jax` also imports the 3-D one, which needs a
    # `scipy.special.sph_harm` that SciPy 1.15 removed
    from kymatio.scattering2d.frontend.jax_frontend import ScatteringJax2D

    return ScatteringJax2D(J=scales, shape=(height, width), L=angles, max_order=max_order)


__all__ = ["Scattering", "coefficients"]
