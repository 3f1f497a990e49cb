"""Rematerialisation: trade compute for memory with `jax.checkpoint`.

A train step keeps every layer's activations from the forward pass for the
backward pass. `remat` wraps a layer so that only its inputs are kept and its
inside is recomputed during the backward pass; `remat_blocks` does that for
every block of a net (residual blocks, Inception modules, DenseNet layers), so
the memory for activations falls from one per layer to about one per block
plus one block's worth, for about one more forward pass of compute (Chen et
al. 2016, "Training Deep Nets with Sublinear Memory Cost").

>>> import jax, jaxconv as jc
>>> from jaxconv.remat import remat_blocks
>>> net = remat_blocks(jc.models.get("resnet20"))
>>> shape, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))

Values and gradients are those of the plain net; params and state have the
same keys, so the two can share weights and checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.combinators import parallel, serial
from jaxconv.core import Layer, LayerInfo, info, named, redescribed

Policy = Callable[..., bool]  # a jax.checkpoint_policies entry


def remat(net: Layer, policy: Policy | None = None) -> Layer:
    """``net`` whose activations are recomputed in the backward pass instead of stored.

    Only ``net``'s inputs (params, state, ``x``, ``key``) are kept for the
    backward pass, which runs ``net`` again (with the same key, so Dropout draws
    the same mask) and then its backward. ``train`` is static (a Python bool).
    Values and gradients equal the plain net's.

    With ``policy`` None, the recomputation is a `jax.custom_vjp` whose backward
    reads the incoming cotangent before recomputing: that data dependency makes
    every backend recompute late, where the memory is saved. (`jax.checkpoint`
    relies on an optimisation barrier that XLA's CPU compiler removes before
    common-subexpression elimination, which then merges the recomputation back
    into the forward pass and saves nothing on CPU.) Like any `custom_vjp`, it
    supports reverse mode (`jax.grad`, `vmap` of it) but not forward mode
    (`jax.jvp`, Hessian-vector products).

    A ``policy`` (e.g. ``jax.checkpoint_policies.dots_saveable``: keep the
    convolutions' outputs, recompute the rest) runs ``net`` under
    ``jax.checkpoint(policy=policy)`` instead, effective on GPU and TPU.

    ``init`` and the description are ``net``'s, with ``remat=True`` added to
    its spec. Shapes are ``net``'s.
    """

    def apply(params, state, x, *, key=None, train=False):
        def run(params, state, x, key):
            return net.apply(params, state, x, key=key, train=train)

        rematerialised = _recompute_in_backward(run) if policy is None else jax.checkpoint(run, policy=policy)
        return rematerialised(params, state, x, key)

    return redescribed(net, apply, spec={**info(net).spec, "remat": True})


def _recompute_in_backward(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run(params, state, x, key)`` that keeps only its inputs and recomputes itself in the backward pass."""

    @jax.custom_vjp
    def recomputed(params, state, x, key):
        return run(params, state, x, key)

    def forward(params, state, x, key):
        return run(params, state, x, key), (params, state, x, key)

    def backward(inputs, cotangent):
        params, state, x, key = inputs
        # zero, computed from the cotangent: the recomputation can only start once the cotangent
        # exists, so the compiler can neither merge it with the forward pass nor schedule it early
        first = jax.tree.leaves(cotangent)[0].ravel()[0]
        zero = jnp.minimum(jnp.abs(first), 0)
        params, x = jax.tree.map(lambda leaf: _plus(leaf, zero), (params, x))
        _, pullback = jax.vjp(lambda p, s, x: run(p, s, x, key), params, state, x)
        return (*pullback(cotangent), None)

    recomputed.defvjp(forward, backward)
    return recomputed


def _plus(leaf: Any, zero: jax.Array) -> Any:
    return leaf + zero.astype(leaf.dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def is_block(net: Layer) -> bool:
    """Whether ``net`` is a block: a residual block, or a branching unit (``serial(fan_out(n), ...)``:
    an Inception module, a DenseNet layer)."""
    description = info(net)
    if description.kind == "Residual":
        return True
    children = description.children
    return description.kind == "Serial" and bool(children) and info(children[0][1]).kind == "FanOut"


def remat_blocks(
    net: Layer, policy: Policy | None = None, *, block: Callable[[Layer], bool] = is_block
) -> Layer:
    """``net`` with every block (``block(layer)`` true, by default `is_block`) wrapped in `remat`.

    Walks the net through `serial` and `parallel` layers and rebuilds them with
    the same child names, so params and state keep their keys; a block is
    wrapped whole, its inside untouched. Raises ValueError when the net has no
    block reachable that way (wrap the whole net with `remat` instead).
    """
    found: list[str] = []
    rebuilt = _rewrite(net, "net", policy, block, found)
    if not found:
        kinds = sorted({info(child).kind for _, child in info(net).children} or {info(net).kind})
        raise ValueError(
            f"remat_blocks: found no block in a {info(net).kind} of {', '.join(kinds)} (blocks are "
            "residual blocks and fan_out branches reached through serial/parallel); use remat(net) "
            "for the whole net or pass block=... to choose layers"
        )
    return rebuilt


_REBUILD: dict[str, Callable[..., Layer]] = {"Serial": serial, "Parallel": parallel}


def _rewrite(
    net: Layer, path: str, policy: Policy | None, block: Callable[[Layer], bool], found: list[str]
) -> Layer:
    description = info(net)
    if block(net):
        found.append(path)
        return remat(net, policy)
    if description.kind not in _REBUILD or description.spec:
        return net
    children = [
        named(name, _rewrite(child, f"{path}/{name}", policy, block, found))
        for name, child in description.children
    ]
    rebuilt = _REBUILD[description.kind](*children)
    return _renamed(rebuilt, description)


def _renamed(net: Layer, like: LayerInfo) -> Layer:
    return named(like.name, net) if like.name else net


def block_paths(net: Layer, block: Callable[[Layer], bool] = is_block) -> list[str]:
    """The paths (``'net/stage1/block0'``) of the blocks `remat_blocks` would wrap."""
    found: list[str] = []
    _rewrite(net, "net", None, block, found)
    return found


__all__ = ["block_paths", "is_block", "remat", "remat_blocks"]
