"""Regularisers active only in training: Dropout and StochasticDepth."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Layer, Shape, layer
from jaxconv.layers.shared import require_key
from jaxconv.traits import Traits

_MASKED = Traits(elementwise=True, in_place=True, saved=(0, 2))  # keeps the mask and the output


def _drop(kind: str, rate: float, axis_name: str | None, mask_shape: Callable[[Shape], Shape]) -> Layer:
    """Zero entries with probability ``rate`` in training, scaling the rest by 1/(1 - rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{kind}(rate={rate}): rate is the probability of dropping and must be in [0, 1)")

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train or rate == 0.0:
            return x, {}
        keep = _keep_mask(require_key(kind, key), 1.0 - rate, mask_shape(x.shape), axis_name)
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)), {}

    return layer(kind, init, apply, traits=_MASKED, rate=rate, axis_name=axis_name)


def _keep_mask(key: jax.Array, probability: float, shape: Shape, axis_name: str | None = None) -> jax.Array:
    """A boolean mask of ``shape`` (N, ...), each entry True with probability ``probability``.

    With ``axis_name``, inside a mapped axis of D members (`pmap`, `shard_map`,
    `vmap`) whose member ``i`` holds rows i * N to (i + 1) * N of a global batch:
    member ``i``'s rows of the mask drawn for that global batch, (D * N, ...). Given
    the same key everywhere, the members' masks put together are then exactly the
    mask one device would draw for the global batch (each member draws all D * N
    rows and keeps its own: D times the random numbers, for an exact result).
    """
    if axis_name is None:
        return jax.random.bernoulli(key, probability, shape)
    rows = shape[0]
    everything = jax.random.bernoulli(key, probability, (lax.axis_size(axis_name) * rows, *shape[1:]))
    return lax.dynamic_slice_in_dim(everything, lax.axis_index(axis_name) * rows, rows)


def Dropout(rate: float, axis_name: str | None = None) -> Layer:
    """Drop each activation with probability ``rate`` in training (inverted dropout).

    Evaluation is the identity. Shapes: any -> the same; with ``axis_name``,
    (N, ...) -> the same.

    ``axis_name``: inside a mapped axis of that name over which the batch is split
    (the ``pmap`` step of `jaxconv.distributed`), every member draws its rows of
    the global batch's mask (`_keep_mask` draws it), so given the same key the mapped net
    drops exactly what the unmapped net drops on the whole batch.
    """
    return _drop("Dropout", rate, axis_name, lambda shape: shape)


def StochasticDepth(rate: float, axis_name: str | None = None) -> Layer:
    """Drop a whole example's activations with probability ``rate`` (Huang et al. 2016).

    Put it at the end of a residual body, ``residual(serial(body, StochasticDepth(r)))``,
    so each example skips the branch with probability ``r`` in training.
    Shapes: (N, ...) -> the same. ``axis_name``: as for `Dropout`.
    """
    return _drop("StochasticDepth", rate, axis_name, lambda shape: (shape[0],) + (1,) * (len(shape) - 1))
