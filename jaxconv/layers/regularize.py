"""Regularisers active only in training: Dropout and StochasticDepth."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxconv.core import Layer, layer
from jaxconv.layers._util import require_key


def _drop(kind: str, rate: float, mask_shape) -> Layer:
    """Zero entries with probability ``rate`` in training, scaling the rest by 1/(1 - rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{kind}(rate={rate}): rate is the probability of dropping and must be in [0, 1)")

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train or rate == 0.0:
            return x, {}
        keep = jax.random.bernoulli(require_key(kind, key), 1.0 - rate, mask_shape(x.shape))
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)), {}

    return layer(kind, init, apply, rate=rate)


def Dropout(rate: float) -> Layer:
    """Drop each activation with probability ``rate`` in training (inverted dropout).

    Evaluation is the identity. Shapes: any -> the same.
    """
    return _drop("Dropout", rate, lambda shape: shape)


def StochasticDepth(rate: float) -> Layer:
    """Drop a whole example's activations with probability ``rate`` (Huang et al. 2016).

    Put it at the end of a residual body, ``residual(serial(body, StochasticDepth(r)))``,
    so each example skips the branch with probability ``r`` in training.
    Shapes: (N, ...) -> the same.
    """
    return _drop("StochasticDepth", rate, lambda shape: (shape[0],) + (1,) * (len(shape) - 1))
