"""Batch sampling for DP-SGD: Poisson sampling (what the accountant assumes) and shuffling.

Under Poisson sampling each example joins each batch independently with
probability q, so batch sizes vary. To keep one compiled train step, every
batch is padded to a fixed ``max_batch_size`` and comes with a mask of its real
rows: zero the padded rows' gradients (``dp_aggregate(...).update(..., mask=)``
or `clipped_grad_sum`'s ``mask``) and divide by the expected batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxconv.core import Key


class Batch(NamedTuple):
    """Indices (B,) into the dataset and a mask (B,) that is False on padding rows."""

    indices: jax.Array
    mask: jax.Array


def poisson_batch(
    key: Key, num_examples: int, sampling_rate: float, max_batch_size: int
) -> tuple[Batch, jax.Array]:
    """One Poisson-sampled batch padded to ``max_batch_size``, and its real size (jit-compatible).

    If more than ``max_batch_size`` examples are drawn the batch is cut short;
    `poisson_batches` checks the size and raises instead.
    """
    chosen = jax.random.bernoulli(key, sampling_rate, (num_examples,))
    (indices,) = jnp.nonzero(chosen, size=max_batch_size, fill_value=0)
    size = chosen.sum()
    return Batch(indices, jnp.arange(max_batch_size) < size), size


def padded_batch_size(num_examples: int, sampling_rate: float) -> int:
    """Rows to pad Poisson batches to: the expected size plus six standard deviations (overflow
    odds about 1e-9 a step)."""
    expected = num_examples * sampling_rate
    spread = math.sqrt(expected * (1 - sampling_rate))
    return min(num_examples, math.ceil(expected + 6 * spread) + 1)


def poisson_batches(
    num_examples: int,
    sampling_rate: float,
    key: Key,
    *,
    steps: int | None = None,
    max_batch_size: int | None = None,
) -> Iterator[Batch]:
    """``steps`` Poisson-sampled batches (default one epoch, ``round(1 / sampling_rate)``).

    Step t draws with ``fold_in(key, t)``. ``max_batch_size`` defaults to the
    expected size plus six standard deviations (overflow odds about 1e-9 a
    step); a batch that does not fit raises rather than silently dropping
    examples, which the accountant would not know about.
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"poisson_batches(sampling_rate={sampling_rate}): the rate must be in (0, 1]")
    expected = num_examples * sampling_rate
    if max_batch_size is None:
        max_batch_size = padded_batch_size(num_examples, sampling_rate)
    steps = round(1 / sampling_rate) if steps is None else steps
    draw = jax.jit(partial(poisson_batch, num_examples=num_examples, sampling_rate=sampling_rate,
                           max_batch_size=max_batch_size))  # fmt: skip
    for step in range(steps):
        batch, size = draw(jax.random.fold_in(key, step))
        if int(size) > max_batch_size:
            raise ValueError(
                f"poisson_batches: step {step} drew {int(size)} examples but max_batch_size is "
                f"{max_batch_size} (expected {expected:.1f}); give a larger max_batch_size"
            )
        yield batch


def shuffled_batches(
    num_examples: int, batch_size: int, key: Key, *, steps: int | None = None
) -> Iterator[Batch]:
    """``steps`` fixed-size batches from a fresh permutation every epoch (default one epoch).

    The remainder of each epoch (``num_examples % batch_size`` examples) is
    dropped; the mask is all True, so the train step is the same as with
    `poisson_batches`.
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"shuffled_batches(batch_size={batch_size}) must be in [1, {num_examples}]")
    per_epoch = num_examples // batch_size
    steps = per_epoch if steps is None else steps
    mask = jnp.ones(batch_size, bool)
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
        yield Batch(order[position * batch_size : (position + 1) * batch_size], mask)
