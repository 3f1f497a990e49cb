"""A finished (or paused) run read back: its configuration, net, data and trained weights.

trained = restore("runs/first")
logits, _ = trained.net.apply(trained.params, trained.state, trained.preprocess(images))
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np

from jaxconv import models
from jaxconv.core import Layer, Params, State
from jaxconv.data import Dataset, load, normalize
from jaxconv.data.datasets import FOLDER
from jaxconv.runs.config import TrainConfig, optimizer_for
from jaxconv.runs.directory import Run
from jaxconv.train import init_train_state

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Trained:
    """A run's net with the weights of its checkpoint, and the data it was trained and tested on."""

    run: Run
    config: TrainConfig
    net: Layer
    params: Params
    state: State
    train_data: Dataset
    test_data: Dataset

    def preprocess(self, images: np.ndarray) -> jax.Array:
        """(N, H, W, C) uint8 images normalised as in training (the training set's mean and std)."""
        return normalize(images, self.train_data.mean, self.train_data.std)


def restore(
    run_dir: PathLike, *, data_root: PathLike | None = None, split: str = "test", action: str = "restore"
) -> Trained:
    """The run in ``run_dir`` with its checkpoint's weights; ``test_data`` is ``split`` of its dataset.
    A directory without a finished epoch is a `RunDirError` that says what could not ``action``."""
    run = Run(run_dir)
    run.require_saved(action)
    config = run.saved_config()
    train_data = load_split(config, "train", data_root)
    data = train_data if split == "train" else load_split(config, split, data_root)
    net = models.get(config.model, num_classes=train_data.num_classes)
    optimizer = optimizer_for(config, max(len(train_data) // config.batch_size, 1))
    template = init_train_state(net, optimizer, (-1, *data.images.shape[1:]), jax.random.key(config.seed))
    train_state, _ = run.load(like=template)
    return Trained(run, config, net, train_state.params, train_state.state, train_data, data)


def load_split(config: TrainConfig, split: str, data_root: PathLike | None) -> Dataset:
    """One split of the run's data set, the model's name checked first; an image folder's images
    are sized to the model's input."""
    spec = models.spec(config.model)
    options = {"image_size": spec.input_size} if config.dataset == FOLDER else {}
    return load(config.dataset, split, root=data_root, **options)
