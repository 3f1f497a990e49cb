"""Pieces the model families share: normalisation choice, conv-norm-act units, heads, and
Inception modules built from branch tables."""

from __future__ import annotations

import math
from typing import Literal

from jaxconv.combinators import Identity, fan_in_concat, fan_out, parallel, serial, shape_dependent
from jaxconv.core import Layer, named
from jaxconv.layers import (
    AdaptiveAvgPool,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    MaxPool,
    Relu,
)

Norm = Literal["batch", "group", "ws_group"] | None
NORMS = ("batch", "group", "ws_group", None)


def norm_layer(norm: Norm, eps: float = 1e-5) -> Layer:
    """BatchNorm, GroupNorm (``'group'``: 32 groups, or the largest divisor of the channels;
    ``'ws_group'``: 16 groups, De et al. 2022, beside weight-standardised convs) or nothing."""
    if norm == "batch":
        return BatchNorm(eps=eps)
    if norm in ("group", "ws_group"):
        most = 32 if norm == "group" else 16
        return shape_dependent(lambda shape: GroupNorm(math.gcd(most, shape[-1]), eps=eps))
    if norm is None:
        return Identity
    raise ValueError(f"norm={norm!r} is not a normalisation; use one of {NORMS}")


def norm_conv(
    features: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple = 0,
    *,
    norm: Norm,
    groups: int = 1,
    use_bias: bool | None = None,
) -> Layer:
    """A Conv beside a ``norm`` layer: a bias only without a norm (unless ``use_bias`` says), its
    filters standardised with ``'ws_group'`` (weight standardisation, Qiao et al. 2019)."""
    bias = norm is None if use_bias is None else use_bias
    standardize = norm == "ws_group"
    return Conv(
        features,
        kernel_size,
        stride,
        padding,
        groups=groups,
        use_bias=bias,
        weight_standardization=standardize,
    )


def conv_norm(
    features: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple = 0,
    *,
    norm: Norm = "batch",
    groups: int = 1,
    activation: Layer | None = Relu,
    eps: float = 1e-5,
    use_bias: bool | None = None,
) -> Layer:
    """Conv -> norm -> activation; by default the conv has a bias only when no norm follows it.

    Params ``{'conv': ..., 'norm': ...}``.
    """
    parts = [
        named(
            "conv",
            norm_conv(features, kernel_size, stride, padding, norm=norm, groups=groups, use_bias=use_bias),
        ),
        named("norm", norm_layer(norm, eps)),
    ]
    return serial(*parts, *([activation] if activation is not None else []))


def norm_act_conv(
    features: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    *,
    norm: Norm = "batch",
    groups: int = 1,
) -> Layer:
    """Norm -> ReLU -> conv, the pre-activation order (He et al. 2016; DenseNet)."""
    conv = norm_conv(features, kernel_size, stride, padding, norm=norm, groups=groups)
    return serial(named("norm", norm_layer(norm)), Relu, named("conv", conv))


def pooled_classifier(num_classes: int, dropout: float = 0.0) -> Layer:
    """Global average pooling, optional dropout, one Dense layer: (N, H, W, C) -> (N, classes)."""
    drop = [Dropout(dropout)] if dropout else []
    return serial(GlobalAvgPool, *drop, named("fc", Dense(num_classes)))


def fc_classifier(
    num_classes: int, hidden: int = 4096, dropout: float = 0.5, pool_to: int | None = 7
) -> Layer:
    """AlexNet/VGG's head: [adaptive pool] -> flatten -> (FC -> ReLU -> dropout) x 2 -> FC."""
    pool = [AdaptiveAvgPool(pool_to)] if pool_to else []
    hidden_layers = []
    for index in (1, 2):
        hidden_layers += [named(f"fc{index}", Dense(hidden)), Relu, Dropout(dropout)]
    return serial(*pool, Flatten, *hidden_layers, named("fc3", Dense(num_classes)))


# --- Inception modules from branch tables -----------------------------------------------------

Branch = tuple[tuple, ...]
"""A branch as a table row: conv steps ``(features, kernel, stride, padding)``, pools
``("max" | "avg", window, stride, padding)`` and ``("split", branch_a, branch_b)``."""


def branch(steps: Branch, unit) -> Layer:
    """One branch of an Inception module from its table row; ``unit(features, kernel, stride, padding)``."""
    layers, convs = [], 0
    for step in steps:
        if step[0] in ("max", "avg"):
            layers.append((MaxPool if step[0] == "max" else AvgPool)(*step[1:]))
        elif step[0] == "split":
            layers.append(named("split", module({"a": step[1], "b": step[2]}, unit)))
        else:
            convs += 1
            layers.append(named(f"conv{convs}", unit(*step)))
    return serial(*layers)


def module(branches: dict[str, Branch], unit) -> Layer:
    """An Inception module: the named branches side by side, channels concatenated."""
    paths = parallel(*(named(name, branch(steps, unit)) for name, steps in branches.items()))
    return serial(fan_out(len(branches)), named("branches", paths), fan_in_concat())
