"""DenseNet (Huang, Liu, van der Maaten & Weinberger 2017): each layer sees every earlier map.

A dense block of L layers concatenates each layer's ``growth`` new channels to
its input. DenseNet-B layers are bottlenecks, norm-ReLU-conv1x1 (``4 * growth``)
then norm-ReLU-conv3x3 (``growth``); DenseNet-C transitions compress the
channels by ``compression`` (norm-ReLU-conv1x1, 2x2 average pool). The
ImageNet models (121, 161, 169, 201, 264) are DenseNet-BC and match
torchvision's ``densenetNNN``; the CIFAR models have three blocks and a 3x3 stem.

Params: ``stem``, ``block1..`` / ``layer1..`` / ``paths`` / ``new`` / ``conv1``, ``conv2``
(each ``norm`` + ``conv``), ``transition1..``, ``final_norm``, ``head``.
"""

from __future__ import annotations

import math

from jaxconv.combinators import concat_with_input, serial
from jaxconv.core import Layer, named
from jaxconv.layers import AvgPool, MaxPool, Relu
from jaxconv.models.blocks import (
    Norm,
    conv_norm,
    norm_act_conv,
    norm_conv,
    norm_layer,
    pooled_classifier,
)
from jaxconv.models.registry import register

# depth -> (growth rate, layers per block, stem features)
IMAGENET: dict[int, tuple[int, tuple[int, ...], int]] = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
    264: (32, (6, 12, 64, 48), 64),
}


def _dense_layer(growth: int, bottleneck: bool, norm: Norm, bottleneck_width: int) -> Layer:
    convs = [named("conv2", norm_act_conv(growth, 3, padding=1, norm=norm))]
    if bottleneck:
        convs.insert(0, named("conv1", norm_act_conv(bottleneck_width * growth, 1, norm=norm)))
    return concat_with_input(serial(*convs))


def _transition(features: int, norm: Norm) -> Layer:
    return serial(named("conv", norm_act_conv(features, 1, norm=norm)), AvgPool(2))


def densenet(
    block_sizes: tuple[int, ...],
    growth: int,
    num_classes: int = 1000,
    *,
    stem_features: int = 64,
    cifar: bool = False,
    bottleneck: bool = True,
    compression: float = 0.5,
    bottleneck_width: int = 4,
    norm: Norm = "batch",
) -> Layer:
    """A DenseNet with ``block_sizes[i]`` layers in block i+1, (N, H, W, 3) -> (N, num_classes)."""
    if not 0.0 < compression <= 1.0:
        raise ValueError(f"densenet(compression={compression}): compression must be in (0, 1]")
    if cifar:
        stem = serial(named("conv", norm_conv(stem_features, 3, padding=1, norm=norm)))
    else:
        stem = serial(conv_norm(stem_features, 7, 2, 3, norm=norm), MaxPool(3, 2, padding=1))
    layers, channels = [named("stem", stem)], stem_features
    for index, size in enumerate(block_sizes, 1):
        block = [
            named(f"layer{i}", _dense_layer(growth, bottleneck, norm, bottleneck_width))
            for i in range(1, size + 1)
        ]
        layers.append(named(f"block{index}", serial(*block)))
        channels += size * growth
        if index < len(block_sizes):
            channels = math.floor(channels * compression)
            layers.append(named(f"transition{index}", _transition(channels, norm)))
    return serial(
        *layers, named("final_norm", norm_layer(norm)), Relu, named("head", pooled_classifier(num_classes))
    )


def imagenet_options(depth: int) -> dict:
    """``densenet`` options of the ImageNet DenseNet-BC-``depth`` (121, 161, 169, 201, 264)."""
    if depth not in IMAGENET:
        raise ValueError(f"no ImageNet DenseNet of depth {depth}; choose one of {sorted(IMAGENET)}")
    growth, block_sizes, stem_features = IMAGENET[depth]
    return {"block_sizes": block_sizes, "growth": growth, "stem_features": stem_features}


def cifar_options(depth: int, growth: int, bottleneck: bool = True) -> dict:
    """``densenet`` options of a CIFAR DenseNet(-BC) of ``depth`` layers: three blocks.

    DenseNet-BC has (depth - 4) / 6 bottleneck layers per block, a stem of
    2 x growth features and compression 0.5; plain DenseNet (depth - 4) / 3
    layers, 16 stem features and no compression.
    """
    per_layer = 6 if bottleneck else 3
    if (depth - 4) % per_layer:
        raise ValueError(
            f"a CIFAR DenseNet{'-BC' if bottleneck else ''} has depth {per_layer}n + 4, got {depth}; "
            f"try {depth - (depth - 4) % per_layer}"
        )
    return {
        "block_sizes": ((depth - 4) // per_layer,) * 3,
        "growth": growth,
        "cifar": True,
        "bottleneck": bottleneck,
        "stem_features": 2 * growth if bottleneck else 16,
        "compression": 0.5 if bottleneck else 1.0,
    }


for _depth in IMAGENET:
    register(f"densenet{_depth}", densenet, **imagenet_options(_depth))
for _depth, _growth in ((100, 12), (250, 24), (190, 40)):
    register(f"densenet_bc{_depth}_{_growth}", densenet, (32, 32, 3), 10, **cifar_options(_depth, _growth))
for _depth, _growth in ((40, 12), (100, 12), (100, 24)):
    register(
        f"densenet{_depth}_{_growth}", densenet, (32, 32, 3), 10, **cifar_options(_depth, _growth, False)
    )
