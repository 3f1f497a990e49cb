"""Every layer type of the notes, as `(init, apply)` pairs."""

from jaxconv.layers.activation import (
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Softmax,
    Tanh,
    elementwise,
)
from jaxconv.layers.conv import Conv, ConvTranspose, LocallyConnected
from jaxconv.layers.dense import Dense, Flatten
from jaxconv.layers.norm import BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm
from jaxconv.layers.pool import AvgPool, GlobalAvgPool, GlobalMaxPool, LpPool, MaxPool
from jaxconv.layers.regularize import Dropout, StochasticDepth

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
    "LayerNorm",
    "LeakyRelu",
    "LocalResponseNorm",
    "LocallyConnected",
    "LogSoftmax",
    "LpPool",
    "MaxPool",
    "Relu",
    "Sigmoid",
    "Softmax",
    "StochasticDepth",
    "Tanh",
    "elementwise",
]
