"""Elementwise non-linearities and the softmax family. Shapes: any -> the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from jaxconv.core import Layer, layer
from jaxconv.traits import ACTIVATION, Traits


def elementwise(
    kind: str, fn: Callable[[jax.Array], jax.Array], traits: Traits = ACTIVATION, **spec
) -> Layer:
    """A layer without parameters that applies ``fn`` to its input, keeping the shape; by default
    an activation computed in place (its derivative a function of its output)."""

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return fn(x), {}

    return layer(kind, init, apply, traits=traits, **spec)


_OUTPUT_DERIVATIVE = dataclasses.replace(ACTIVATION, output_derivative=True)
_KEEPS_OUTPUT = Traits(elementwise=True)  # not in place: the derivative needs more than the output

Relu = elementwise("Relu", jax.nn.relu)
Relu6 = elementwise("Relu6", jax.nn.relu6)  # min(max(x, 0), 6), MobileNet's activation
Sigmoid = elementwise("Sigmoid", jax.nn.sigmoid, _OUTPUT_DERIVATIVE)
Tanh = elementwise("Tanh", jnp.tanh, _OUTPUT_DERIVATIVE)
Gelu = elementwise("Gelu", partial(jax.nn.gelu, approximate=False), _KEEPS_OUTPUT)
Softmax = elementwise("Softmax", partial(jax.nn.softmax, axis=-1), _KEEPS_OUTPUT)
LogSoftmax = elementwise("LogSoftmax", partial(jax.nn.log_softmax, axis=-1), _KEEPS_OUTPUT)


def LeakyRelu(slope: float = 0.01) -> Layer:
    """``x`` where positive, ``slope * x`` elsewhere."""
    return elementwise("LeakyRelu", partial(jax.nn.leaky_relu, negative_slope=slope), slope=slope)


def Elu(alpha: float = 1.0) -> Layer:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    return elementwise("Elu", partial(jax.nn.elu, alpha=alpha), alpha=alpha)
