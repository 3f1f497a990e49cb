"""The table of named architectures behind `jaxconv.models.get` and `names`."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from typing import Any, Literal

from jaxconv.core import Layer
from jaxconv.wrappers import mixed_precision, remat_blocks

Builder = Callable[..., Layer]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder, native input (H, W, C) and default classes."""

    name: str
    builder: Builder
    input_size: tuple[int, int, int]
    num_classes: int
    options: dict[str, Any]


_MODELS: dict[str, ModelSpec] = {}


def register(
    name: str,
    builder: Builder,
    input_size: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    **options: Any,
) -> None:
    """Register ``builder(num_classes=..., **options, **user_options)`` under ``name``."""
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = ModelSpec(name, builder, input_size, num_classes, options)


def spec(name: str) -> ModelSpec:
    """The registered `ModelSpec` of ``name``; unknown names raise with the valid ones."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"did you mean {close}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}valid names: {', '.join(names())}")
    return _MODELS[name]


def names() -> list[str]:
    """Every registered architecture's name, sorted."""
    return sorted(_MODELS)


def get(
    name: str,
    num_classes: int | None = None,
    *,
    dtype: Any = None,
    remat: bool | Literal["blocks"] = False,
    **options: Any,
) -> Layer:
    """Build the architecture ``name`` (see `names`), e.g. ``get('resnet50', num_classes=10)``.

    ``num_classes`` defaults to the dataset the architecture was published on
    (1000 for ImageNet, 10 for CIFAR); ``options`` are keyword arguments of the
    family's constructor, such as ``norm='group'`` or ``dropout=0.0``, and may
    override the registered ones (``get('resnet20', shortcut='B')``).

    ``dtype`` is the mixed-precision policy (`jaxconv.precision.mixed_precision`):
    ``jnp.bfloat16`` (or ``'bfloat16'``) computes every convolution and matrix
    multiply in bfloat16, while params and BatchNorm statistics stay float32
    (so gradients are float32) and the logits come back float32. None computes
    in the input's dtype.

    ``remat=True`` (or ``'blocks'``) recomputes every block (residual block,
    Inception module, DenseNet layer) in the backward pass instead of storing
    its activations (`jaxconv.remat.remat_blocks`): the same values and
    gradients, far less memory for about one more forward pass of compute.
    Models without such blocks (VGG, AlexNet) raise; wrap them whole with
    `jaxconv.remat.remat`.
    """
    model = spec(name)
    accepted = set(inspect.signature(model.builder).parameters) - {"num_classes"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"model {name!r} takes no option(s) {unknown}; its options are {sorted(accepted)}")
    if remat not in (False, True, "blocks"):
        raise ValueError(f"remat={remat!r}: use False, True or 'blocks' (True and 'blocks' are the same)")
    net = model.builder(num_classes=num_classes or model.num_classes, **{**model.options, **options})
    if remat:
        net = remat_blocks(net)
    return net if dtype is None else mixed_precision(net, dtype)


def input_shape(name: str, batch: int = -1) -> tuple[int, int, int, int]:
    """The native input shape (N, H, W, C) of ``name``, with ``batch`` for N."""
    return (batch, *spec(name).input_size)
