"""Argument checks, layouts, sliding-window geometry and initialisers shared by the layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import sizing
from jaxconv.core import Key, Shape
from jaxconv.errors import MissingKeyError, ShapeError

SizeArg = int | Sequence[int]

_SPATIAL_LETTERS = "DHW"


def positive(layer: str, **values: int | float) -> None:
    """Raise unless every named hyperparameter is > 0."""
    for name, value in values.items():
        items = value if isinstance(value, Sequence) else (value,)
        if any(not v > 0 for v in items):  # also rejects NaN
            raise ValueError(f"{layer}: {name}={value!r} must be positive")


def per_axis(value: SizeArg, rank: int, layer: str, name: str, minimum: int = 1) -> tuple[int, ...]:
    """An int (same on every spatial axis) or one int per axis, as a tuple of ``rank`` ints >= minimum."""
    is_ints = isinstance(value, Sequence) and len(value) > 0 and all(_is_int(v) for v in value)
    if not (_is_int(value) or is_ints):
        raise ValueError(f"{layer}: {name}={value!r} is not a size; give an int or one int per axis")
    values = (value,) * rank if _is_int(value) else tuple(value)
    if len(values) != rank:
        raise ShapeError(
            f"{layer}: {name}={value!r} has {len(values)} entries but the input has {rank} "
            f"spatial axes; give one int or {rank}"
        )
    if any(v < minimum for v in values):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{layer}: {name}={value!r} must be {bound}")
    return tuple(int(v) for v in values)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def spatial_rank(layer: str, input_shape: Shape, fixed: SizeArg | None = None) -> int:
    """The number of spatial axes of an (N, *spatial, C) input, checked against ``fixed``."""
    rank = len(input_shape) - 2
    expected = None if fixed is None or _is_int(fixed) else len(tuple(fixed))
    if rank < 1 or (expected is not None and rank != expected):
        want = f"(N, {', '.join(_SPATIAL_LETTERS[-expected:])}, C)" if expected else "(N, ..., C)"
        raise ShapeError(
            f"{layer} expects a rank-{(expected or 1) + 2}{'' if expected else '+'} input {want}, "
            f"got shape {tuple(input_shape)}; under vmap over single examples keep a batch axis "
            "of 1 (x[:, None]) so every example is still (1, H, W, C)"
        )
    return rank


def channel_last(rank: int) -> tuple[str, str, str]:
    """XLA dimension numbers for NHWC activations and HWIO kernels (any spatial rank)."""
    spatial = _SPATIAL_LETTERS[-rank:] if rank <= 3 else "".join(chr(ord("a") + i) for i in range(rank))
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


class Window(NamedTuple):
    """A sliding window's geometry on one input: per-side padding and the output sizes."""

    padding: tuple[tuple[int, int], ...]
    out_spatial: tuple[int, ...]


def slide(
    layer: str,
    spatial: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    padding: sizing.PaddingLike,
    dilation: Sequence[int],
    strict: bool | None,
) -> Window:
    """Resolve ``padding`` and apply the sizing rule on every spatial axis."""
    pads = sizing.padding_pairs(padding, spatial, window, stride, dilation)
    out = tuple(
        sizing.output_size(w, f, s, p[0] if p[0] == p[1] else p, d, strict=strict, layer=layer)
        for w, f, s, p, d in zip(spatial, window, stride, pads, dilation, strict=True)
    )
    return Window(pads, out)


def require_key(layer: str, key: Key | None) -> Key:
    """The key a random layer needs in training mode, or an error that shows the call."""
    if key is None:
        raise MissingKeyError(
            f"{layer} is random in training mode and needs a key: call "
            "net.apply(params, state, x, key=jax.random.key(seed), train=True), "
            "or train=False for evaluation"
        )
    return key


def init_key(layer: str, key: Key | None) -> Key:
    if key is None:
        raise MissingKeyError(f"{layer} has parameters; init needs a key: net.init(jax.random.key(0), shape)")
    return key


def reduce_window(x, init_value, op, window, stride, padding) -> jax.Array:
    """`lax.reduce_window` over the spatial axes of an (N, *spatial, C) array."""
    return lax.reduce_window(x, init_value, op, (1, *window, 1), (1, *stride, 1), ((0, 0), *padding, (0, 0)))


def floating(x: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """Integer inputs (uint8 pixels) computed in ``dtype`` (a layer's parameter dtype); floats keep theirs."""
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(dtype)
