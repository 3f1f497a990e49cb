"""Pieces the JAX contestants share: the loss, the optimiser, the batches, a carried train loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from workloads import LEARNING_RATE, MOMENTUM, Workload, synthetic_batch


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of (N, K) logits against (N,) integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def sgd() -> optax.GradientTransformation:
    """SGD with momentum, the optimiser of every contestant."""
    return optax.sgd(LEARNING_RATE, momentum=MOMENTUM)


def batches(workload: Workload, channels_first: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """On the device: training images (N, H, W, C) and labels (N,), inference images.

    ``channels_first``: images as (N, C, H, W), for frameworks whose convolutions default to it.
    """
    images, labels = synthetic_batch(workload, workload.train_batch)
    infer_images, _ = synthetic_batch(workload, workload.infer_batch, seed=1)
    if channels_first:
        images, infer_images = images.transpose(0, 3, 1, 2), infer_images.transpose(0, 3, 1, 2)
    return jnp.asarray(images), jnp.asarray(labels), jnp.asarray(infer_images)


def carried(
    step: Callable[..., tuple[Any, Any]], carry: Any, *args: Any
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``train_step()`` running ``carry, loss = step(carry, *args)``, and ``current()`` giving the carry."""
    box = [carry]

    def train_step() -> Any:
        box[0], loss = step(box[0], *args)
        return loss

    return train_step, lambda: box[0]


def count(tree: Any) -> int:
    """The number of values in a pytree of arrays."""
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))
