"""jaxconv: a functional ConvNet framework for JAX.

Layers are pure ``(init, apply)`` pairs composed with combinators; see
`jaxconv.core` for the protocol.
"""

import importlib

from jaxconv import data, im2col, models, per_example, receptive, sizing, surgery
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
    wired,
)
from jaxconv.core import Layer, LayerInfo, info, named
from jaxconv.errors import MissingKeyError, PatternError, ShapeError, SizeError, StateDictError
from jaxconv.layers import (
    AdaptiveAvgPool,
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
    Relu6,
    Sigmoid,
    Softmax,
    StochasticDepth,
    Tanh,
)
from jaxconv.pattern import pattern
from jaxconv.per_example import per_example_grad_norms, per_example_grads
from jaxconv.precision import mixed_precision
from jaxconv.receptive import Field, receptive_field
from jaxconv.remat import remat, remat_blocks
from jaxconv.summary import Summary, summary

__version__ = "0.1.0"

# heavier imports (dp_accounting, matplotlib, multi-device code), loaded on first use
_LAZY_MODULES = ("distributed", "interop", "privacy", "runs", "train")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"jaxconv.{name}")
    raise AttributeError(f"module 'jaxconv' has no attribute {name!r}")


__all__ = [
    "AdaptiveAvgPool",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "Elu",
    "Field",
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
    "PatternError",
    "Relu",
    "Relu6",
    "ShapeError",
    "Sigmoid",
    "SizeError",
    "Softmax",
    "StateDictError",
    "StochasticDepth",
    "Summary",
    "Tanh",
    "data",
    "distributed",
    "fan_in_concat",
    "fan_in_sum",
    "fan_out",
    "im2col",
    "info",
    "mixed_precision",
    "models",
    "named",
    "parallel",
    "pattern",
    "per_example",
    "per_example_grad_norms",
    "per_example_grads",
    "privacy",
    "receptive",
    "receptive_field",
    "remat",
    "remat_blocks",
    "residual",
    "serial",
    "shape_dependent",
    "sizing",
    "summary",
    "surgery",
    "train",
    "wired",
]
