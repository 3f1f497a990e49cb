"""The small models: the default ConvNet of ``jaxconv train``, the speedrun's ConvNet and the
DP-SGD models.

The default model is a small BatchNorm ConvNet sized for Fashion-MNIST on a
CPU: the notes' pattern ``INPUT -> [CONV -> BN -> RELU -> POOL]*2 -> FC -> RELU
-> FC`` with 3x3 filters, 32 and 64 of them, and a 128-unit hidden layer.
All are registered for (N, 28, 28, 1) inputs and 10 classes.
"""

from __future__ import annotations

from jaxconv.combinators import serial
from jaxconv.core import Layer
from jaxconv.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalMaxPool,
    GroupNorm,
    MaxPool,
    Relu,
    Scattering,
    Tanh,
)
from jaxconv.models.blocks import Norm, conv_norm
from jaxconv.models.registry import DEFAULT_MODEL, register


def convnet(num_classes: int = 10, width: int = 32, hidden: int = 128, dropout: float = 0.3) -> Layer:
    """The default model: two CONV-BN-RELU-POOL stages, then a hidden FC layer.

    Shapes: (N, H, W, C) -> (N, num_classes), for any H, W divisible by 4
    (Fashion-MNIST: (N, 28, 28, 1), 421,738 parameters with the defaults).
    """

    def stage(features: int) -> list[Layer]:
        return [Conv(features, 3, padding=1, use_bias=False), BatchNorm(), Relu, MaxPool(2)]

    return serial(
        *stage(width),  # (N, H/2, W/2, width)
        *stage(2 * width),  # (N, H/4, W/4, 2 * width)
        Flatten,
        Dense(hidden),
        Relu,
        Dropout(dropout),
        Dense(num_classes),
    )


def fast_cnn(num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), stem: int = 0) -> Layer:
    """The speedrun's ConvNet (`experiments/speedrun.py`): the block of Jordan's airbench (2024),
    whose nets are the fastest to 94% on CIFAR-10. Each block is
    ``CONV -> POOL -> BN -> RELU -> CONV -> BN -> RELU`` (3x3 filters, 2x2 max pooling after the
    first), so the second convolution of a block already sees the halved map; a global max pool
    and one FC layer classify. ``stem`` filters (default none) see the full-resolution image first,
    at 1.31x the cost of an epoch: in the speedrun's budget more epochs do better.

    Shapes: (N, 28, 28, 1) [-> (N, 28, 28, stem)] -> (N, 14, 14, 32) -> (N, 7, 7, 64)
    -> (N, 3, 3, 128) -> (N, 128) -> (N, num_classes); 288,170 parameters with the defaults.
    """
    stem_layers = [Conv(stem, 3, padding=1, use_bias=False), BatchNorm(), Relu] if stem else []

    def block(features: int) -> list[Layer]:
        return [
            Conv(features, 3, padding=1, use_bias=False), MaxPool(2), BatchNorm(), Relu,
            Conv(features, 3, padding=1, use_bias=False), BatchNorm(), Relu,
        ]  # fmt: skip

    return serial(
        *stem_layers,
        *(layer for width in widths for layer in block(width)),
        GlobalMaxPool,
        Dense(num_classes),
    )


def dp_cnn(num_classes: int = 10) -> Layer:
    """The small tanh CNN of DP-SGD studies on MNIST and Fashion-MNIST (Papernot et al. 2021,
    "Tempered Sigmoid Activations"; Tramer & Boneh 2021): no BatchNorm, so every example has a
    gradient of its own. Bounded activations keep the clipped gradients informative.

    Shapes: (N, 28, 28, 1) -> (N, num_classes); 26,010 parameters for 10 classes.
    """
    return serial(
        Conv(16, 8, stride=2, padding=3),  # (N, 14, 14, 16)
        Tanh,
        MaxPool(2, stride=1),  # (N, 13, 13, 16)
        Conv(32, 4, stride=2),  # (N, 5, 5, 32)
        Tanh,
        MaxPool(2, stride=1),  # (N, 4, 4, 32)
        Flatten,
        Dense(32),
        Tanh,
        Dense(num_classes),
    )


def scatternet_linear(num_classes: int = 10, groups: int = 27) -> Layer:
    """Tramer & Boneh's (2021) "ScatterNet + linear": a linear classifier on the fixed scattering
    features (2 scales, 8 angles: 81 per channel) normalised per example by GroupNorm. Under
    DP-SGD only the normalisation's and the classifier's 39,862 weights learn, so the noise is
    spread over few of them.

    Shapes: (N, 28, 28, 1) -> (N, 7, 7, 81) -> (N, num_classes); H and W multiples of 4.
    """
    return serial(Scattering(scales=2, angles=8), GroupNorm(groups), Flatten, Dense(num_classes))


def scatternet_cnn(num_classes: int = 10, groups: int = 27, norm: Norm = None) -> Layer:
    """Tramer & Boneh's (2021) "ScatterNet + CNN" for Fashion-MNIST: the scattering features
    normalised by GroupNorm, then two 3x3 tanh convolutions (16 and 32 filters, the first with
    stride 2) and a 32-unit tanh layer. ``norm`` puts a normalisation after each convolution
    (``'group'``, or ``'ws_group'`` with weight-standardised filters, as De et al. 2022).

    Shapes: (N, 28, 28, 1) -> (N, 7, 7, 81) -> (N, 4, 4, 16) -> (N, 4, 4, 32) -> (N, num_classes);
    33,228 parameters with the defaults.
    """
    return serial(
        Scattering(scales=2, angles=8),
        GroupNorm(groups),
        conv_norm(16, 3, 2, 1, norm=norm, activation=Tanh),
        conv_norm(32, 3, 1, 1, norm=norm, activation=Tanh),
        Flatten,
        Dense(32),
        Tanh,
        Dense(num_classes),
    )


register(DEFAULT_MODEL, convnet, input_size=(28, 28, 1), num_classes=10)
register("fast_cnn", fast_cnn, input_size=(28, 28, 1), num_classes=10)
register("dp_cnn", dp_cnn, input_size=(28, 28, 1), num_classes=10)
register("scatternet_linear", scatternet_linear, input_size=(28, 28, 1), num_classes=10)
register("scatternet_cnn", scatternet_cnn, input_size=(28, 28, 1), num_classes=10)
