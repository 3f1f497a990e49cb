"""Fully-connected layers: `Dense` (the notes' FC layer) and `Flatten`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from einops import rearrange

from jaxconv.core import UNKNOWN, Layer, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.initializers import Initializer, initializer
from jaxconv.layers.shared import floating, init_key, positive, trailing
from jaxconv.traits import VIEW, Traits

zeros = jax.nn.initializers.zeros


def Dense(
    features: int,
    use_bias: bool = True,
    kernel_init: str | Initializer = "he_normal",
    bias_init: Initializer = zeros,
) -> Layer:
    """A fully-connected layer: every output sees every input, ``y = x @ kernel + bias``.

    Shapes: (N, D) -> (N, features); params ``kernel`` (D, features), ``bias``
    (features,). A volume must be flattened first (or use a 1x1 `Conv`).
    """
    positive("Dense", features=features)

    def check(shape):
        if len(shape) != 2:
            raise ShapeError(
                f"Dense({features}) expects (N, D) inputs, got {tuple(shape)}; put Flatten before "
                f"it for a volume, or use Conv({features}, 1) to act on every position"
            )

    def init(key, input_shape):
        check(input_shape)
        if input_shape[1] == UNKNOWN:
            raise ShapeError(f"Dense({features}) needs a fixed input size D, got {input_shape}")
        kernel_key, bias_key = jax.random.split(init_key("Dense", key))
        params = {"kernel": initializer(kernel_init)(kernel_key, (input_shape[1], features))}
        if use_bias:
            params["bias"] = bias_init(bias_key, (features,), jnp.float32)
        return (input_shape[0], features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        check(x.shape)
        x = floating(x, params["kernel"].dtype)
        y = x @ params["kernel"].astype(x.dtype)
        if use_bias:
            y = y + trailing(params["bias"].astype(y.dtype), y.ndim)
        return y, {}

    return layer(
        "Dense", init, apply, traits=Traits(macs="kernel", tap=True), features=features, use_bias=use_bias
    )


def _flatten() -> Layer:
    def init(key, input_shape):
        if UNKNOWN in input_shape[1:]:
            raise ShapeError(f"Flatten needs fixed sizes after the batch axis, got {input_shape}")
        return (input_shape[0], math.prod(input_shape[1:])), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return rearrange(x, "n ... -> n (...)"), {}

    return layer("Flatten", init, apply, traits=dataclasses.replace(VIEW, field="whole"))


Flatten = _flatten()
"""Flatten every axis after the batch: (N, *dims) -> (N, prod(dims))."""
