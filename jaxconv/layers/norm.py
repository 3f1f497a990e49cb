"""Normalisation layers: BatchNorm, AlexNet's local response normalisation, Layer and Group norm.

All normalise (N, *spatial, C) activations with channels last and compute
their statistics in float32 at least (float64 inputs stay float64); the output
has the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import UNKNOWN, Layer, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.shared import floating, positive, trailing
from jaxconv.traits import Traits

# BatchNorm and GroupNorm apply one multiply-add per element, so their gradients read only the
# input; LayerNorm and LRN keep two volumes for their backward pass
_MULTIPLY_ADD = Traits(elementwise=True, saved=(0, 0))
_MIXES_EXAMPLES = Traits(elementwise=True, saved=(0, 0), mixes_examples=True)  # batch statistics
_KEEPS_TWO = Traits(elementwise=True, saved=(0, 2))


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, axis_name: str | None = None) -> Layer:
    """Batch normalisation (Ioffe & Szegedy 2015) over every axis but the channels.

    In training mode each channel is normalised with the statistics of the
    batch, and the running statistics in ``state`` move towards them:

        running = momentum * running + (1 - momentum) * batch

    (PyTorch's ``momentum`` is ``1 - momentum`` here). As in PyTorch the running
    variance uses the unbiased batch variance. In evaluation mode the running
    statistics are used. With ``axis_name`` the batch statistics are averaged
    over that mapped axis (`pmap`, `shard_map`, `vmap`), i.e. synchronised
    BatchNorm across devices.

    Shapes: (N, *spatial, C) -> same; params ``scale``, ``bias`` (C,); state
    ``mean``, ``var`` (C,).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"BatchNorm(momentum={momentum}): momentum must be in [0, 1)")
    positive("BatchNorm", eps=eps)

    def init(key, input_shape):
        _check_rank("BatchNorm", input_shape, 2)
        channels = input_shape[-1]
        params = {"scale": jnp.ones(channels), "bias": jnp.zeros(channels)}
        return input_shape, params, {"mean": jnp.zeros(channels), "var": jnp.ones(channels)}

    def apply(params, state, x, *, key=None, train=False):
        _check_rank("BatchNorm", x.shape, 2)
        x_wide = _upcast(x)
        if not train:
            mean, var, new_state = state["mean"], state["var"], state
        else:
            if x.shape[0] == 1 and axis_name is None:
                raise ShapeError(
                    f"BatchNorm in training mode got a batch of one (input {x.shape}): the batch "
                    "statistics mix examples, so per-example gradients (vmap over single "
                    "examples) are not defined; use GroupNorm (zoo models: norm='group') "
                    "or apply with train=False"
                )
            mean, var, count = _batch_moments(x_wide, axis_name)
            unbiased = var * (count / jnp.maximum(count - 1, 1))
            new_state = {
                "mean": momentum * state["mean"] + (1 - momentum) * mean,
                "var": momentum * state["var"] + (1 - momentum) * unbiased,
            }
        # one multiply-add per element with per-channel factors: the backward pass then keeps
        # only x, not (x - mean) as well (half the activation memory of a ResNet step)
        multiplier = lax.rsqrt(var + eps) * params["scale"]  # (C,)
        shift = params["bias"] - mean * multiplier  # (C,)
        return (x_wide * trailing(multiplier, x.ndim) + trailing(shift, x.ndim)).astype(x.dtype), new_state

    return layer(
        "BatchNorm", init, apply, traits=_MIXES_EXAMPLES, momentum=momentum, eps=eps, axis_name=axis_name
    )


def _batch_moments(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array, int]:
    """Per-channel mean, biased variance and count, over the batch (and devices)."""
    count = x.size // x.shape[-1]
    if axis_name is not None:
        count *= lax.psum(1, axis_name)
    mean, var = _moments(x, tuple(range(x.ndim - 1)), axis_name)
    return mean.reshape(-1), var.reshape(-1), count


