"""jaxconv: a functional ConvNet framework for JAX.

Layers are pure ``(init, apply)`` pairs composed with combinators; see
`jaxconv.core` for the protocol.
"""

from jaxconv import data, models, sizing
from jaxconv.combinators import (
    Identity,
    Lambda,
    fan_in_concat,
    fan_in_sum,
    fan_out,
    parallel,
    residual,
    serial,
    shape_dependent,
)
from jaxconv.core import Layer, LayerInfo, info, named
from jaxconv.errors import MissingKeyError, ShapeError, SizeError
from jaxconv.layers import (
    AvgPool,
    BatchNorm,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    Elu,
    Flatten,
    Gelu,
    GlobalAvgPool,
    GlobalMaxPool,
    GroupNorm,
    LayerNorm,
    LeakyRelu,
    LocallyConnected,
    LocalResponseNorm,
    LogSoftmax,
    LpPool,
    MaxPool,
    Relu,
    Sigmoid,
    Softmax,
    StochasticDepth,
    Tanh,
)

__version__ = "0.1.0"

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "Elu",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "Identity",
    "Lambda",
    "Layer",
    "LayerInfo",
    "LayerNorm",
    "LeakyRelu",
    "LocalResponseNorm",
    "LocallyConnected",
    "LogSoftmax",
    "LpPool",
    "MaxPool",
    "MissingKeyError",
    "Relu",
    "ShapeError",
    "Sigmoid",
    "SizeError",
    "Softmax",
    "StochasticDepth",
    "Tanh",
    "data",
    "fan_in_concat",
    "fan_in_sum",
    "fan_out",
    "info",
    "models",
    "named",
    "parallel",
    "residual",
    "serial",
    "shape_dependent",
    "sizing",
]
