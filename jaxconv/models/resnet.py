"""Residual networks: ResNet (He et al. 2015), pre-activation ResNet (He et al. 2016),
CIFAR ResNets, stochastic depth (Huang et al. 2016), Wide ResNet (Zagoruyko &
Komodakis 2016) and ResNeXt (Xie et al. 2017), all from one constructor.

A network is a stem, four (ImageNet) or three (CIFAR) stages of residual
blocks, and global average pooling into one FC layer. The tables give each
depth's blocks per stage; the public builders pick a table row and a few options:

- ``stride_on``: where a bottleneck block downsamples. The paper strides its
  first 1x1 conv (``'1x1'``, the plain names); torchvision's "ResNet v1.5"
  strides the 3x3 (``'3x3'``, the ``_tv`` names, also ResNeXt and Wide ResNet).
  Parameter counts are the same.
- ``shortcut``: ``'B'`` projects with a 1x1 conv + norm when the shape changes
  (ImageNet models), ``'A'`` subsamples and pads the new channels with zeros,
  adding no parameters (He et al.'s CIFAR models).
- ``groups``, ``base_width``: a bottleneck's 3x3 conv has
  ``groups * int(width * base_width / 64)`` channels (ResNeXt: groups=32,
  base_width=4 or 8; Wide ResNet-50-2: base_width=128).
- ``stochastic_depth``: the drop rate of the last block; block l of L drops
  with rate ``stochastic_depth * l / L`` (Huang et al.'s linear decay of the
  survival probability to ``1 - stochastic_depth``).
- ``norm``: ``'batch'``, ``'group'`` (per-example gradients), ``'ws_group'`` (GroupNorm with 16
  groups and weight-standardised convs: De et al. 2022's DP-SGD Wide ResNets) or None.

Params read ``params['stage1']['block0']['body']['conv1']['conv']['kernel']``
with a projection at ``['stage1']['block0']['shortcut']``. A pre-activation
block whose shortcut is a projection normalises once for both paths:
``['block0']['preact']`` and then ``['block0']['residual']['body' | 'shortcut']``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax.numpy as jnp

from jaxconv.combinators import Lambda, residual, serial
from jaxconv.core import Layer, named
from jaxconv.layers import Dropout, MaxPool, Relu, StochasticDepth
from jaxconv.models.blocks import Norm, conv_norm, norm_act_conv, norm_conv, norm_layer, pooled_classifier
from jaxconv.models.registry import register

BlockKind = Literal["basic", "bottleneck"]

# depth -> (block kind, blocks per stage)
IMAGENET: dict[int, tuple[BlockKind, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


# --- blocks -----------------------------------------------------------------------------------


class ConvSpec(NamedTuple):
    """One convolution of a block."""

    features: int
    kernel_size: int
    stride: int
    padding: int
    groups: int = 1


def _convs(
    kind: BlockKind, width: int, stride: int, stride_on: str, groups: int, base_width: int
) -> list[ConvSpec]:
    """The convolutions of a basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1) block."""
    if kind == "basic":
        return [ConvSpec(width, 3, stride, 1), ConvSpec(width, 3, 1, 1)]
    inner = groups * int(width * base_width / 64)
    stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
    return [
        ConvSpec(inner, 1, stride_1x1, 0),
        ConvSpec(inner, 3, stride_3x3, 1, groups),
        ConvSpec(width * 4, 1, 1, 0),
    ]


def _zero_pad_shortcut(features: int, stride: int) -> Layer:
    """He et al.'s option A: keep every ``stride``-th position and zero-pad the new channels."""

    def shortcut(x):
        x = x[:, ::stride, ::stride, :]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))

    return Lambda(shortcut, name="ZeroPadShortcut")


def _shortcut(kind: str, features: int, stride: int, norm: Norm, preact: bool) -> Layer:
    """Option A (zero padding) or B (1x1 projection, + norm unless the input is pre-activated)."""
    if kind == "A":
        return _zero_pad_shortcut(features, stride)
    if kind != "B":
        raise ValueError(f"shortcut={kind!r}: use 'A' (zero padding) or 'B' (1x1 projection)")
    conv = named("conv", norm_conv(features, 1, stride, norm=norm))
    return serial(conv) if preact else serial(conv, named("norm", norm_layer(norm)))


