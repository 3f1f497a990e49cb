"""The classification loss and metrics every training path shares.

Logits are (N, K) and labels (N,) integer classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]

TOP_K = 5


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy of (N, K) ``logits`` against (N,) integer ``labels``.

    With ``label_smoothing`` = a, the target is ``(1 - a) * one_hot + a / K``
    (Szegedy et al. 2016). ``label_smoothing`` may be a traced scalar (a grid of values under
    ``vmap``).
    """
    if isinstance(label_smoothing, int | float) and not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def correct(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
    """(N,) bools: whether each label is among the ``k`` largest of its (N, K) logits."""
    k = min(k, logits.shape[-1])
    if k == 1:
        return jnp.argmax(logits, -1) == labels
    _, top = jax.lax.top_k(logits, k)  # (N, k)
    return jnp.any(top == labels[:, None], axis=-1)


def accuracies(logits: jax.Array, labels: jax.Array, reduce: Callable[..., Any]) -> Metrics:
    """``top1`` and ``top5``: ``reduce`` (a mean or a sum over the batch) of the correct flags."""
    return {
        "top1": reduce(correct(logits, labels, 1).astype(jnp.float32)),
        f"top{TOP_K}": reduce(correct(logits, labels, TOP_K).astype(jnp.float32)),
    }


__all__ = ["TOP_K", "Metrics", "accuracies", "correct", "cross_entropy"]
