"""Data augmentation as pure JAX functions of a key and a batch.

They run on the accelerator, inside `jit` and `vmap`, and give the same result
for the same key. Images are (N, H, W, C); each example gets its own random
draw. The usual pipeline is `augment` inside the jitted train step::

    x = augment(key, images_uint8, crop_padding=4, flip=True,
                mean=CIFAR10_MEAN, std=CIFAR10_STD)       # (N, H, W, C) float32
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["augment", "normalize", "random_crop", "random_flip", "test_views"]

Stat = float | Sequence[float] | jax.Array


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Zero-pad each image by `padding` pixels per side, then crop back to (H, W).

    Each example gets its own offset, uniform over the (2P + 1)^2 positions, so
    the content shifts by up to P pixels in each direction (the standard
    CIFAR-10 augmentation with P = 4).

    Args:
      key: a `jax.random` key.
      images: (N, H, W, C), any dtype.
      padding: P >= 0, a Python int (static under `jit`).

    Returns:
      (N, H, W, C), the dtype of `images`.
    """
    n, h, w, c = _nhwc(images, "random_crop")
    if not isinstance(padding, int | np.integer) or padding < 0:
        raise ValueError(f"random_crop: padding must be an int >= 0, got {padding!r}")
    if padding == 0:
        return images
    pad = (padding, padding)
    padded = jnp.pad(images, ((0, 0), pad, pad, (0, 0)))  # (N, H + 2P, W + 2P, C)
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)  # (N, 2): (row, column)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)  # (N, H, W, C)


def random_flip(key: jax.Array, images: jax.Array, *, probability: float = 0.5) -> jax.Array:
    """Mirror each image left-right (along W) with probability `probability`.

    Args:
      key: a `jax.random` key.
      images: (N, H, W, C), any dtype.

    Returns:
      (N, H, W, C), the dtype of `images`.
    """
    n, *_ = _nhwc(images, "random_flip")
    flip = jax.random.bernoulli(key, probability, (n,))  # (N,)
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def test_views(images: jax.Array, *, crop_padding: int = 0, flip: bool = False) -> list[jax.Array]:
    """The views test-time augmentation averages over: the images; with ``crop_padding`` P the
    four crops of the zero-padded images shifted by P pixels up, down, left and right (the
    extremes of `random_crop`'s offsets along each axis); with ``flip`` each of those mirrored.

    Args:
      images: (N, H, W, C), any dtype.

    Returns:
      1, 5, 2 or 10 arrays, each (N, H, W, C) of the dtype of ``images``.
    """
    _, h, w, _ = _nhwc(images, "test_views")
    views = [images]
    if crop_padding:
        p = crop_padding
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        for row, column in ((0, p), (2 * p, p), (p, 0), (p, 2 * p)):
            views.append(padded[:, row : row + h, column : column + w, :])
    if flip:
        views += [view[:, :, ::-1, :] for view in views]
    return views


def normalize(images: jax.Array, mean: Stat, std: Stat) -> jax.Array:
    """Scale to [0, 1] and standardise per channel: (images / 255 - mean) / std.

    Args:
      images: (N, H, W, C) or any (..., C). uint8 is scaled by 1/255 to float32;
        floating-point images are taken to be in [0, 1] already.
      mean, std: a scalar or one value per channel, shape (C,), in [0, 1] units
        (e.g. `CIFAR10_MEAN`, `CIFAR10_STD`).

    Returns:
      Same shape, float32 (or the floating dtype of `images`).
    """
    x = jnp.asarray(images)
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"normalize: expected uint8 or floating-point images, got {x.dtype}")
    channels = x.shape[-1] if x.ndim else 0
    mean, std = (_per_channel(v, x, channels, label) for v, label in ((mean, "mean"), (std, "std")))
    return (x - mean) / std


def augment(
    key: jax.Array,
    images: jax.Array,
    *,
    mean: Stat,
    std: Stat,
    crop_padding: int = 0,
    flip: bool = False,
) -> jax.Array:
    """`random_crop` (if `crop_padding`), `random_flip` (if `flip`), then `normalize`.

    Args:
      key: a `jax.random` key, split between the crop and the flip.
      images: (N, H, W, C) uint8.

    Returns:
      (N, H, W, C) float32.
    """
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
        images = random_crop(crop_key, images, crop_padding)
    if flip:
        images = random_flip(flip_key, images)
    return normalize(images, mean, std)


def _nhwc(images: jax.Array, caller: str) -> tuple[int, int, int, int]:
    if jnp.ndim(images) != 4:
        raise ValueError(f"{caller}: expected images of shape (N, H, W, C), got shape {jnp.shape(images)}")
    n, h, w, c = jnp.shape(images)
    return n, h, w, c


def _per_channel(value: Stat, x: jax.Array, channels: int, label: str) -> jax.Array:
    """`value` as shape (1, ..., 1, C) or (1, ..., 1, 1), broadcasting against `x` without
    rank promotion."""
    v = jnp.asarray(value, x.dtype)
    if v.ndim > 1 or v.size not in (1, channels):
        raise ValueError(
            f"normalize: {label} must be a scalar or have one value per channel "
            f"({channels}), got shape {v.shape}"
        )
    return v.reshape((1,) * (x.ndim - 1) + (v.size,))
