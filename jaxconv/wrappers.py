"""Layers that wrap one layer, and the net rewriting that applies them to a net's blocks.

`remat` trades compute for memory with rematerialisation. A train step keeps
every layer's activations from the forward pass for the backward pass; a
wrapped layer keeps only its inputs and recomputes its inside during the
backward pass. `remat_blocks` does that for every block of a net (residual
blocks, Inception modules, DenseNet layers), so the memory for activations
falls from one per layer to about one per block plus one block's worth, for
about one more forward pass of compute (Chen et al. 2016, "Training Deep Nets
with Sublinear Memory Cost").

>>> import jax, jaxconv as jc
>>> from jaxconv.wrappers import remat_blocks
>>> net = remat_blocks(jc.models.get("resnet20"))
>>> shape, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))

Values and gradients are those of the plain net; params and state have the
same keys, so the two can share weights and checkpoints.

`mixed_precision` computes in bfloat16 (or float16) with float32 master weights
(Micikevicius et al. 2018, "Mixed Precision Training"), around any layer, a
whole net or chosen sub-layers:

- params stay float32 in the caller's hands (the master weights); inside
  ``apply`` a bfloat16 copy is used, so the gradients come back float32 and the
  optimiser updates float32 weights;
- inputs are cast to the compute dtype, so every convolution and matrix
  multiply runs in it;
- normalisation computes its statistics in float32 whatever its input (see
  `jaxconv.layers.norm`), and the state (BatchNorm's running statistics) stays
  float32, so a train step's state keeps its dtype and never recompiles;
- outputs come back as ``output_dtype`` (float32 by default), so the loss, the
  softmax and the logits' gradient are float32.

>>> import jax.numpy as jnp
>>> from jaxconv.wrappers import mixed_precision
>>> net = mixed_precision(jc.serial(jc.Conv(8, 3), jc.BatchNorm(), jc.Relu, jc.Flatten, jc.Dense(10)))
>>> _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 3))
>>> logits, state = net.apply(params, state, jnp.ones((2, 8, 8, 3)), train=True)
>>> logits.dtype, state["batchnorm_1"]["mean"].dtype, params["conv_0"]["kernel"].dtype
(dtype('float32'), dtype('float32'), dtype('float32'))

bfloat16 is the supported path: it has float32's exponent range, so gradients
neither underflow nor overflow and no loss scaling is needed. float16 works
the same way but its gradients underflow below 6e-8; train in float16 only with
a loss scale (multiply the loss by e.g. 2**12 before `jax.grad`, divide the
gradients by it after), or prefer bfloat16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.combinators import parallel, serial
from jaxconv.core import Layer, LayerPath, PyTree, info, named, redescribed
from jaxconv.traits import Traits

Policy = Callable[..., bool]  # a jax.checkpoint_policies entry
DTypeLike = Any  # jnp.bfloat16, 'bfloat16', np.dtype(...)

# --- rematerialisation ----------------------------------------------------------------------------


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

    traits = dataclasses.replace(info(net).traits or Traits(), opaque=True)
    return redescribed(net, apply, spec={**info(net).spec, "remat": True}, traits=traits)


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


# --- mixed precision ------------------------------------------------------------------------------


def mixed_precision(
    net: Layer, compute_dtype: DTypeLike = jnp.bfloat16, output_dtype: DTypeLike | None = jnp.float32
) -> Layer:
    """``net`` computing in ``compute_dtype`` with float32 params and state, returning ``output_dtype``.

    Inside ``apply`` the floating-point params and inputs are cast to
    ``compute_dtype`` (integer inputs such as uint8 pixels are left to the
    layers, which convert them to their params' dtype); the new state is
    returned in at least float32; floating outputs are cast to ``output_dtype``
    (None leaves them in ``compute_dtype``, to chain low-precision parts).
    Gradients with respect to the params are float32, since the cast happens
    inside ``apply``. ``init``, params, state and the description (kind,
    children, name) are ``net``'s, with the dtypes added to its spec.

    Shapes are ``net``'s: e.g. (N, H, W, C) -> (N, classes).
    """
    compute = _floating_dtype("compute_dtype", compute_dtype)
    output = None if output_dtype is None else _floating_dtype("output_dtype", output_dtype)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = net.apply(cast(params, compute), state, cast(x, compute), key=key, train=train)
        new_state = jax.tree.map(
            lambda leaf: _cast_leaf(leaf, jnp.promote_types(leaf.dtype, jnp.float32)), new_state
        )
        return (y if output is None else cast(y, output)), new_state

    spec = {**info(net).spec, "dtype": compute.name, "output_dtype": output and output.name}
    return redescribed(net, apply, spec=spec)


def cast(tree: PyTree, dtype: DTypeLike) -> PyTree:
    """Every floating-point array of ``tree`` in ``dtype``; integer and boolean leaves unchanged."""
    return jax.tree.map(lambda leaf: _cast_leaf(leaf, dtype), tree)


def _cast_leaf(leaf: Any, dtype: DTypeLike) -> Any:
    leaf = jnp.asarray(leaf)
    return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def _floating_dtype(argument: str, dtype: DTypeLike) -> jnp.dtype:
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(
            f"{argument}={dtype!r} is not a dtype; use jnp.bfloat16, jnp.float16 or jnp.float32"
        ) from error
    if not jnp.issubdtype(resolved, jnp.floating):
        raise ValueError(
            f"{argument}={resolved.name} is not a floating-point dtype; "
            "use jnp.bfloat16, jnp.float16 or jnp.float32"
        )
    return resolved


# --- rewriting a net: wrapping its blocks ---------------------------------------------------------

Replace = Callable[[LayerPath, Layer], "Layer | None"]
"""``replace(path, layer)``: the layer to put in ``layer``'s place, or None to keep it (and look
inside it)."""

_REBUILD: dict[str, Callable[..., Layer]] = {"Serial": serial, "Parallel": parallel}


def rewrite(net: Layer, replace: Replace, path: LayerPath = ()) -> Layer:
    """``net`` with every layer for which ``replace(path, layer)`` gives a layer replaced by it.

    Visits the layers in the order they run, parents before children (the net
    itself at ``()``), and looks inside plain `serial` and `parallel` layers
    only: it rebuilds them with the same child names and name, so params and
    state keep their keys. A wrapped serial (`remat`, `mixed_precision`: its
    spec is not empty) and every other layer are kept whole unless replaced.
    """
    replacement = replace(path, net)
    if replacement is not None:
        return replacement
    description = info(net)
    if description.kind not in _REBUILD or description.spec:
        return net
    children = [named(name, rewrite(child, replace, (*path, name))) for name, child in description.children]
    rebuilt = _REBUILD[description.kind](*children)
    return named(description.name, rebuilt) if description.name else rebuilt


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

    Walks the net through `serial` and `parallel` layers (`rewrite`), so params
    and state keep their keys; a block is wrapped whole, its inside untouched.
    Raises ValueError when the net has no block reachable that way (wrap the
    whole net with `remat` instead).
    """
    found: list[str] = []
    rebuilt = _wrap_blocks(net, policy, block, found)
    if not found:
        kinds = sorted({info(child).kind for _, child in info(net).children} or {info(net).kind})
        raise ValueError(
            f"remat_blocks: found no block in a {info(net).kind} of {', '.join(kinds)} (blocks are "
            "residual blocks and fan_out branches reached through serial/parallel); use remat(net) "
            "for the whole net or pass block=... to choose layers"
        )
    return rebuilt


def block_paths(net: Layer, block: Callable[[Layer], bool] = is_block) -> list[str]:
    """The paths (``'net/stage1/block0'``) of the blocks `remat_blocks` would wrap."""
    found: list[str] = []
    _wrap_blocks(net, None, block, found)
    return found


def _wrap_blocks(
    net: Layer, policy: Policy | None, block: Callable[[Layer], bool], found: list[str]
) -> Layer:
    """``net`` with its blocks in `remat`; the path of each block is added to ``found``."""

    def replace(path: LayerPath, layer: Layer) -> Layer | None:
        if not block(layer):
            return None
        found.append("/".join(("net", *path)))
        return remat(layer, policy)

    return rewrite(net, replace)


__all__ = ["block_paths", "cast", "is_block", "mixed_precision", "remat", "remat_blocks", "rewrite"]
