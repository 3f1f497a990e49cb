"""GoogLeNet (Szegedy et al. 2015, Inception v1) and the Inception-module table notation.

An Inception module runs parallel branches on one input and concatenates
their channels. Modules are written as tables: each branch a tuple of steps,

- ``(features, kernel)`` or ``(features, kernel, stride, padding)``: a conv unit
  (conv -> [norm] -> ReLU), kernel and padding an int or an (H, W) pair;
- ``('max' | 'avg', window, stride, padding)``: a pooling;
- ``('split', branch, branch)``: two sub-branches on the same input, concatenated
  (Inception v3's 1x3 / 3x1 pairs).

GoogLeNet as published: no BatchNorm, LRN after the stem's first pool and its
3x3 conv, 3x3 stride-2 max pools that round up (Caffe's rule), 5x5 convs in the
third branch, dropout 0.4, and two optional auxiliary classifiers (5x5/3
average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC) on 4a and 4d.
torchvision's ``googlenet`` (``googlenet_tv``) adds BatchNorm (eps 1e-3) after
every conv, which then has no bias, drops the LRNs, uses a 3x3 conv in the
third branch, a 2x2 pool before 5a, dropout 0.2, and auxiliary heads of an
adaptive 4x4 average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC:
6,624,904 parameters, 13,004,888 with ``aux_logits=True``.

With ``aux_logits=True`` the network returns ``(logits, aux1, aux2)`` in
training and evaluation alike (the shape of a layer's output cannot depend on
``train``); use ``logits`` for evaluation.
"""

from __future__ import annotations

import functools

from jaxconv.combinators import serial, with_aux_heads
from jaxconv.core import Layer, named
from jaxconv.layers import AdaptiveAvgPool, AvgPool, Dense, Dropout, Flatten, LocalResponseNorm, MaxPool, Relu
from jaxconv.models.blocks import Branch, Norm, conv_norm, module, pooled_classifier
from jaxconv.models.registry import register

# name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), the paper's Table 1
GOOGLENET: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _inception_v1(row: tuple[int, ...], third_kernel: int) -> dict[str, Branch]:
    ones, reduce3, threes, reduce5, fives, pool = row
    return {
        "branch1": ((ones, 1),),
        "branch2": ((reduce3, 1), (threes, 3, 1, 1)),
        "branch3": ((reduce5, 1), (fives, third_kernel, 1, third_kernel // 2)),
        "branch4": (("max", 3, 1, 1), (pool, 1)),
    }


def _aux_head(num_classes: int, unit, torchvision: bool) -> Layer:
    pool = AdaptiveAvgPool(4) if torchvision else AvgPool(5, 3)
    return serial(
        pool, named("conv", unit(128, 1)), Flatten,
        named("fc1", Dense(1024)), Relu, Dropout(0.7), named("fc2", Dense(num_classes)),
    )  # fmt: skip


def googlenet(
    num_classes: int = 1000, aux_logits: bool = False, torchvision: bool = False, norm: Norm = None
) -> Layer:
    """GoogLeNet, (N, 224, 224, 3) -> (N, num_classes) [, aux1, aux2]; ``torchvision=True`` for its variant.

    ``norm`` applies to the paper's version only (torchvision's always has BatchNorm).
    """
    norm, eps = ("batch", 1e-3) if torchvision else (norm, 1e-5)
    unit = functools.partial(conv_norm, norm=norm, eps=eps)
    lrn = [] if torchvision else [LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)]
    stem = serial(
        named("conv1", unit(64, 7, 2, 3)), MaxPool(3, 2, ceil_mode=True), *lrn,
        named("conv2", unit(64, 1)), named("conv3", unit(192, 3, 1, 1)), *lrn, MaxPool(3, 2, ceil_mode=True),
    )  # fmt: skip
    third_kernel = 3 if torchvision else 5
    stages = [("stem", stem)]
    for name, row in GOOGLENET.items():
        stages.append((name, module(_inception_v1(row, third_kernel), unit)))
        if name == "inception3b":
            stages.append(("pool3", MaxPool(3, 2, ceil_mode=True)))
        if name == "inception4e":
            window = 2 if torchvision else 3
            stages.append(("pool4", MaxPool(window, 2, ceil_mode=True)))
    stages.append(("head", pooled_classifier(num_classes, dropout=0.2 if torchvision else 0.4)))
    if not aux_logits:
        return serial(*(named(name, stage) for name, stage in stages))
    heads = [
        (tap, f"aux{i}", _aux_head(num_classes, unit, torchvision))
        for i, tap in enumerate(("inception4a", "inception4d"), 1)
    ]
    return with_aux_heads(stages, heads)


register("googlenet", googlenet)
register("googlenet_tv", googlenet, torchvision=True)
