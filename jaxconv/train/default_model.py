"""The models ``jaxconv train`` knows by name: the default ConvNet, then the zoo.

The default model is a small BatchNorm ConvNet sized for Fashion-MNIST on a
CPU: the notes' pattern ``INPUT -> [CONV -> BN -> RELU -> POOL]*2 -> FC -> RELU
-> FC`` with 3x3 filters, 32 and 64 of them, and a 128-unit hidden layer.
Every other name is looked up in `jaxconv.models` (imported on first use).
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import jax

from jaxconv.combinators import serial
from jaxconv.core import Layer
from jaxconv.errors import ConfigError
from jaxconv.layers import BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu, Tanh

DEFAULT_MODEL = "convnet"
PARAM_COUNTS = Path(__file__).with_name("param_counts.json")


def convnet(num_classes: int = 10, width: int = 32, hidden: int = 128, dropout: float = 0.3) -> Layer:
    """The default model: two CONV-BN-RELU-POOL stages, then a hidden FC layer.

    Shapes: (N, H, W, C) -> (N, num_classes), for any H, W divisible by 4
    (Fashion-MNIST: (N, 28, 28, 1), 421,738 parameters with the defaults).
    """

    def stage(features: int) -> list[Layer]:
        return [Conv(features, 3, padding=1, use_bias=False), BatchNorm(), Relu, MaxPool(2)]

    return serial(
        *stage(width),  # (N, H/2, W/2, width)
        *stage(2 * width),  # (N, H/4, W/4, 2 * width)
        Flatten,
        Dense(hidden),
        Relu,
        Dropout(dropout),
        Dense(num_classes),
    )


def dp_cnn(num_classes: int = 10) -> Layer:
    """The small tanh CNN of DP-SGD studies on MNIST and Fashion-MNIST (Papernot et al. 2021,
    "Tempered Sigmoid Activations"; Tramer & Boneh 2021): no BatchNorm, so every example has a
    gradient of its own. Bounded activations keep the clipped gradients informative.

    Shapes: (N, 28, 28, 1) -> (N, num_classes); 26,010 parameters for 10 classes.
    """
    return serial(
        Conv(16, 8, stride=2, padding=3),  # (N, 14, 14, 16)
        Tanh,
        MaxPool(2, stride=1),  # (N, 13, 13, 16)
        Conv(32, 4, stride=2),  # (N, 5, 5, 32)
        Tanh,
        MaxPool(2, stride=1),  # (N, 4, 4, 32)
        Flatten,
        Dense(32),
        Tanh,
        Dense(num_classes),
    )


_LOCAL: dict[str, Callable[..., Layer]] = {DEFAULT_MODEL: convnet, "dp_cnn": dp_cnn}


def model_names() -> list[str]:
    """The names `get_model` accepts: the local ones, then `jaxconv.models.names()`."""
    zoo = _zoo()
    return sorted(_LOCAL) + [name for name in (zoo.names() if zoo else []) if name not in _LOCAL]


def get_model(name: str, num_classes: int | None = None) -> Layer:
    """Build the model ``name`` with ``num_classes`` outputs (None: the model's own default,
    10 for the default model); unknown names list the valid ones."""
    check_model_name(name)
    if name in _LOCAL:
        return _LOCAL[name](**({} if num_classes is None else {"num_classes": num_classes}))
    return _zoo().get(name, num_classes=num_classes)


def count_model_params(name: str) -> int:
    """Trainable parameters of ``name`` at its native input and default classes, computed from
    shapes alone (`jax.eval_shape`, nothing allocated)."""
    net = get_model(name)
    params = jax.eval_shape(lambda key: net.init(key, input_shape(name))[1], jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def param_counts() -> dict[str, int]:
    """``{name: parameters}`` from the table that `jaxconv models` prints (tracing every model
    takes minutes, so it is computed once by scripts/param_counts.py and checked by the tests)."""
    return json.loads(PARAM_COUNTS.read_text()) if PARAM_COUNTS.is_file() else {}


def input_shape(name: str) -> tuple[int, int, int, int]:
    """The input shape (N, H, W, C) the model ``name`` is described with: a zoo model's native
    size, Fashion-MNIST's (-1, 28, 28, 1) for the local ones."""
    check_model_name(name)
    return (-1, 28, 28, 1) if name in _LOCAL else _zoo().input_shape(name)


def check_model_name(name: str) -> None:
    """Raise `ConfigError` listing the valid names if ``name`` is not one of them."""
    valid = model_names()
    if name in valid:
        return
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown model {name!r}; {hint}valid names: {', '.join(valid)} (see `jaxconv models`)")


def _zoo():
    try:
        return importlib.import_module("jaxconv.models")
    except ImportError:
        return None
