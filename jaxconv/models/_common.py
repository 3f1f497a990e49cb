"""Pieces the model families share: normalisation choice, conv-norm-act units, heads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from jaxconv.combinators import Identity, fan_in_concat, fan_out, parallel, serial, shape_dependent, wired
from jaxconv.core import Layer, named
from jaxconv.layers import (
    AdaptiveAvgPool,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    Relu,
)

Norm = Literal["batch", "group"] | None
NORMS = ("batch", "group", None)


def norm_layer(norm: Norm, eps: float = 1e-5) -> Layer:
    """BatchNorm, GroupNorm (32 groups, or the largest divisor of the channels) or nothing."""
    if norm == "batch":
        return BatchNorm(eps=eps)
    if norm == "group":
        return shape_dependent(lambda shape: GroupNorm(math.gcd(32, shape[-1]), eps=eps))
    if norm is None:
        return Identity
    raise ValueError(f"norm={norm!r} is not a normalisation; use one of {NORMS}")


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
    bias = norm is None if use_bias is None else use_bias
    parts = [
        named("conv", Conv(features, kernel_size, stride, padding, groups=groups, use_bias=bias)),
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
    conv = Conv(features, kernel_size, stride, padding, groups=groups, use_bias=norm is None)
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


def concat_with_input(body: Layer) -> Layer:
    """``concat([x, body(x)], channels)``, DenseNet's connection; params under ``['paths']['new']``."""
    return serial(fan_out(2), named("paths", parallel(Identity, named("new", body))), fan_in_concat())


def with_aux_heads(stages: Sequence[tuple[str, Layer]], heads: Sequence[tuple[str, str, Layer]]) -> Layer:
    """Run named ``stages`` in order, also feeding the output of stage ``after`` to each head.

    ``heads`` are ``(after, name, head)``; the layer returns ``(final, *head outputs)`` in the
    order of ``heads`` (GoogLeNet's and Inception v3's auxiliary classifiers). Params are keyed
    by the stage and head names, side by side.
    """
    names = [name for name, _ in stages]
    for after, name, _ in heads:
        if after not in names:
            raise ValueError(
                f"with_aux_heads: head {name!r} follows unknown stage {after!r}; stages: {names}"
            )
    children = [*stages, *((name, head) for _, name, head in heads)]

    def run(step, x):
        """Thread ``x`` through the stages and heads with ``step(name, child, x)``."""
        taps = {}
        for name, stage in stages:
            x = step(name, stage, x)
            taps[name] = x
        return (x, *(step(name, head, taps[after]) for after, name, head in heads))

    return wired("WithAuxHeads", children, run)
