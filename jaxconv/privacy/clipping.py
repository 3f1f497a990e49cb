"""Per-example clipping (Abadi et al. 2016): the sum over examples of each example's gradient
scaled to L2 norm at most C,

    sum = sum_i g_i * min(1, C / ||g_i||)

from stacked per-example gradients (`clip_per_example`), from any per-example loss without
storing N gradients (`clipped_grad_sum`), or from a net's taps without per-example gradients
at all (`ghost_clipped_grad_sum`: ghost norms and book-keeping, Bu et al. 2022 and 2023).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxconv.core import Key, Layer, Params, PyTree, State
from jaxconv.losses import cross_entropy
from jaxconv.per_example import LossFn, NetLoss, Strategy, choose_strategy, example_keys, map_examples
from jaxconv.per_example.taps import OutputLoss, bookkeeping_pass, norms_pass, squared_norms, weighted_sum


def check_clip(l2_norm_clip: float) -> None:
    """Refuse a non-positive clip norm given as a number (a traced one is the caller's to check)."""
    if isinstance(l2_norm_clip, int | float) and not l2_norm_clip > 0:
        raise ValueError(f"l2_norm_clip={l2_norm_clip} must be positive: the largest per-example norm")


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
    check_clip(l2_norm_clip)
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
    check_clip(l2_norm_clip)
    chosen = choose_strategy(loss_fn, strategy, chunk_size, extra=("ghost",))
    if chosen in ("einsum", "ghost"):
        return ghost_clipped_grad_sum(
            loss_fn.net,
            l2_norm_clip,
            loss_fn.loss,
            train=loss_fn.train,
            bookkeeping=chosen == "einsum",
            copies=loss_fn.copies,
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


def ghost_clipped_grad_sum(
    net: Layer,
    l2_norm_clip: float,
    loss: OutputLoss | None = None,
    *,
    train: bool = True,
    bookkeeping: bool = True,
    copies: int = 1,
) -> Callable[..., tuple[Params, jax.Array]]:
    """``fn(params, state, x, y, key=None, mask=None) -> (clipped_sum, norms)`` by ghost clipping.

    Equal to `clipped_grad_sum` of ``net_loss(net, loss, train=train)`` (same keys
    per example): the sum over examples of each gradient scaled by
    ``min(1, C / norm_i)``, and the unclipped norms (N,). ``mask`` (N,) leaves
    out padded rows. The norms come from each Conv's and Dense's inputs and
    output gradients (`jaxconv.per_example.taps`). ``bookkeeping=True`` forms the
    sum from the pass that gave the norms (one forward, one backward: fastest);
    ``False`` runs a norms-only pass and a second backward pass (least memory).
    ``copies=K``: x is (N, K, H, W, C), each example's K augmented copies, and its
    gradient the mean over them (augmentation multiplicity), clipped as one.
    """
    check_clip(l2_norm_clip)
    loss = loss or cross_entropy
    taps_pass = bookkeeping_pass(net, loss, train, copies)
    only_norms_pass = norms_pass(net, loss, train, copies)

    def fn(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None, mask=None):
        if bookkeeping:
            taps = taps_pass(params, state, x, y, key)
            squared = squared_norms(taps, params)
        else:
            squared = only_norms_pass(params, state, x, y, key)
        norms = jnp.sqrt(sum(squared.values()))
        weights = clip_factors(norms, l2_norm_clip)
        if mask is not None:
            weights = weights * jnp.asarray(mask, weights.dtype)
        if bookkeeping:
            return weighted_sum(taps, params, weights), norms
        example_loss = NetLoss(net, loss, train, copies)
        return _weighted_loss_grad(example_loss, params, state, x, y, key, weights), norms

    return fn


def _weighted_loss_grad(example_loss: NetLoss, params, state, x, y, key, weights) -> Params:
    """The second backward pass of ghost clipping: the gradient of ``sum_i weights_i * loss_i``,
    x (N, ...), y (N, ...) and weights (N,), each example alone with key ``fold_in(key, i)``.

    Its input is made to depend on the weights (``+ 0 * w``) so that XLA runs this pass after
    the first instead of holding both passes' activations at once.
    """
    x = x + 0 * weights[0].astype(x.dtype)

    def weighted_loss(params):
        losses = jax.vmap(example_loss, in_axes=(None, None, 0, 0, 0))(
            params, state, x[:, None], y[:, None], example_keys(key, x.shape[0])
        )
        return jnp.sum(lax.stop_gradient(weights) * losses)

    return jax.grad(weighted_loss)(params)