def _moments(
    x: jax.Array, axes: tuple[int, ...], axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of ``x`` over ``axes`` (kept, of size 1), in one pass over ``x``:
    the means of ``x - K`` and of its square, ``K`` the first value along ``axes`` of each
    statistic (the same on every device of ``axis_name``). The shift keeps
    E[(x - K)^2] - E[x - K]^2 from cancelling where the mean is large against the spread, as
    E[x^2] - E[x]^2 does; neither moment depends on K, so no gradient flows through it. One
    pass instead of two (the mean, then the squares about it): on XLA:CPU ResNet-20's train
    step ran 1.00-1.04x as fast, its per-example gradients with GroupNorm 1.04-1.16x
    (``benchmarks/norm_moments.py``)."""
    first = tuple(slice(0, 1) if axis in axes else slice(None) for axis in range(x.ndim))
    shift = lax.stop_gradient(x[first])
    if axis_name is not None:
        shift = lax.pmean(shift, axis_name)
    centred = x - shift
    mean, square = jnp.mean(centred, axes, keepdims=True), jnp.mean(jnp.square(centred), axes, keepdims=True)
    if axis_name is not None:
        mean, square = lax.pmean((mean, square), axis_name)
    return shift + mean, jnp.maximum(square - jnp.square(mean), 0.0)


def LocalResponseNorm(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> Layer:
    """Local response normalisation across channels (Krizhevsky et al. 2012).

        b_c = a_c / (k + alpha * sum_{c' near c} a_{c'}^2) ** beta

    summing over ``size`` neighbouring channels (AlexNet: size 5, alpha 1e-4,
    beta 0.75, k 2). As in the paper, alpha is *not* divided by size
    (PyTorch's ``LocalResponseNorm`` takes ``alpha * size`` for the same layer).

    Shapes: (N, *spatial, C) -> same.
    """
    positive("LocalResponseNorm", size=size, k=k)

    def init(key, input_shape):
        _check_rank("LocalResponseNorm", input_shape, 2)
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        x = floating(x)
        squares = jnp.square(_upcast(x))
        window = (1,) * (x.ndim - 1) + (size,)
        pads = ((0, 0),) * (x.ndim - 1) + ((size // 2, (size - 1) // 2),)
        sums = lax.reduce_window(squares, 0.0, lax.add, window, (1,) * x.ndim, pads)
        return (x / (k + alpha * sums) ** beta).astype(x.dtype), {}

    return layer("LocalResponseNorm", init, apply, traits=_KEEPS_TWO, size=size, alpha=alpha, beta=beta, k=k)


def LayerNorm(eps: float = 1e-5, axis: int | Sequence[int] = -1) -> Layer:
    """Layer normalisation (Ba et al. 2016) of each example over ``axis``.

    The default normalises each position over its channels; ``axis=(1, 2, 3)``
    normalises a whole (H, W, C) volume. ``scale`` and ``bias`` have the shape
    of the normalised axes.

    Shapes: (N, ...) -> same.
    """
    positive("LayerNorm", eps=eps)

    def axes_of(shape):
        requested = (axis,) if isinstance(axis, int) else tuple(axis)
        if any(not -len(shape) <= a < len(shape) for a in requested):
            raise ShapeError(
                f"LayerNorm(axis={axis}) on a rank-{len(shape)} input {tuple(shape)}: axes must lie "
                f"in [-{len(shape)}, {len(shape) - 1}]"
            )
        axes = tuple(sorted({a % len(shape) for a in requested}))
        if 0 in axes:
            raise ValueError(
                f"LayerNorm(axis={axis}) would normalise across the batch axis; use axes 1 to "
                f"{len(shape) - 1}, or BatchNorm for batch statistics"
            )
        return axes

    def init(key, input_shape):
        shape = tuple(input_shape[a] for a in axes_of(input_shape))
        if UNKNOWN in shape:
            raise ShapeError(
                f"LayerNorm(axis={axis}) needs fixed sizes along the normalised axes, got {input_shape}"
            )
        return input_shape, {"scale": jnp.ones(shape), "bias": jnp.zeros(shape)}, {}

    def apply(params, state, x, *, key=None, train=False):
        axes = axes_of(x.shape)
        x_wide = _upcast(x)
        mean, var = _moments(x_wide, axes)
        broadcast = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        scale, bias = params["scale"].reshape(broadcast), params["bias"].reshape(broadcast)
        return ((x_wide - mean) * lax.rsqrt(var + eps) * scale + bias).astype(x.dtype), {}

    return layer("LayerNorm", init, apply, traits=_KEEPS_TWO, eps=eps, axis=axis)


def GroupNorm(groups: int = 32, eps: float = 1e-5) -> Layer:
    """Group normalisation (Wu & He 2018): per example, over positions and channel groups.

    Needs no batch statistics, so it works with per-example gradients where
    BatchNorm does not. ``groups=1`` normalises the whole volume (LayerNorm over
    H, W, C); ``groups=C`` is instance normalisation.

    Shapes: (N, *spatial, C) -> same; params ``scale``, ``bias`` (C,).
    """
    positive("GroupNorm", groups=groups, eps=eps)

    def init(key, input_shape):
        _check_rank("GroupNorm", input_shape, 3)
        channels = input_shape[-1]
        if channels % groups:
            raise ShapeError(
                f"GroupNorm(groups={groups}) on {channels} channels: channels must be divisible "
                f"by groups; try groups={math.gcd(channels, groups)}"
            )
        return input_shape, {"scale": jnp.ones(channels), "bias": jnp.zeros(channels)}, {}

    def apply(params, state, x, *, key=None, train=False):
        x_wide = _upcast(x)
        per_group = x.shape[-1] // groups
        grouped = x_wide.reshape(*x.shape[:-1], groups, per_group)
        axes = (*range(1, x.ndim - 1), x.ndim)  # positions and the channels of a group
        mean, var = (moment.reshape(x.shape[0], groups) for moment in _moments(grouped, axes))  # (N, G)
        # as in BatchNorm, one multiply-add per element with per-(example, channel) factors:
        # XLA:CPU runs the step about 2x faster, and the backward pass keeps only x
        multiplier = jnp.repeat(lax.rsqrt(var + eps), per_group, axis=-1) * params["scale"][None]  # (N, C)
        shift = params["bias"][None] - jnp.repeat(mean, per_group, axis=-1) * multiplier  # (N, C)
        positions = (slice(None), *[None] * (x.ndim - 2), slice(None))
        return (x_wide * multiplier[positions] + shift[positions]).astype(x.dtype), {}

    return layer("GroupNorm", init, apply, traits=_MULTIPLY_ADD, groups=groups, eps=eps)


def _upcast(x: jax.Array) -> jax.Array:
    """``x`` in the dtype the statistics are computed in: float32, or float64 for float64 inputs."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_rank(kind: str, shape, minimum: int) -> None:
    if len(shape) < minimum:
        raise ShapeError(f"{kind} expects (N, ..., C) with at least {minimum} axes, got {shape}")
