"""The one table of named architectures: `register`, `get`, `names`, `spec`, `input_shape`.

Every family module registers its architectures at its bottom; `jaxconv.models.small` registers
the default model (`DEFAULT_MODEL`) and the DP-SGD CNN. `param_counts` is the table of their
parameter counts that ``jaxconv models`` prints, kept in ``param_counts.json`` beside this file.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxconv.core import Layer, trace
from jaxconv.errors import ConfigError
from jaxconv.wrappers import mixed_precision, remat_blocks

Builder = Callable[..., Layer]

DEFAULT_MODEL = "convnet"  # what `jaxconv train` and `jaxconv summary` use without --model
PARAM_COUNTS = Path(__file__).with_name("param_counts.json")


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
    """The registered `ModelSpec` of ``name``.

    Raises:
      ConfigError: for an unknown name, with the closest names and every valid one (the default first).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"did you mean {close}? " if close else ""
        listed = ", ".join(sorted(names(), key=lambda known: known != DEFAULT_MODEL))
        raise ConfigError(f"unknown model {name!r}; {hint}valid names: {listed} (see `jaxconv models`)")
    return _MODELS[name]


def names() -> list[str]:
    """Every registered architecture's name, sorted."""
    return sorted(_MODELS)


def get(
    name: str, num_classes: int | None = None, *, dtype: Any = None, remat: bool = False, **options: Any
) -> Layer:
    """Build the architecture ``name`` (see `names`), e.g. ``get('resnet50', num_classes=10)``.

    ``num_classes`` defaults to the dataset the architecture was published on
    (1000 for ImageNet, 10 for CIFAR and Fashion-MNIST); ``options`` are keyword arguments of
    the family's constructor, such as ``norm='group'`` or ``dropout=0.0``, and may
    override the registered ones (``get('resnet20', shortcut='B')``).

    ``dtype`` is the mixed-precision policy (`jaxconv.wrappers.mixed_precision`):
    ``jnp.bfloat16`` (or ``'bfloat16'``) computes every convolution and matrix
    multiply in bfloat16, while params and BatchNorm statistics stay float32
    (so gradients are float32) and the logits come back float32. None computes
    in the input's dtype.

    ``remat=True`` recomputes every block (residual block, Inception module, DenseNet
    layer) in the backward pass instead of storing its activations (`remat_blocks`):
    the same values and gradients, far less memory for about one more forward pass of
    compute. Models without such blocks (VGG, AlexNet) raise; wrap them whole with
    `jaxconv.wrappers.remat`.
    """
    model = spec(name)
    accepted = set(inspect.signature(model.builder).parameters) - {"num_classes"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"model {name!r} takes no option(s) {unknown}; its options are {sorted(accepted)}")
    if not isinstance(remat, bool):
        raise ConfigError(f"remat={remat!r}: use True (recompute every block) or False")
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(
            f"num_classes={num_classes!r} for {name!r}: give 1 class or more (None: its own {model.num_classes})"
        )
    net = model.builder(num_classes=num_classes or model.num_classes, **{**model.options, **options})
    if remat:
        net = remat_blocks(net)
    return net if dtype is None else mixed_precision(net, dtype)


def input_shape(name: str, batch: int = -1) -> tuple[int, int, int, int]:
    """The native input shape (N, H, W, C) of ``name``, with ``batch`` for N."""
    return (batch, *spec(name).input_size)


def count_model_params(name: str) -> int:
    """Trainable parameters of ``name`` at its native input and default classes, from shapes
    alone (`jaxconv.core.trace`: nothing is allocated)."""
    params = trace(get(name), input_shape(name)).params
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def param_counts() -> dict[str, int]:
    """``{name: parameters}`` from the table that ``jaxconv models`` prints (tracing every model
    takes minutes, so scripts/param_counts.py computes it once and the tests check it)."""
    return json.loads(PARAM_COUNTS.read_text()) if PARAM_COUNTS.is_file() else {}
