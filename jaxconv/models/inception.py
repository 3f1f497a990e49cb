"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), as in torchvision.

Factorised modules (5x5 as two 3x3, n x n as 1 x n then n x 1, grid
reductions by parallel stride-2 branches) written in the Inception table
notation of `jaxconv.models.googlenet`. Every conv is followed by BatchNorm
(eps 1e-3) and ReLU. The native input is 299x299 (any H, W >= 75 work). With
``aux_logits=True`` the network also returns the auxiliary classifier on
Mixed_6e: ``(logits, aux)``. 23,834,568 parameters, 27,161,264 with the auxiliary head.
"""

from __future__ import annotations

import functools

from jaxconv.combinators import serial, with_aux_heads
from jaxconv.core import Layer, named
from jaxconv.layers import AdaptiveAvgPool, AvgPool, Dense, Flatten, MaxPool
from jaxconv.models.blocks import Branch, Norm, conv_norm, module, pooled_classifier
from jaxconv.models.registry import register

AVG = ("avg", 3, 1, 1)


def inception_a(pool_features: int) -> dict[str, Branch]:
    return {
        "branch1x1": ((64, 1),),
        "branch5x5": ((48, 1), (64, 5, 1, 2)),
        "branch3x3dbl": ((64, 1), (96, 3, 1, 1), (96, 3, 1, 1)),
        "branch_pool": (AVG, (pool_features, 1)),
    }


def inception_b() -> dict[str, Branch]:
    return {
        "branch3x3": ((384, 3, 2, 0),),
        "branch3x3dbl": ((64, 1), (96, 3, 1, 1), (96, 3, 2, 0)),
        "branch_pool": (("max", 3, 2, 0),),
    }


def inception_c(c7: int) -> dict[str, Branch]:
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    return {
        "branch1x1": ((192, 1),),
        "branch7x7": ((c7, 1), (c7, *row), (192, *col)),
        "branch7x7dbl": ((c7, 1), (c7, *col), (c7, *row), (c7, *col), (192, *row)),
        "branch_pool": (AVG, (192, 1)),
    }


def inception_d() -> dict[str, Branch]:
    return {
        "branch3x3": ((192, 1), (320, 3, 2, 0)),
        "branch7x7x3": ((192, 1), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)), (192, 3, 2, 0)),
        "branch_pool": (("max", 3, 2, 0),),
    }


def inception_e() -> dict[str, Branch]:
    split = ("split", ((384, (1, 3), 1, (0, 1)),), ((384, (3, 1), 1, (1, 0)),))
    return {
        "branch1x1": ((320, 1),),
        "branch3x3": ((384, 1), split),
        "branch3x3dbl": ((448, 1), (384, 3, 1, 1), split),
        "branch_pool": (AVG, (192, 1)),
    }


# stage name -> the module's branches, in torchvision's order and names
MIXED: dict[str, dict[str, Branch]] = {
    "Mixed_5b": inception_a(32),
    "Mixed_5c": inception_a(64),
    "Mixed_5d": inception_a(64),
    "Mixed_6a": inception_b(),
    "Mixed_6b": inception_c(128),
    "Mixed_6c": inception_c(160),
    "Mixed_6d": inception_c(160),
    "Mixed_6e": inception_c(192),
    "Mixed_7a": inception_d(),
    "Mixed_7b": inception_e(),
    "Mixed_7c": inception_e(),
}


def inception_v3(
    num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.5, norm: Norm = "batch"
) -> Layer:
    """Inception v3, (N, 299, 299, 3) -> (N, num_classes) [, aux]."""
    unit = functools.partial(conv_norm, norm=norm, eps=1e-3)
    stem = serial(
        named("Conv2d_1a_3x3", unit(32, 3, 2)), named("Conv2d_2a_3x3", unit(32, 3)),
        named("Conv2d_2b_3x3", unit(64, 3, 1, 1)), MaxPool(3, 2),
        named("Conv2d_3b_1x1", unit(80, 1)), named("Conv2d_4a_3x3", unit(192, 3)), MaxPool(3, 2),
    )  # fmt: skip
    stages = [("stem", stem), *((name, module(branches, unit)) for name, branches in MIXED.items())]
    stages.append(("head", pooled_classifier(num_classes, dropout=dropout)))
    if not aux_logits:
        return serial(*(named(name, stage) for name, stage in stages))
    aux = serial(
        AvgPool(5, 3), named("conv0", unit(128, 1)), named("conv1", unit(768, 5)),
        AdaptiveAvgPool(1), Flatten, named("fc", Dense(num_classes)),
    )  # fmt: skip
    return with_aux_heads(stages, [("Mixed_6e", "AuxLogits", aux)])


register("inception_v3", inception_v3, input_size=(299, 299, 3))
