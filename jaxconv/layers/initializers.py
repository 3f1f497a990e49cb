"""Kernel initialisers: He, Glorot and LeCun variance scaling, fast to call eagerly.

``std = sqrt(scale / fan)`` with ``fan`` the fan-in (He: scale 2, LeCun: scale 1)
or the mean of fan-in and fan-out (Glorot: scale 1), read from the kernel's
input and output axes times its receptive field, as in `jax.nn.initializers`.
Normal variants draw from a normal truncated at two standard deviations and
rescaled to unit variance; uniform variants from ``[-sqrt(3), sqrt(3)]``.

Why not call `jax.nn.initializers` directly: every new kernel shape compiles a
new random-number program, so an eager ``init`` of a 50-layer net spends
seconds compiling. Here the unit draws come from a few bucket sizes (powers of
two) and are cut to shape, so a whole zoo of shapes shares a handful of
compiled programs. The values depend only on the key and the shape, eager or
traced alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

SCHEMES = {"he": (2.0, "fan_in"), "glorot": (1.0, "fan_avg"), "lecun": (1.0, "fan_in")}
DISTRIBUTIONS = ("normal", "uniform")
ALIASES = {name: f"{name}_normal" for name in SCHEMES}
NAMES = [f"{scheme}_{distribution}" for scheme in SCHEMES for distribution in DISTRIBUTIONS]

_SMALLEST_BUCKET = 1024
_TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def initializer(
    init: str | Initializer,
    in_axis: int = -2,
    out_axis: int = -1,
    batch_axis: Sequence[int] = (),
) -> Initializer:
    """An initialiser ``fn(key, shape, dtype=float32)`` from a name, or ``init`` itself if callable.

    Names: ``'he_normal'``, ``'he_uniform'``, ``'glorot_normal'``, ``'glorot_uniform'``,
    ``'lecun_normal'``, ``'lecun_uniform'``; ``'he'``, ``'glorot'`` and ``'lecun'``
    mean the normal variants. ``batch_axis`` lists axes that hold independent
    kernels (LocallyConnected's output positions) and count in no fan.
    """
    if callable(init):
        return init
    name = ALIASES.get(init, init)
    if name not in NAMES:
        raise ValueError(f"unknown initialiser {init!r}; choose one of {NAMES} or a function")
    scheme, distribution = name.split("_")
    scale, mode = SCHEMES[scheme]

    def draw(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        fan_in, fan_out = fans(shape, in_axis, out_axis, batch_axis)
        fan = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
        if fan <= 0:
            raise ValueError(
                f"initialiser {name!r}: a kernel of shape {tuple(shape)} has fan {fan}, so its scale "
                "sqrt(scale / fan) is undefined; every axis of a kernel needs a positive size"
            )
        size = math.prod(shape)
        unit = _unit(key, _bucket(size), distribution)[:size].reshape(shape)
        return (unit * math.sqrt(scale / fan)).astype(dtype)

    return draw


def fans(
    shape: Sequence[int], in_axis: int, out_axis: int, batch_axis: Sequence[int] = ()
) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel: its input and output sizes times the receptive field."""
    rank = len(shape)
    special = {in_axis % rank, out_axis % rank, *(a % rank for a in batch_axis)}
    receptive = math.prod(size for axis, size in enumerate(shape) if axis not in special)
    return shape[in_axis] * receptive, shape[out_axis] * receptive


def _bucket(size: int) -> int:
    return max(_SMALLEST_BUCKET, 1 << (size - 1).bit_length())


@functools.partial(jax.jit, static_argnums=(1, 2))
def _unit(key: jax.Array, size: int, distribution: str) -> jax.Array:
    """``size`` independent draws of zero mean and unit variance."""
    if distribution == "normal":
        return jax.random.truncated_normal(key, -2.0, 2.0, (size,)) / _TRUNCATED_STD
    return jax.random.uniform(key, (size,), minval=-math.sqrt(3.0), maxval=math.sqrt(3.0))