def _block(
    name: str, convs: list[ConvSpec], in_channels: int, *, norm: Norm, preact: bool, shortcut: str,
    dropout: float, drop_rate: float,
) -> list[Layer]:  # fmt: skip
    """One residual block as stage members: ``relu(body(x) + shortcut(x))``, or pre-activated."""
    out, stride = convs[-1].features, max(spec.stride for spec in convs)
    projection = stride != 1 or in_channels != out
    if preact:
        units = [norm_act_conv(*spec[:4], groups=spec.groups, norm=norm) for spec in convs]
    else:
        last = len(convs) - 1
        units = [
            conv_norm(*spec[:4], groups=spec.groups, norm=norm, activation=None if i == last else Relu)
            for i, spec in enumerate(convs)
        ]
    if preact and projection:  # both paths start from norm-relu(x): the first unit keeps only its conv
        units[0] = norm_conv(*convs[0][:4], groups=convs[0].groups, norm=norm)
    layers = [named(f"conv{i}", unit) for i, unit in enumerate(units, 1)]
    if dropout:
        layers.insert(-1, Dropout(dropout))
    if drop_rate:
        layers.append(StochasticDepth(drop_rate))
    block = residual(serial(*layers), _shortcut(shortcut, out, stride, norm, preact) if projection else None)
    if not preact:
        return [named(name, block), Relu]
    if projection:
        return [named(name, serial(named("preact", norm_layer(norm)), Relu, named("residual", block)))]
    return [named(name, block)]


# --- networks ---------------------------------------------------------------------------------


def _stem(cifar: bool, width: int, norm: Norm, preact: bool) -> Layer:
    """ImageNet: 7x7/2 conv, norm, ReLU, 3x3/2 max pool. CIFAR: one 3x3 conv (+ norm, ReLU)."""
    if cifar:
        if preact:  # the first block normalises
            return serial(named("conv", norm_conv(width, 3, padding=1, norm=norm)))
        return conv_norm(width, 3, padding=1, norm=norm)
    return serial(conv_norm(width, 7, 2, 3, norm=norm), MaxPool(3, 2, padding=1))


def resnet(
    depths: tuple[int, ...],
    kind: BlockKind = "basic",
    num_classes: int = 1000,
    *,
    widths: tuple[int, ...] = IMAGENET_WIDTHS,
    stem_width: int | None = None,
    cifar: bool = False,
    norm: Norm = "batch",
    preact: bool = False,
    shortcut: str = "B",
    stride_on: str = "1x1",
    groups: int = 1,
    base_width: int = 64,
    dropout: float = 0.0,
    stochastic_depth: float = 0.0,
) -> Layer:
    """A residual network with ``depths[i]`` blocks of ``kind`` in stage i+1, (N, H, W, 3) -> (N, classes).

    Stage i+1 has width ``widths[i]`` (times 4 at the output of a bottleneck)
    and, after the first, downsamples by 2 in its first block. ``dropout`` is
    the Wide ResNet dropout between a block's convolutions; for the other
    options see the module docstring.
    """
    if stride_on not in ("1x1", "3x3"):
        raise ValueError(f"stride_on={stride_on!r}: a bottleneck strides its '1x1' or its '3x3' conv")
    if not 0.0 <= stochastic_depth < 1.0:
        raise ValueError(f"stochastic_depth={stochastic_depth}: the last block's drop rate must be in [0, 1)")
    channels = stem_width or widths[0]
    layers = [named("stem", _stem(cifar, channels, norm, preact))]
    total, index = sum(depths), 0
    for stage, (count, width) in enumerate(zip(depths, widths, strict=True), 1):
        members = []
        for block in range(count):
            index += 1
            stride = 2 if stage > 1 and block == 0 else 1
            convs = _convs(kind, width, stride, stride_on, groups, base_width)
            members += _block(
                f"block{block}", convs, channels, norm=norm, preact=preact, shortcut=shortcut,
                dropout=dropout, drop_rate=stochastic_depth * index / total,
            )  # fmt: skip
            channels = convs[-1][0]
        layers.append(named(f"stage{stage}", serial(*members)))
    if preact:
        layers += [named("final_norm", norm_layer(norm)), Relu]
    return serial(*layers, named("head", pooled_classifier(num_classes)))


