"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks, as in torchvision.

Each block expands its input ``t`` times with a 1x1 conv, filters it with a
depthwise 3x3 conv, and projects back with a linear 1x1 conv (no ReLU); blocks
that keep the shape add their input. Activations are ReLU6.
"""

from __future__ import annotations

from jaxconv.combinators import residual, serial
from jaxconv.core import Layer, named
from jaxconv.layers import Relu6
from jaxconv.models.blocks import Norm, conv_norm, pooled_classifier
from jaxconv.models.registry import register

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2
MOBILENET_V2: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% down (the reference code's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def inverted_residual(in_channels: int, out_channels: int, stride: int, expansion: int, norm: Norm) -> Layer:
    """expand 1x1 -> depthwise 3x3 (stride) -> linear project 1x1, plus the input when shapes agree."""
    hidden = in_channels * expansion
    layers = [named("expand", conv_norm(hidden, 1, norm=norm, activation=Relu6))] if expansion != 1 else []
    layers += [
        named("depthwise", conv_norm(hidden, 3, stride, 1, groups=hidden, norm=norm, activation=Relu6)),
        named("project", conv_norm(out_channels, 1, norm=norm, activation=None)),
    ]
    body = serial(*layers)
    return residual(body) if stride == 1 and in_channels == out_channels else body


def mobilenet_v2(
    num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2, norm: Norm = "batch"
) -> Layer:
    """MobileNetV2 with widths scaled by ``width``, (N, 224, 224, 3) -> (N, num_classes)."""
    channels = make_divisible(32 * width)
    layers = [named("stem", conv_norm(channels, 3, 2, 1, norm=norm, activation=Relu6))]
    index = 0
    for expansion, features, repeats, stride in MOBILENET_V2:
        out = make_divisible(features * width)
        for repeat in range(repeats):
            index += 1
            block = inverted_residual(channels, out, stride if repeat == 0 else 1, expansion, norm)
            layers.append(named(f"block{index}", block))
            channels = out
    last = make_divisible(1280 * max(1.0, width))
    layers.append(named("last", conv_norm(last, 1, norm=norm, activation=Relu6)))
    return serial(*layers, named("head", pooled_classifier(num_classes, dropout=dropout)))


register("mobilenet_v2", mobilenet_v2)
