"""SqueezeNet 1.0 (Iandola et al. 2016) and 1.1 (its repository's cheaper revision), as in torchvision.

Fire modules squeeze with 1x1 convs then expand with 1x1 and 3x3 convs side by
side; max pools round up (Caffe's ``ceil_mode``); the classifier is a 1x1 conv
to the classes, ReLU and global average pooling (no FC layer).
"""

from __future__ import annotations

from jaxconv.combinators import serial
from jaxconv.core import Layer, named
from jaxconv.layers import Conv, Dropout, GlobalAvgPool, MaxPool, Relu
from jaxconv.models.blocks import conv_norm, module
from jaxconv.models.registry import register

# version -> (stem features, stem kernel, layers): (squeeze, expand) for a fire module, "pool" for 3x3/2
VERSIONS: dict[str, tuple[int, int, tuple]] = {
    "1_0": (
        96,
        7,
        (
            "pool",
            (16, 64),
            (16, 64),
            (32, 128),
            "pool",
            (32, 128),
            (48, 192),
            (48, 192),
            (64, 256),
            "pool",
            (64, 256),
        ),
    ),
    "1_1": (
        64,
        3,
        (
            "pool",
            (16, 64),
            (16, 64),
            "pool",
            (32, 128),
            (32, 128),
            "pool",
            (48, 192),
            (48, 192),
            (64, 256),
            (64, 256),
        ),
    ),
}


def _unit(features, kernel, stride=1, padding=0):
    return conv_norm(features, kernel, stride, padding, norm=None)


def fire(squeeze: int, expand: int) -> Layer:
    """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU, concatenated: 2 x ``expand`` channels."""
    expand_paths = module({"expand1x1": ((expand, 1),), "expand3x3": ((expand, 3, 1, 1),)}, _unit)
    return serial(named("squeeze", _unit(squeeze, 1)), named("expand", expand_paths))


def squeezenet(version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5) -> Layer:
    """SqueezeNet ``version`` ('1_0' or '1_1'), (N, 224, 224, 3) -> (N, num_classes)."""
    if version not in VERSIONS:
        raise ValueError(f"squeezenet(version={version!r}): choose one of {sorted(VERSIONS)}")
    stem_features, stem_kernel, rows = VERSIONS[version]
    layers, fires = [named("stem", _unit(stem_features, stem_kernel, 2))], 0
    for row in rows:
        if row == "pool":
            layers.append(MaxPool(3, 2, ceil_mode=True))
        else:
            fires += 1
            layers.append(named(f"fire{fires + 1}", fire(*row)))
    head = serial(Dropout(dropout), named("conv", Conv(num_classes, 1)), Relu, GlobalAvgPool)
    return serial(*layers, named("head", head))


register("squeezenet1_0", squeezenet, version="1_0")
register("squeezenet1_1", squeezenet, version="1_1")
