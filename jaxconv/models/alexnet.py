"""AlexNet (Krizhevsky, Sutskever & Hinton 2012), torchvision's variant, and ZFNet (Zeiler & Fergus 2014).

AlexNet as published: a 227x227x3 input (the paper's "224" does not tile:
(224 - 11)/4 + 1 is not an integer), local response normalisation after conv1
and conv2, overlapping 3x3 stride-2 max pooling, dropout in FC6 and FC7. The
network was split over two GPUs: conv2, conv4 and conv5 see only the maps on
their own GPU while conv3 and the FC layers see both. With ``groups=2``
(default) grouped convolutions reproduce that connectivity exactly, giving
60,965,224 parameters (the paper's "60 million"); ``groups=1`` merges the two
halves into one GPU's worth (62,378,344).

torchvision's ``alexnet`` follows the later "one weird trick" paper
(Krizhevsky 2014): 64/192/384/256/256 filters, no LRN, no groups, an adaptive
average pool to 6x6 so any input of at least 63x63 works; 61,100,840 parameters.

ZFNet follows the paper's Figure 3: a 7x7 stride-2 first layer on a 224x224
crop, 5x5 stride-2 second layer, contrast normalisation after the first two
pools, 384/384/256 filters in layers 3-5 and no GPU split (62,357,608 parameters).
"""

from __future__ import annotations

from jaxconv.combinators import serial
from jaxconv.core import Layer, named
from jaxconv.layers import Conv, LocalResponseNorm, MaxPool, Relu
from jaxconv.models.blocks import fc_classifier
from jaxconv.models.registry import register

# (features, kernel, stride, padding, groups, then: 'lrn', 'pool' in the order applied)
ConvRow = tuple[int, int, int, int, int, tuple[str, ...]]

ALEXNET: tuple[ConvRow, ...] = (
    (96, 11, 4, 0, 1, ("lrn", "pool")),
    (256, 5, 1, 2, 2, ("lrn", "pool")),
    (384, 3, 1, 1, 1, ()),
    (384, 3, 1, 1, 2, ()),
    (256, 3, 1, 1, 2, ("pool",)),
)
ALEXNET_TV: tuple[ConvRow, ...] = (
    (64, 11, 4, 2, 1, ("pool",)),
    (192, 5, 1, 2, 1, ("pool",)),
    (384, 3, 1, 1, 1, ()),
    (256, 3, 1, 1, 1, ()),
    (256, 3, 1, 1, 1, ("pool",)),
)
ZFNET: tuple[ConvRow, ...] = (
    (96, 7, 2, 1, 1, ("pool_padded", "lrn")),
    (256, 5, 2, 0, 1, ("pool_padded", "lrn")),
    (384, 3, 1, 1, 1, ()),
    (384, 3, 1, 1, 1, ()),
    (256, 3, 1, 1, 1, ("pool",)),
)

_AFTER = {
    "lrn": lambda: LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
    "pool": lambda: MaxPool(3, 2),
    "pool_padded": lambda: MaxPool(3, 2, padding=1),  # ZFNet's 110 -> 55 and 26 -> 13
}


def _features(rows: tuple[ConvRow, ...], groups: int = 1) -> Layer:
    """conv1..conv5, each followed by ReLU and its LRN / pooling."""
    layers = []
    for index, (features, kernel, stride, padding, row_groups, after) in enumerate(rows, 1):
        conv = Conv(features, kernel, stride, padding, groups=groups if row_groups > 1 else 1)
        layers += [named(f"conv{index}", conv), Relu, *(_AFTER[name]() for name in after)]
    return serial(*layers)


def _convnet(rows, num_classes: int, dropout: float, groups: int = 1, pool_to: int | None = None) -> Layer:
    return serial(
        named("features", _features(rows, groups)),
        named("classifier", fc_classifier(num_classes, dropout=dropout, pool_to=pool_to)),
    )


def alexnet(num_classes: int = 1000, groups: int = 2, dropout: float = 0.5) -> Layer:
    """AlexNet as published, (N, 227, 227, 3) -> (N, num_classes); ``groups=2`` is the two-GPU split."""
    if groups not in (1, 2):
        raise ValueError(f"alexnet(groups={groups}): use 2 (the paper's two GPUs) or 1 (merged)")
    return _convnet(ALEXNET, num_classes, dropout, groups)


def alexnet_tv(num_classes: int = 1000, dropout: float = 0.5) -> Layer:
    """torchvision's AlexNet, (N, H, W, 3) -> (N, num_classes) for H, W >= 63 (native 224)."""
    return _convnet(ALEXNET_TV, num_classes, dropout, pool_to=6)


def zfnet(num_classes: int = 1000, dropout: float = 0.5) -> Layer:
    """ZFNet (Zeiler & Fergus 2014, Fig. 3), (N, 224, 224, 3) -> (N, num_classes)."""
    return _convnet(ZFNET, num_classes, dropout)


register("alexnet", alexnet, input_size=(227, 227, 3))
register("alexnet_tv", alexnet_tv)
register("zfnet", zfnet)
