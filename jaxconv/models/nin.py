"""Network in Network (Lin, Chen & Yan 2014) and the All-Convolutional Net (Springenberg et al. 2015).

NiN replaces each conv by an "mlpconv": a conv followed by two 1x1 convs (a
small MLP at every position), and the FC layers by a last mlpconv with one map
per class, averaged over the image. The CIFAR-10 model follows the authors'
configuration (966,986 parameters); the ImageNet model is the authors' Caffe
model-zoo network (pools round up, as in Caffe).

All-CNN-C replaces every max pool by a stride-2 3x3 conv (1,369,738
parameters, the paper's "1.4M"), with dropout 0.2 on the input and 0.5 after
each downsampling.
"""

from __future__ import annotations

from jaxconv.combinators import serial, shape_dependent
from jaxconv.core import Layer, named
from jaxconv.layers import AvgPool, Dropout, GlobalAvgPool, MaxPool
from jaxconv.models.blocks import Norm, conv_norm
from jaxconv.models.registry import register

# stages: (features, kernel, stride, padding, 1x1 features, 1x1 features), then what follows
NIN_CIFAR: tuple[tuple[tuple[int, ...], str], ...] = (
    ((192, 5, 1, 2, 160, 96), "max"),
    ((192, 5, 1, 2, 192, 192), "avg"),
    ((192, 3, 1, 1, 192, "classes"), "global"),
)
NIN_IMAGENET: tuple[tuple[tuple, ...], ...] = (
    ((96, 11, 4, 0, 96, 96), "max"),
    ((256, 5, 1, 2, 256, 256), "max"),
    ((384, 3, 1, 1, 384, 384), "max"),
    ((1024, 3, 1, 1, 1024, "classes"), "global"),
)


def _ceil_avg_pool(window: int, stride: int) -> Layer:
    """Caffe's average pool that keeps a last partial window (its count includes no padding)."""

    def make(shape):
        extra = [(-(-(size - window) // stride)) * stride + window - size for size in shape[1:-1]]
        return AvgPool(window, stride, tuple((0, e) for e in extra), count_include_pad=False)

    return shape_dependent(make)


def _mlpconv(row: tuple, num_classes: int, norm: Norm) -> Layer:
    features, kernel, stride, padding, first, second = row
    second = num_classes if second == "classes" else second
    return serial(
        named("conv", conv_norm(features, kernel, stride, padding, norm=norm)),
        named("cccp1", conv_norm(first, 1, norm=norm)),
        named("cccp2", conv_norm(second, 1, norm=norm)),
    )


def nin(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.5, norm: Norm = None) -> Layer:
    """Network in Network, (N, 224, 224, 3) (or (N, 32, 32, 3) with ``cifar``) -> (N, num_classes)."""
    rows = NIN_CIFAR if cifar else NIN_IMAGENET
    after = {
        "max": lambda: MaxPool(3, 2, ceil_mode=True),
        "avg": lambda: _ceil_avg_pool(3, 2),
        "global": lambda: GlobalAvgPool,
    }
    layers = []
    for index, (row, pool) in enumerate(rows, 1):
        layers += [named(f"mlpconv{index}", _mlpconv(row, num_classes, norm)), after[pool]()]
        if dropout and pool != "global" and (cifar or index == len(rows) - 1):
            layers.append(Dropout(dropout))
    return serial(*layers)


# All-CNN-C: (features, kernel, stride, padding) per conv; "drop" marks a dropout of 0.5
ALL_CNN_C: tuple = (
    (96, 3, 1, 1), (96, 3, 1, 1), (96, 3, 2, 1), "drop",
    (192, 3, 1, 1), (192, 3, 1, 1), (192, 3, 2, 1), "drop",
    (192, 3, 1, 0), (192, 1, 1, 0), ("classes", 1, 1, 0),
)  # fmt: skip


def all_cnn_c(num_classes: int = 10, dropout: bool = True, norm: Norm = None) -> Layer:
    """All-CNN-C (Springenberg et al. 2015), (N, 32, 32, 3) -> (N, num_classes); ReLU after every conv."""
    layers, convs = [Dropout(0.2)] if dropout else [], 0
    for row in ALL_CNN_C:
        if row == "drop":
            layers += [Dropout(0.5)] if dropout else []
            continue
        convs += 1
        features = num_classes if row[0] == "classes" else row[0]
        layers.append(named(f"conv{convs}", conv_norm(features, *row[1:], norm=norm)))
    return serial(*layers, GlobalAvgPool)


register("nin", nin)
register("nin_cifar", nin, input_size=(32, 32, 3), num_classes=10, cifar=True)
register("all_cnn_c", all_cnn_c, input_size=(32, 32, 3), num_classes=10)
