"""A convolution as its taps and one matrix product, for inputs smaller than the kernel.

XLA's CPU backend convolves an input smaller than the kernel on some spatial axis (a 3x3
kernel, padding 1, on the 2x2 or 1x1 maps at the end of a ResNet fed 64x64 images) with a slow
generic loop: measured on 2 cores, batch 64, 512 -> 512 channels on 2x2, 1,649 ms forward
(0.7 GFLOP/s, against about 90 GFLOP/s for the same kernel on 8x8), where the taps below take
21 ms, and 3,719 ms against 62 ms with both gradients. Such maps are tiny, so gathering every
tap's shifted copy of the padded input costs little:

    patches[n, o, (f, c)] = x_padded[n, o * S + f * D, c]      (o, f: output and kernel positions)
    y[n, o, k] = sum over (f, c) of patches[n, o, (f, c)] * W[f, c, k]

one slice per kernel position and one ``dot`` whose gradients are slices, pads and dots again.
`Conv` takes this path where `uses_taps` says so: channels-last, one group, on a backend of
`TAPS_BACKENDS`; elsewhere it is ``lax.conv_general_dilated`` as always.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv import sizing

TAPS_BACKENDS = frozenset({"cpu"})
"""The backends (`jax.default_backend()`) where the taps measured faster for small inputs."""


def uses_taps(spatial: Sequence[int], window: sizing.Window, groups: int, channels_last: bool) -> bool:
    """Whether a `Conv` of ``window`` on inputs of ``spatial`` sizes runs as `taps_conv` here:
    an input smaller than the kernel on some axis, one group, channels-last, on a backend of
    `TAPS_BACKENDS`."""
    smaller = any(size < kernel for size, kernel in zip(spatial, window.size, strict=True))
    return smaller and groups == 1 and channels_last and jax.default_backend() in TAPS_BACKENDS


def taps_conv(x: jax.Array, kernel: jax.Array, window: sizing.Window, precision=None) -> jax.Array:
    """(N, *spatial, C) convolved with a (*F, C, K) kernel over ``window`` (stride, dilation,
    padding) -> (N, *out_spatial, K): ``lax.conv_general_dilated``'s result, as taps and a dot."""
    pads = [(0, 0, 0), *[(low, high, 0) for low, high in window.padding], (0, 0, 0)]
    padded = lax.pad(x, jnp.zeros((), x.dtype), pads)
    out, stride = window.out_spatial, window.stride
    copies = []
    for offsets in itertools.product(*[range(size) for size in window.size]):
        start = [f * dilation for f, dilation in zip(offsets, window.dilation, strict=True)]
        limit = [s + (o - 1) * step + 1 for s, o, step in zip(start, out, stride, strict=True)]
        copies.append(lax.slice(padded, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *stride, 1)))
    patches = jnp.concatenate(copies, axis=-1)  # (N, *out, prod(F) * C), kernel positions major
    flat_kernel = kernel.reshape(-1, kernel.shape[-1])
    return jnp.dot(patches, flat_kernel, precision=precision)
