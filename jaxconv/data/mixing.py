"""Mixup and CutMix: each example of a batch mixed with another of the same batch.

    mixed, partner, lam = mixup(key, x, alpha=0.2)    # x: (N, H, W, C) float
    loss = lam * ce(logits, labels) + (1 - lam) * ce(logits, labels[partner])

Both draw ``lam ~ Beta(alpha, alpha)`` and a permutation ``partner`` of the batch. Mixup
(Zhang et al. 2018) returns ``lam * x + (1 - lam) * x[partner]``; CutMix (Yun et al. 2019)
pastes a box of ``x[partner]`` covering about ``1 - lam`` of the image into ``x`` and returns
the ``lam`` of the box actually pasted (1 - its area / (H * W)), as the paper does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from jaxconv.errors import ConfigError

Mix = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]  # (key, x) -> x, partner, lam
DEFAULT_ALPHA = {"mixup": 0.2, "cutmix": 1.0}


def mixup(key: jax.Array, x: jax.Array, alpha: float = 0.2) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(lam * x + (1 - lam) * x[partner], partner, lam)`` for (N, ...) ``x`` (integers as float32)."""
    x = _floating(x)
    lam_key, order_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, alpha, alpha).astype(x.dtype)
    partner = jax.random.permutation(order_key, x.shape[0])
    return lam * x + (1 - lam) * x[partner], partner, lam


def cutmix(key: jax.Array, x: jax.Array, alpha: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x`` with a box of ``x[partner]`` pasted in, ``partner`` and the share of ``x`` kept, for
    (N, H, W, C) ``x``: one box for the batch, of sides ``sqrt(1 - lam)`` H and W around a uniform
    centre, clipped to the image."""
    x = _floating(x)
    lam_key, order_key, row_key, column_key = jax.random.split(key, 4)
    _, height, width, _ = x.shape
    lam = jax.random.beta(lam_key, alpha, alpha)
    partner = jax.random.permutation(order_key, x.shape[0])
    side = jnp.sqrt(1 - lam)
    inside = _span(row_key, height, side)[:, None] & _span(column_key, width, side)[None, :]  # (H, W)
    mixed = jnp.where(inside[None, :, :, None], x[partner], x)
    kept = 1 - jnp.mean(inside.astype(jnp.float32))
    return mixed, partner, kept.astype(x.dtype)


def _floating(x: jax.Array) -> jax.Array:
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _span(key: jax.Array, size: int, fraction: jax.Array) -> jax.Array:
    """(size,) bools: the positions in a box side of ``fraction * size`` around a uniform centre."""
    centre = jax.random.randint(key, (), 0, size)
    half = jnp.round(fraction * size / 2).astype(jnp.int32)
    positions = jnp.arange(size)
    return (centre - half <= positions) & (positions < centre + half)


def parse_mix(text: str) -> Mix | None:
    """``'none'``, ``'mixup'``, ``'mixup=0.4'``, ``'cutmix'`` or ``'cutmix=1.0'`` as a `Mix` (None: none)."""
    match = re.fullmatch(r"\s*(none|mixup|cutmix)\s*(?:[=:]\s*([0-9.eE+-]+))?\s*", text.lower())
    if match is None:
        raise ConfigError(f"mix={text!r}: use 'none', 'mixup', 'mixup=ALPHA', 'cutmix' or 'cutmix=ALPHA'")
    name, alpha = match.group(1), match.group(2)
    if name == "none":
        return None
    try:
        value = float(alpha) if alpha else DEFAULT_ALPHA[name]
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"mix={text!r}: alpha must be a positive number, e.g. {name}={DEFAULT_ALPHA[name]}")
    return partial(mixup if name == "mixup" else cutmix, alpha=value)
