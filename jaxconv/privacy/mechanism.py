"""The Gaussian mechanism of DP-SGD (Abadi et al. 2016).

One DP-SGD step on a batch of B examples (B the expected batch size under
Poisson sampling):

    g_i   = gradient of example i's loss
    sum   = sum_i g_i * min(1, C / ||g_i||)            # each example's norm at most C
    noisy = (sum + N(0, (sigma * C)^2 I)) / B          # sigma: the noise multiplier

`dp_aggregate` is that step as an Optax transformation, the first of a chain;
``optax.contrib.differentially_private_aggregate`` follows the same convention
(noise std ``noise_multiplier * l2_norm_clip``, division by the number of rows)
but cannot mask padded rows or divide by an expected batch size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv.core import Key, Params
from jaxconv.privacy.clipping import check_clip, clip_per_example


def noisy_mean(
    clipped_sum: Params, key: Key, *, l2_norm_clip: float, noise_multiplier: float, batch_size: float
) -> Params:
    """``(clipped_sum + N(0, (noise_multiplier * l2_norm_clip)^2)) / batch_size``, noise per entry."""
    leaves, treedef = jax.tree.flatten(jax.tree.map(jnp.asarray, clipped_sum))
    sizes = [leaf.size for leaf in leaves]
    # one draw for the whole tree (one random-number kernel however many leaves), then split
    noise = noise_multiplier * l2_norm_clip * jax.random.normal(key, (sum(sizes),), jnp.float32)
    pieces = jnp.split(noise, np.cumsum(sizes)[:-1])
    noised = [
        (leaf + piece.reshape(leaf.shape).astype(leaf.dtype)) / batch_size
        for leaf, piece in zip(leaves, pieces, strict=True)
    ]
    return jax.tree.unflatten(treedef, noised)


class DPAggregateState(NamedTuple):
    """The noise key and the number of noisy steps taken (for the accountant)."""

    key: Key
    steps: jax.Array


def dp_aggregate(
    l2_norm_clip: float,
    noise_multiplier: float,
    key: Key | int,
    *,
    batch_size: float | None = None,
    summed: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """DP-SGD's clip, sum, noise and average as an Optax transformation; put it first in a chain.

    Its input ``updates`` are per-example gradients with a leading axis N (from
    `per_example_grads`), or with ``summed=True`` an already clipped sum (from
    `clipped_grad_sum` or `ghost_clipped_grad_sum`). ``update(..., mask=m)`` takes
    a (N,) mask of the real rows of a padded Poisson batch.

    The sum is divided by ``batch_size``: give the expected batch size
    ``sampling_rate * num_examples`` under Poisson sampling (the realised size
    is private, and dividing by it would leak it); left out, it is N, the
    number of rows, right for fixed-size shuffled batches.
    """
    check_clip(l2_norm_clip)
    if noise_multiplier < 0:
        raise ValueError(f"dp_aggregate(noise_multiplier={noise_multiplier}) must be >= 0")
    if summed and batch_size is None:
        raise ValueError("dp_aggregate(summed=True) needs batch_size (the expected batch size)")
    key = jax.random.key(key) if isinstance(key, int) else key

    def init(params: Params) -> DPAggregateState:
        del params
        return DPAggregateState(key, jnp.zeros((), jnp.int32))

    def update(updates, state: DPAggregateState, params=None, *, mask=None, **extra_args: Any):
        del params, extra_args
        if summed:
            clipped, rows = updates, None
        else:
            clipped, rows = _clip_rows(updates, l2_norm_clip, mask, batch_size)
        noise_key, next_key = jax.random.split(state.key)
        noisy = noisy_mean(
            clipped,
            noise_key,
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            batch_size=batch_size or rows,
        )
        return noisy, DPAggregateState(next_key, state.steps + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def dp_sgd(
    learning_rate: optax.ScalarOrSchedule,
    l2_norm_clip: float,
    noise_multiplier: float,
    key: Key | int,
    *,
    batch_size: float | None = None,
    summed: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """DP-SGD: `dp_aggregate` followed by SGD (with optional momentum), as one Optax optimiser."""
    return optax.chain(
        dp_aggregate(l2_norm_clip, noise_multiplier, key, batch_size=batch_size, summed=summed),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )


def _clip_rows(
    grads: Params, l2_norm_clip: float, mask: jax.Array | None, batch_size: float | None
) -> tuple[Params, int]:
    """The clipped sum of per-example gradients (leaves (N, ...)) and their number of rows N."""
    if mask is not None and batch_size is None:
        raise ValueError(
            "dp_aggregate got a mask (a padded Poisson batch) but no batch_size: give "
            "batch_size=sampling_rate * num_examples, the expected batch size"
        )
    return clip_per_example(grads, l2_norm_clip, mask), jax.tree.leaves(grads)[0].shape[0]