# --- the published architectures ----------------------------------------------------------------


def imagenet_options(depth: int) -> dict:
    """``resnet`` options of the ImageNet ResNet-``depth`` (18, 34, 50, 101, 152)."""
    if depth not in IMAGENET:
        raise ValueError(f"no ImageNet ResNet of depth {depth}; choose one of {sorted(IMAGENET)}")
    kind, depths = IMAGENET[depth]
    return {"depths": depths, "kind": kind}


def cifar_options(depth: int, kind: BlockKind = "basic", widen: int = 1, extra_layers: int = 2) -> dict:
    """``resnet`` options of a CIFAR ResNet: ``depth = (2 or 3) * 3n + extra_layers``, widths 16/32/64 x ``widen``.

    He et al. count 2 layers beyond the blocks (stem and FC); Wide ResNets count
    4 (with the 1x1 projections).
    """
    per_stage = 3 * (2 if kind == "basic" else 3)
    if (depth - extra_layers) % per_stage:
        valid = depth - (depth - extra_layers) % per_stage
        raise ValueError(
            f"a CIFAR ResNet of {kind} blocks has depth {per_stage}n + {extra_layers}, got {depth}; try {valid}"
        )
    return {
        "depths": ((depth - extra_layers) // per_stage,) * 3,
        "kind": kind,
        "widths": tuple(width * widen for width in CIFAR_WIDTHS),
        "stem_width": 16,
        "cifar": True,
    }


CIFAR = (32, 32, 3)
for _depth in IMAGENET:
    register(f"resnet{_depth}", resnet, **imagenet_options(_depth))
    register(f"resnet{_depth}_tv", resnet, **imagenet_options(_depth), stride_on="3x3")
    register(f"preact_resnet{_depth}", resnet, **imagenet_options(_depth), preact=True)
for _depth in (20, 32, 44, 56, 110, 1202):
    register(f"resnet{_depth}", resnet, CIFAR, 10, **cifar_options(_depth), shortcut="A")
register("resnet110_sd", resnet, CIFAR, 10, **cifar_options(110), shortcut="A", stochastic_depth=0.5)
register("preact_resnet110", resnet, CIFAR, 10, **cifar_options(110), preact=True)
for _depth in (164, 1001):
    register(f"preact_resnet{_depth}", resnet, CIFAR, 10, **cifar_options(_depth, "bottleneck"), preact=True)
for _depth, _widen in ((16, 4), (16, 8), (28, 10), (40, 4)):
    _options = cifar_options(_depth, widen=_widen, extra_layers=4)
    register(f"wrn{_depth}_{_widen}", resnet, CIFAR, 10, **_options, preact=True)
# De et al. 2022's DP-SGD Wide ResNet: no BatchNorm, GroupNorm (16 groups) and weight standardisation
register(
    "wrn16_4_dp",
    resnet,
    CIFAR,
    10,
    **cifar_options(16, widen=4, extra_layers=4),
    preact=True,
    norm="ws_group",
)
for _depth in (50, 101):
    register(f"wide_resnet{_depth}_2", resnet, **imagenet_options(_depth), stride_on="3x3", base_width=128)
for _depth, _groups, _base in ((50, 32, 4), (101, 32, 8), (101, 64, 4), (152, 32, 4)):
    _options = imagenet_options(_depth)
    register(
        f"resnext{_depth}_{_groups}x{_base}d",
        resnet,
        **_options,
        stride_on="3x3",
        groups=_groups,
        base_width=_base,
    )
