"""Named training recipes: the options of a measured run, for ``jaxconv train --recipe NAME``.

    config = TrainConfig(**recipe("resnet20"))                      # or
    config = TrainConfig(**(recipe("resnet20") | {"epochs": 30}))   # options given win

Each recipe names the run that measured it (experiments/README.md), or the paper whose setting
it reproduces; options given beside a recipe replace its values.
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
    # the speedrun (experiments/speedrun.py, issue #17): airbench's block, one-cycle Nesterov SGD
    # on batches of 64, flips (crops cost accuracy in so few epochs), flip test-time augmentation
    "speedrun": {
        "model": "fast_cnn", "dataset": "fashion_mnist", "epochs": 12, "batch_size": 64, "lr": 0.05,
        "optimizer": "nesterov", "schedule": "onecycle", "weight_decay": 5e-4, "momentum": 0.9,
        "label_smoothing": 0.1, "augment": "flip", "tta": "flip",
    },
    # De et al. 2022 (Table 9's epsilon-1 row): WRN-16-4 with GroupNorm and weight standardisation,
    # Poisson batches of 4096, augmult 16, sigma 10 over 875 steps (here 73 epochs of 12 steps: 876),
    # SGD at lr 2 without momentum, clip 1, EMA 0.999. For a GPU; not yet run by jaxconv.
    "dp_wrn16_4_cifar10": {
        "model": "wrn16_4_dp", "dataset": "cifar10", "epochs": 73, "batch_size": 4096, "lr": 2.0,
        "optimizer": "sgd", "momentum": 0.0, "schedule": "constant", "weight_decay": 0.0,
        "label_smoothing": 0.0, "augment": "crop=4,flip", "dp_epsilon": 1.0, "dp_delta": 1e-5,
        "dp_clip": 1.0, "augmult": 16, "physical_batch_size": 256, "ema_decay": 0.999,
    },
    # its Fashion-MNIST counterpart for a CPU: the measured 0.8620 run at epsilon 3 (experiments/
    # README.md, DP-SGD row) with De et al.'s additions, augmult 2 of 2-pixel crops and EMA 0.999.
    # Run: 0.8365 (the EMA 0.7849) in 62 min, below the run without them: at 1,160 steps they cost
    # accuracy (experiments/README.md, the DP-SGD rows)
    "dp_fashion_mnist": {
        "model": "dp_cnn", "dataset": "fashion_mnist", "epochs": 40, "batch_size": 2048, "lr": 4.0,
        "optimizer": "sgd", "momentum": 0.9, "schedule": "constant", "weight_decay": 0.0,
        "label_smoothing": 0.0, "augment": "crop=2", "dp_epsilon": 3.0, "dp_delta": 1e-5,
        "dp_clip": 0.1, "augmult": 2, "physical_batch_size": 512, "ema_decay": 0.999,
    },
    # Tramer & Boneh 2021's ScatterNet + linear on Fashion-MNIST at epsilon 3: Poisson batches of
    # 8192, SGD lr 16 with momentum 0.9, clip 0.1, 40 epochs, plus an EMA of 0.99
    # (experiments/dp_scatternet.py runs the same steps on features computed once)
    "dp_scatternet": {
        "model": "scatternet_linear", "dataset": "fashion_mnist", "epochs": 40, "batch_size": 8192,
        "lr": 16.0, "optimizer": "sgd", "momentum": 0.9, "schedule": "constant", "weight_decay": 0.0,
        "label_smoothing": 0.0, "augment": "none", "dp_epsilon": 3.0, "dp_delta": 1e-5, "dp_clip": 0.1,
        "ema_decay": 0.99,
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
