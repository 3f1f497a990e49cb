"""What the layers share: argument checks, the key a random layer needs, dtypes, window reductions.

The sliding-window geometry is `jaxconv.sizing`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Key
from jaxconv.errors import MissingKeyError


def positive(layer: str, **values: int | float) -> None:
    """Raise unless every named hyperparameter is > 0."""
    for name, value in values.items():
        items = value if isinstance(value, Sequence) else (value,)
        if any(not v > 0 for v in items):  # also rejects NaN
            raise ValueError(f"{layer}: {name}={value!r} must be positive")


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


def reduce_window(x, init_value, op, window, stride, padding, dilation=None) -> jax.Array:
    """`lax.reduce_window` over the spatial axes of an (N, *spatial, C) array, its window dilated by
    ``dilation`` (None: contiguous)."""
    dilated = None if dilation is None else (1, *dilation, 1)
    padding = ((0, 0), *padding, (0, 0))
    return lax.reduce_window(
        x, init_value, op, (1, *window, 1), (1, *stride, 1), padding, window_dilation=dilated
    )


def trailing(value: jax.Array, ndim: int) -> jax.Array:
    """``value`` with leading axes of size 1 up to ``ndim``, to broadcast on an ``ndim`` array's
    trailing axes explicitly (a (C,) bias against (N, H, W, C) becomes (1, 1, 1, C)), so that a
    program run under ``jax.numpy_rank_promotion("raise")`` works."""
    return value.reshape((1,) * (ndim - value.ndim) + value.shape)


def floating(x: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """Integer inputs (uint8 pixels) computed in ``dtype`` (a layer's parameter dtype); floats keep theirs."""
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(dtype)
