"""Named training recipes: the options of a measured run, for ``jaxconv train --recipe NAME``.

    config = TrainConfig(**recipe("resnet20"))                      # or
    config = TrainConfig(**(recipe("resnet20") | {"epochs": 30}))   # options given win

Each recipe names the run that measured it (experiments/README.md); options given beside a
recipe replace its values.
"""

from __future__ import annotations

from typing import Any

from jaxconv.errors import ConfigError

RECIPES: dict[str, dict[str, Any]] = {
    # the default model: 0.9265 on Fashion-MNIST (`make train`; the TrainConfig defaults)
    "convnet": {
        "model": "convnet", "dataset": "fashion_mnist", "epochs": 8, "batch_size": 128, "lr": 3e-3,
        "optimizer": "adamw", "schedule": "onecycle", "weight_decay": 5e-4, "label_smoothing": 0.1,
        "augment": "none",
    },
    # ResNet-20: 0.9400 on Fashion-MNIST after 15 epochs (the lead's run, experiments/README.md)
    "resnet20": {
        "model": "resnet20", "dataset": "fashion_mnist", "epochs": 15, "batch_size": 128, "lr": 0.1,
        "optimizer": "nesterov", "schedule": "cosine", "weight_decay": 5e-4, "momentum": 0.9,
        "label_smoothing": 0.1, "augment": "crop=2,flip",
    },
}  # fmt: skip


def recipe(name: str) -> dict[str, Any]:
    """The options of recipe ``name`` (a copy).

    Raises:
      ConfigError: an unknown name, listing the recipes.
    """
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; recipes: {sorted(RECIPES)}")
    return dict(RECIPES[name])
