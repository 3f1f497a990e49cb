"""Every layer type of the notes, as `(init, apply)` pairs."""

from jaxconv.layers.activation import (
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Relu6,
    Sigmoid,
    Softmax,
    Tanh,
    elementwise,
)
from jaxconv.layers.conv import Conv
from jaxconv.layers.dense import Dense, Flatten
from jaxconv.layers.local import LocallyConnected
from jaxconv.layers.norm import BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm
from jaxconv.layers.pool import AdaptiveAvgPool, AvgPool, GlobalAvgPool, GlobalMaxPool, LpPool, MaxPool
from jaxconv.layers.regularize import Dropout, StochasticDepth
from jaxconv.layers.scattering import Scattering
from jaxconv.layers.transpose import ConvTranspose

__all__ = [
    "AdaptiveAvgPool",
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
    "LayerNorm",
    "LeakyRelu",
    "LocalResponseNorm",
    "LocallyConnected",
    "LogSoftmax",
    "LpPool",
    "MaxPool",
    "Relu",
    "Relu6",
    "Scattering",
    "Sigmoid",
    "Softmax",
    "StochasticDepth",
    "Tanh",
    "elementwise",
]
