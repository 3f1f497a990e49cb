"""Elementwise non-linearities and the softmax family. Shapes: any -> the same."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from jaxconv.core import Layer, layer


def elementwise(kind: str, fn: Callable[[jax.Array], jax.Array], **spec) -> Layer:
    """A layer without parameters that applies ``fn`` to its input, keeping the shape."""

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return fn(x), {}

    return layer(kind, init, apply, **spec)


Relu = elementwise("Relu", jax.nn.relu)
Relu6 = elementwise("Relu6", jax.nn.relu6)  # min(max(x, 0), 6), MobileNet's activation
Sigmoid = elementwise("Sigmoid", jax.nn.sigmoid)
Tanh = elementwise("Tanh", jnp.tanh)
Gelu = elementwise("Gelu", partial(jax.nn.gelu, approximate=False))
Softmax = elementwise("Softmax", partial(jax.nn.softmax, axis=-1))
LogSoftmax = elementwise("LogSoftmax", partial(jax.nn.log_softmax, axis=-1))


def LeakyRelu(slope: float = 0.01) -> Layer:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return elementwise("LeakyRelu", partial(jax.nn.leaky_relu, negative_slope=slope), slope=slope)


def Elu(alpha: float = 1.0) -> Layer:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    return elementwise("Elu", partial(jax.nn.elu, alpha=alpha), alpha=alpha)
