"""Per-example clipping and the Gaussian mechanism of DP-SGD (Abadi et al. 2016).

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

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv.core import Key, Params, PyTree, State
from jaxconv.per_example import LossFn, Strategy, choose_strategy, map_examples


def clip_factors(norms: jax.Array, l2_norm_clip: float) -> jax.Array:
    """``min(1, C / norm)`` per example: the factor that brings a gradient's norm to at most C."""
    return l2_norm_clip / jnp.maximum(norms, l2_norm_clip)


def clip_per_example(grads: Params, l2_norm_clip: float, mask: jax.Array | None = None) -> Params:
    """The sum over examples of per-example gradients clipped to L2 norm ``l2_norm_clip``.

    ``grads`` has leaves with a leading example axis N (from `per_example_grads`);
    the norm is each example's global norm over all leaves. ``mask`` (N,) of
    bools or 0/1 leaves out padded rows. Returns a pytree like one example's
    gradient.
    """
    _check_clip(l2_norm_clip)
    norms = jax.vmap(optax.tree.norm)(grads)
    weights = clip_factors(norms, l2_norm_clip)
    if mask is not None:
        weights = weights * mask
    return jax.tree.map(lambda leaf: jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1), grads)


def clipped_grad_sum(
    loss_fn: LossFn,
    l2_norm_clip: float,
    *,
    strategy: Strategy | Literal["ghost"] = "auto",
    chunk_size: int | None = None,
) -> Callable[..., tuple[Params, jax.Array]]:
    """``fn(params, state, x, y, key=None, mask=None) -> (clipped_sum, norms)`` without storing N gradients.

    The sum over examples of each example's gradient times ``min(1, C / norm_i)``
    (C = ``l2_norm_clip``), and the unclipped per-example norms (N,);
    masked-out examples add nothing. See `jaxconv.per_example` for ``loss_fn``,
    the keys and the strategies:

    - ``'loop'`` and ``'chunked'``: each example's gradient is clipped as soon as
      it is computed and added to a running sum (only a chunk's gradients exist
      at once); ``'vmap'`` computes all N at once;
    - ``'einsum'`` (a `net_loss` loss): one forward and one backward pass, the
      norms from patches and output gradients, the sum by book-keeping (Bu et al.
      2023), `ghost_clipped_grad_sum`;
    - ``'ghost'``: the same norms, then a second backward pass of the weighted
      loss (Bu et al. 2022);
    - ``'auto'``: ``'einsum'`` for a `net_loss` loss, else as `per_example_grads`.
    """
    _check_clip(l2_norm_clip)
    chosen = choose_strategy(loss_fn, strategy, chunk_size, extra=("ghost",))
    if chosen in ("einsum", "ghost"):
        from jaxconv.privacy.ghost import ghost_clipped_grad_sum  # ghost imports this module

        return ghost_clipped_grad_sum(
            loss_fn.net, l2_norm_clip, loss_fn.loss, train=loss_fn.train, bookkeeping=chosen == "einsum"
        )
    grad_fn = jax.grad(loss_fn)

    def one_example(params, state, x, labels_and_mask, key):
        labels, mask = labels_and_mask
        grads = grad_fn(params, state, x, labels, key)
        norm = optax.tree.norm(grads)
        weight = clip_factors(norm, l2_norm_clip) * mask[0]
        return jax.tree.map(lambda leaf: leaf * weight.astype(leaf.dtype), grads), norm

    mapped = map_examples(one_example, strategy=chosen, chunk_size=chunk_size)

    def fn(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None, mask=None):
        mask = jnp.ones(jax.tree.leaves(x)[0].shape[0]) if mask is None else jnp.asarray(mask)
        return mapped(params, state, x, (y, mask.astype(jnp.float32)), key)

    return fn


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
    _check_clip(l2_norm_clip)
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
            if mask is not None and batch_size is None:
                raise ValueError(
                    "dp_aggregate got a mask (a padded Poisson batch) but no batch_size: give "
                    "batch_size=sampling_rate * num_examples, the expected batch size"
                )
            clipped, rows = (
                clip_per_example(updates, l2_norm_clip, mask),
                jax.tree.leaves(updates)[0].shape[0],
            )
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


def _check_clip(l2_norm_clip: float) -> None:
    """Refuse a non-positive clip norm given as a number (a traced one is the caller's to check)."""
    if isinstance(l2_norm_clip, int | float) and not l2_norm_clip > 0:
        raise ValueError(f"l2_norm_clip={l2_norm_clip} must be positive: the largest per-example norm")
