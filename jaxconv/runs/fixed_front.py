"""A net's fixed front, computed once per example instead of at every step.

When a net is a `serial` whose first layer is a fixed feature extractor (``Traits.fixed``: no
parameters, state or randomness, such as `jaxconv.Scattering`) and training changes no image
(no augmentation, mixing or test-time views), that layer's output on each training and test
image is the same at every step. `fit` then computes it once (`compute_once`) and trains the
rest of the net on the outputs: the same steps and weights, without the front's cost at each
step (the scattering transform of `scatternet_linear` is about 95% of a DP-SGD step on CPU).
The rest keeps the net's parameter names, so its checkpoints are the whole net's.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxconv.combinators import Identity, serial
from jaxconv.core import UNKNOWN, Layer, info
from jaxconv.data import Dataset, normalize
from jaxconv.runs.config import TrainConfig
from jaxconv.traits import Traits

MAX_BYTES = 4 << 30  # the two splits' outputs held in host memory at most; above, each step computes them
IMAGES_PER_CALL = 1024  # of the front, computing its outputs


def split(net: Layer) -> tuple[Layer, Layer] | None:
    """``(front, rest)`` for a `serial` whose first layer is fixed, ``rest`` the serial with the
    identity in its place (so the same parameter names); None for any other net."""
    description = info(net)
    if description.kind != "Serial" or len(description.children) < 2:
        return None
    (_, front), *rest = description.children
    if not (info(front).traits or Traits()).fixed:
        return None
    return front, serial(Identity, *(child for _, child in rest))


def compute_once(
    net: Layer, train_data: Dataset, test_data: Dataset, config: TrainConfig
) -> tuple[Layer, Dataset, Dataset]:
    """``(rest, train outputs, test outputs)`` where `split` finds a fixed front, the config
    changes no image and the outputs fit in `MAX_BYTES`; else the arguments unchanged."""
    parts = split(net)
    if parts is None or not _images_unchanged(config, train_data, test_data):
        return net, train_data, test_data
    front, rest = parts
    output_shape = front.init(None, (UNKNOWN, *train_data.images.shape[1:]))[0]  # nothing to draw
    if (len(train_data) + len(test_data)) * int(np.prod(output_shape[1:])) * 4 > MAX_BYTES:
        return net, train_data, test_data
    return rest, outputs(front, train_data), outputs(front, test_data)


def outputs(front: Layer, data: Dataset) -> Dataset:
    """``data`` with each image replaced by ``front``'s float32 output on it, normalised first as
    `fit` normalises images; mean 0 and std 1, so that `fit` takes the outputs as they are.

    Shapes: images (N, H, W, C) -> (N, *front's output shape)."""
    _, params, state = front.init(None, (UNKNOWN, *data.images.shape[1:]))

    @jax.jit
    def apply(images: jax.Array) -> jax.Array:
        return front.apply(params, state, normalize(images, data.mean, data.std))[0]

    chunks = [
        np.asarray(apply(data.images[start : start + IMAGES_PER_CALL]))
        for start in range(0, len(data), IMAGES_PER_CALL)
    ]
    values = np.concatenate(chunks).astype(np.float32, copy=False)  # no second copy of the outputs
    channels = values.shape[-1]
    return dataclasses.replace(data, images=values, mean=(0.0,) * channels, std=(1.0,) * channels)


def _images_unchanged(config: TrainConfig, train_data: Dataset, test_data: Dataset) -> bool:
    """Whether training and evaluation see each image as it is: in-memory data sets, no
    augmentation (nor augmult), no mixing, no test-time views."""
    augmentation, views = config.augmentation, config.test_augmentation
    return (
        isinstance(train_data, Dataset)
        and isinstance(test_data, Dataset)
        and not (augmentation.crop_padding or augmentation.flip)
        and not (views.crop_padding or views.flip)
        and config.mix == "none"
    )
