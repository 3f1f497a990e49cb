"""Clipped gradient sums without per-example gradients: ghost clipping and book-keeping.

For a layer ``y = x @ W`` applied at T positions (T = 1 for Dense, the output
positions for a convolution, with x the im2col patches), example i's weight
gradient is ``G_i = sum_t a_t g_t^T`` with a_t the layer's input patch and g_t
the gradient of the example's loss at output t. Its squared norm is either

    ghost norm:  sum_{s,t} (a_s . a_t)(g_s . g_t)     cost ~ T^2 (d + K), no d x K matrix
    direct:      ||sum_t a_t g_t^T||^2                 cost ~ T d K

(d the patch size, K the outputs); like the paper's mixed ghost norm (Bu et al.
2022, "Scalable and Efficient Training of Large CNNs with Differential
Privacy"), each layer takes the ghost norm when ``2 T^2 < d K``. The bias
gradient is ``sum_t g_t``. With the clip factors ``c_i = min(1, C / norm_i)``
the clipped sum comes one of two ways:

- book-keeping (Bu et al. 2023, "Differentially Private Optimization on Large
  Model at Small Cost"), the default and the fastest: one forward and backward
  pass, vmapped over the examples, keeps each Conv's and Dense's input and
  output gradient per example (the gradient of a zero "probe" added to the
  output); after the norms, ``sum_i c_i G_i`` is the layer's weight gradient at
  the output gradients scaled by ``c_i`` (or the weighted sum of the
  per-example gradients the direct norm formed): no second backward pass, but
  every layer's output gradient is held at once;
- ghost clipping in two passes (``bookkeeping=False``), the leanest in memory:
  a backward pass whose tapped layers turn their output gradient into the
  example's squared norm on the spot (a `jax.custom_vjp`), so no output
  gradient outlives its layer, then an ordinary backward pass of
  ``sum_i c_i * loss_i``.

Nets are walked through `serial` and `residual`; Conv (``groups=1``, default
layout) and Dense layers are handled as above, and every other parameter
(GroupNorm's scale, a layer inside another combinator) gets its per-example
gradient from `jax.vmap` in the same pass, exact but materialised.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv.core import Key, Layer, Params, PyTree, State, info, split_key
from jaxconv.losses import cross_entropy
from jaxconv.per_example import example_keys
from jaxconv.privacy.clipping import _check_clip, clip_factors
from jaxconv.sizing import per_axis, slide

Path = tuple[str, ...]
OutputLoss = Callable[[jax.Array, jax.Array], jax.Array]
Hook = Callable[[Path, Layer, jax.Array, jax.Array], tuple[jax.Array, jax.Array | None]]


def ghost_grad_norms(
    net: Layer, loss: OutputLoss | None = None, *, train: bool = True
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``norms(params, state, x, y, key=None) -> (global_norms, layer_norms)`` by ghost norms.

    The same quantities as `jaxconv.per_example.per_example_grad_norms` of
    ``net_loss(net, loss, train=train)``: (N,) global norms and a dict from layer
    path to (N,) norms; each example runs alone with key ``fold_in(key, i)``.
    ``loss(outputs, labels)`` (default: softmax cross-entropy) sees one example
    with its batch axis of one. No layer's output gradient outlives its layer.
    """
    norms_pass = _norms_pass(net, loss or cross_entropy, train)

    def norms(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        squared = norms_pass(params, state, x, y, key)
        return jnp.sqrt(sum(squared.values())), {name: jnp.sqrt(value) for name, value in squared.items()}

    return norms


def ghost_clipped_grad_sum(
    net: Layer,
    l2_norm_clip: float,
    loss: OutputLoss | None = None,
    *,
    train: bool = True,
    bookkeeping: bool = True,
) -> Callable[..., tuple[Params, jax.Array]]:
    """``fn(params, state, x, y, key=None, mask=None) -> (clipped_sum, norms)`` by ghost clipping.

    Equal to `jaxconv.privacy.clipped_grad_sum` of ``net_loss(net, loss, train=train)``
    (same keys per example): the sum over examples of each gradient scaled by
    ``min(1, C / norm_i)``, and the unclipped norms (N,). ``mask`` (N,) leaves
    out padded rows. ``bookkeeping=True`` forms the sum from the pass that gave
    the norms (one forward, one backward: fastest); ``False`` runs a
    norms-only pass and a second backward pass (least memory).
    """
    _check_clip(l2_norm_clip)
    loss = loss or cross_entropy
    taps_pass, norms_pass = _bookkeeping_pass(net, loss, train), _norms_pass(net, loss, train)

    def fn(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None, mask=None):
        if bookkeeping:
            taps = taps_pass(params, state, x, y, key)
            squared = _layer_squared_norms(taps, params)
        else:
            squared = norms_pass(params, state, x, y, key)
        norms = jnp.sqrt(sum(squared.values()))
        weights = clip_factors(norms, l2_norm_clip)
        if mask is not None:
            weights = weights * jnp.asarray(mask, weights.dtype)
        if bookkeeping:
            return _weighted_sum(taps, params, weights), norms
        return _weighted_loss_grad(net, loss, train, params, state, x, y, key, weights), norms

    return fn


def tapped_per_example_grads(
    net: Layer, loss: OutputLoss | None = None, *, train: bool = True
) -> Callable[..., Params]:
    """``grads(params, state, x, y, key=None)``: per-example gradients (N, *leaf.shape) from patches.

    The same numbers as `jaxconv.per_example.per_example_grads` of ``net_loss(net,
    loss, train=train)``; Conv and Dense weight gradients are einsums of each
    example's input patches and output gradients (Opacus' method), not vmapped
    weight gradients.
    """
    taps_pass = _bookkeeping_pass(net, loss or cross_entropy, train)

    def grads(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None) -> Params:
        taps = taps_pass(params, state, x, y, key)
        leaves = dict(taps.rest_grads)
        for path, tap in taps.layers.items():
            layer_params = _subtree(params, path)
            kernel = tap.kernel_grads if tap.kernel_grads is not None else _kernel_grads(tap)
            leaves[(*path, "kernel")] = kernel.reshape(-1, *layer_params["kernel"].shape)
            if "bias" in layer_params:
                leaves[(*path, "bias")] = _positions_sum(tap.output_grads)
        return _replace(params, leaves)

    return grads


# --- the passes -----------------------------------------------------------------------------------


class _Tap(NamedTuple):
    """One Conv's or Dense's per-example quantities."""

    layer: Layer
    inputs: jax.Array  # (N, ...): the layer's input
    output_grads: jax.Array  # (N, ..., K): the gradient of the example's loss at the layer's output
    kernel_grads: jax.Array | None  # (N, d, K) where the direct norm is cheaper, else None


class _Taps(NamedTuple):
    layers: dict[Path, _Tap]
    rest_grads: dict[Path, jax.Array]  # per-example gradients (N, *leaf.shape) of every other leaf


def _bookkeeping_pass(net: Layer, loss: OutputLoss, train: bool) -> Callable[..., _Taps]:
    """One vmapped forward and backward pass: each tapped layer's `_Tap`, the other leaves' gradients."""

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None) -> _Taps:
        outputs = _tapped_outputs(net, params, state, x, key, train)
        rest = _rest_leaves(params, outputs)
        probes = {path: jnp.zeros(s.shape, s.dtype) for path, s in outputs.items()}

        def example_loss(probes, rest, x_i, y_i, key_i):
            def keep_input(path, layer, inputs, outputs):
                return outputs + probes[path], inputs

            outputs, inputs = _tap_apply(net, _replace(params, rest), state, x_i, key_i, train, keep_input)
            return loss(outputs, y_i), inputs

        grad_fn = jax.grad(example_loss, argnums=(0, 1), has_aux=True)
        (output_grads, rest_grads), inputs = jax.vmap(grad_fn, in_axes=(None, None, 0, 0, 0))(
            probes, rest, x[:, None], y[:, None], example_keys(key, x.shape[0])
        )
        layers = {}
        for path in outputs:
            tap = _Tap(_find(net, path), inputs[path][:, 0], output_grads[path][:, 0], None)
            if _direct_is_cheaper(tap, _subtree(params, path)["kernel"].shape):
                tap = tap._replace(kernel_grads=_kernel_grads(tap))
            layers[path] = tap
        return _Taps(layers, rest_grads)

    return run


def _norms_pass(net: Layer, loss: OutputLoss, train: bool) -> Callable[..., dict[str, jax.Array]]:
    """One vmapped forward and backward pass giving squared per-example norms (N,) by layer name;
    each tapped layer's backward turns its output gradient into its squared norm at once."""

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None) -> dict[str, jax.Array]:
        tapped = _tapped_outputs(net, params, state, x, key, train)
        rest = _rest_leaves(params, tapped)
        probes = {path: jnp.zeros((), jnp.float32) for path in tapped}

        def example_loss(probes, rest, x_i, y_i, key_i):
            def norm_probe(path, layer, inputs, outputs):
                kernel_shape = _subtree(params, path)["kernel"].shape
                has_bias = "bias" in _subtree(params, path)
                return _norm_tap(layer, kernel_shape, has_bias)(outputs, inputs, probes[path]), None

            outputs, _ = _tap_apply(net, _replace(params, rest), state, x_i, key_i, train, norm_probe)
            return loss(outputs, y_i)

        per_example = jax.vmap(jax.grad(example_loss, argnums=(0, 1)), in_axes=(None, None, 0, 0, 0))
        squared, rest_grads = per_example(probes, rest, x[:, None], y[:, None], example_keys(key, x.shape[0]))
        layer_squared = {"/".join(path): value for path, value in squared.items()}
        return _add_rest(layer_squared, rest_grads)

    return run


def _norm_tap(layer: Layer, kernel_shape: tuple[int, ...], has_bias: bool):
    """``tap(outputs, inputs, probe) = outputs`` whose backward gives the probe the layer's squared
    weight-gradient norm, from one example's ``inputs`` (1, ...) and output gradient (1, ..., K)."""

    @jax.custom_vjp
    def tap(outputs, inputs, probe):
        return outputs

    def forward(outputs, inputs, probe):
        return outputs, inputs

    def backward(inputs, output_grads):
        one = _Tap(layer, inputs, output_grads, None)
        if _direct_is_cheaper(one, kernel_shape):
            one = one._replace(kernel_grads=_kernel_grads(one))
        return output_grads, _zero_cotangent(inputs), _squared_norm(one, has_bias)[0]

    tap.defvjp(forward, backward)
    return tap


def _zero_cotangent(value: jax.Array) -> jax.Array:
    """A zero cotangent for ``value``: float0 for integer inputs (uint8 images into a first Conv)."""
    if jnp.issubdtype(value.dtype, jnp.inexact):
        return jnp.zeros_like(value)
    return np.zeros(value.shape, jax.dtypes.float0)


def _weighted_loss_grad(net, loss, train, params, state, x, y, key, weights) -> Params:
    """The second backward pass of ghost clipping: the gradient of ``sum_i weights_i * loss_i``.

    Its input is made to depend on the weights (``+ 0 * w``) so that XLA runs this pass after
    the first instead of holding both passes' activations at once.
    """
    x = x + 0 * weights[0].astype(x.dtype)

    def weighted_loss(params):
        def example_loss(x_i, y_i, key_i):
            return loss(net.apply(params, state, x_i, key=key_i, train=train)[0], y_i)

        losses = jax.vmap(example_loss)(x[:, None], y[:, None], example_keys(key, x.shape[0]))
        return jnp.sum(lax.stop_gradient(weights) * losses)

    return jax.grad(weighted_loss)(params)


# --- norms and sums from a tap --------------------------------------------------------------------


def _direct_is_cheaper(tap: _Tap, kernel_shape: tuple[int, ...]) -> bool:
    """The per-example kernel gradient (T d K) against the ghost norm (T^2 (d + K)): ``2 T^2 >= d K``."""
    positions = math.prod(tap.output_grads.shape[1:-1])
    return 2 * positions**2 >= math.prod(kernel_shape)


def _pieces(tap: _Tap) -> tuple[list[jax.Array], jax.Array]:
    """The input under each kernel offset, (N, T, C) each in the kernel's (*F) order (Dense: the
    input), and the output gradients (N, T, K).

    The im2col patches (N, T, prod(F) * C) are these pieces side by side; each piece is the
    input's size and is consumed at once. The pieces are made to depend on the output
    gradients (``+ 0 * g``): otherwise XLA computes every layer's pieces in the forward pass,
    where they all wait for the backward (XLA drops an optimisation barrier here).
    """
    output_grads = tap.output_grads
    inputs = tap.inputs + 0 * output_grads.reshape(-1)[0].astype(tap.inputs.dtype)
    views = _patches(tap.layer, inputs) if info(tap.layer).kind == "Conv" else [inputs]
    flat = [view.reshape(view.shape[0], -1, view.shape[-1]) for view in views]
    return flat, output_grads.reshape(output_grads.shape[0], -1, output_grads.shape[-1])


def _positions_sum(output_grads: jax.Array) -> jax.Array:
    """(N, K): the bias gradient, the output gradient summed over positions."""
    return output_grads.sum(tuple(range(1, output_grads.ndim - 1)))


def _kernel_grads(tap: _Tap) -> jax.Array:
    """Per-example kernel gradients (N, d, K): ``sum_t a_t g_t^T``, one kernel offset at a time."""
    views, grads = _pieces(tap)
    return jnp.concatenate([jnp.einsum("ntc,ntk->nck", view, grads) for view in views], axis=1)


def _squared_norm(tap: _Tap, has_bias: bool) -> jax.Array:
    """Per-example squared norm (N,) of the layer's kernel (and bias) gradient."""
    if tap.kernel_grads is None:  # the ghost norm: T x T Gram matrices
        views, grads = _pieces(tap)
        patch_gram = sum(jnp.einsum("nsc,ntc->nst", view, view) for view in views)
        grad_gram = jnp.einsum("nsk,ntk->nst", grads, grads)
        squared = jnp.sum(patch_gram * grad_gram, axis=(1, 2))
    else:
        squared = jnp.sum(jnp.square(tap.kernel_grads), axis=(1, 2))
    if has_bias:
        squared = squared + jnp.sum(jnp.square(_positions_sum(tap.output_grads)), axis=1)
    return squared


def _layer_squared_norms(taps: _Taps, params: Params) -> dict[str, jax.Array]:
    """Squared per-example gradient norms (N,) keyed by layer path (``'a/b/conv_0'``)."""
    squared = {
        "/".join(path): _squared_norm(tap, "bias" in _subtree(params, path))
        for path, tap in taps.layers.items()
    }
    return _add_rest(squared, taps.rest_grads)


def _add_rest(squared: dict[str, jax.Array], rest_grads: dict[Path, jax.Array]) -> dict[str, jax.Array]:
    """``squared`` with the squared norms of the other leaves' per-example gradients added by layer."""
    for path, grad in rest_grads.items():
        name = "/".join(path[:-1])
        squared[name] = squared.get(name, 0.0) + jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))
    return squared


def _weighted_sum(taps: _Taps, params: Params, weights: jax.Array) -> Params:
    """Book-keeping: ``sum_i weights_i * g_i`` for every leaf, from the pass's per-example quantities."""
    leaves = {path: jnp.tensordot(weights, grad, axes=1) for path, grad in taps.rest_grads.items()}
    for path, tap in taps.layers.items():
        layer_params = _subtree(params, path)
        weighted = tap.output_grads * weights.reshape(-1, *[1] * (tap.output_grads.ndim - 1))
        if tap.kernel_grads is None:  # the layer's own weight gradient at the weighted output gradients
            _, pullback = jax.vjp(lambda p, tap=tap: tap.layer.apply(p, {}, tap.inputs)[0], layer_params)
            sums = pullback(weighted)[0]
        else:
            sums = {
                "kernel": jnp.tensordot(weights, tap.kernel_grads, axes=1).reshape(
                    layer_params["kernel"].shape
                )
            }
            if "bias" in layer_params:
                sums["bias"] = _positions_sum(weighted).sum(0)
        leaves.update({(*path, name): value for name, value in sums.items()})
    return _replace(params, leaves)


# --- walking the net ------------------------------------------------------------------------------


def _is_tapped(layer: Layer) -> bool:
    """Dense, and Conv with the layouts and grouping the ghost norm handles."""
    description = info(layer)
    if description.kind == "Dense":
        return True
    spec = description.spec
    return description.kind == "Conv" and spec.get("groups") == 1 and spec.get("dimension_numbers") is None


def _tap_apply(net, params, state, x, key, train, hook: Hook, path: Path = ()):
    """``net.apply`` with ``hook(path, layer, x, y) -> (y, record)`` on every tapped layer's input x
    and output y; returns (output, {path: record} of the records that are not None)."""
    description = info(net)
    children = dict(description.children)

    def visit(name, x, child_key):
        child_params, child_state = params.get(name, {}), state.get(name, {})
        return _tap_apply(children[name], child_params, child_state, x, child_key, train, hook, (*path, name))

    if description.kind == "Serial":
        records = {}
        for name, child_key in zip(children, split_key(key, len(children)), strict=True):
            x, child_records = visit(name, x, child_key)
            records.update(child_records)
        return x, records
    if description.kind == "Residual":
        body_key, shortcut_key = split_key(key, 2)
        y, records = visit("body", x, body_key)
        if "shortcut" in children:
            x, shortcut_records = visit("shortcut", x, shortcut_key)
            records.update(shortcut_records)
        return y + x, records
    try:
        y, _ = net.apply(params, state, x, key=key, train=train)
    except ValueError as error:
        error.add_note(f"in {'/'.join(path) or 'the net'} ({description.kind})")
        raise
    if not _is_tapped(net):
        return y, {}
    y, record = hook(path, net, x, y)
    return y, ({} if record is None else {path: record})


def _tapped_outputs(net, params, state, x, key, train) -> dict[Path, jax.ShapeDtypeStruct]:
    """The path of every tapped layer with the shape and dtype of its output on one example."""

    def outputs(x_i, key_i):
        return _tap_apply(net, params, state, x_i, key_i, train, lambda path, layer, x, y: (y, y))[1]

    return jax.eval_shape(outputs, x[:1], None if key is None else jax.random.fold_in(key, 0))


def _rest_leaves(params: Params, tapped: dict[Path, object]) -> dict[Path, jax.Array]:
    """The leaves of ``params`` outside the tapped layers: their gradients come from vmap."""
    return {path: leaf for path, leaf in _leaves(params).items() if path[:-1] not in tapped}


def _find(net: Layer, path: Path) -> Layer:
    for name in path:
        net = dict(info(net).children)[name]
    return net


def _patches(layer: Layer, x: jax.Array) -> list[jax.Array]:
    """The input under each kernel offset, (N, *out_spatial, C) each, in the kernel's (*F) order.

    Strided slices of the padded input: together the im2col patches that a Conv multiplies
    by its kernel (*F, C, K), without an identity-kernel convolution (d^2 multiply-adds a
    position) or their concatenation.
    """
    spec = info(layer).spec
    rank = x.ndim - 2
    window = per_axis(spec["kernel_size"], rank, "Conv", "kernel_size")
    strides = per_axis(spec["stride"], rank, "Conv", "stride")
    dilations = per_axis(spec["dilation"], rank, "Conv", "dilation")
    geometry = slide("Conv", x.shape[1:-1], window, strides, spec["padding"], dilations, None)
    pads = [(0, 0, 0), *((lo, hi, 0) for lo, hi in geometry.padding), (0, 0, 0)]
    padded = lax.pad(x, jnp.zeros((), x.dtype), pads)
    views = []
    for offsets in itertools.product(*(range(size) for size in window)):
        starts = [offset * dilation for offset, dilation in zip(offsets, dilations, strict=True)]
        limits = [
            start + (out - 1) * stride + 1
            for start, out, stride in zip(starts, geometry.out_spatial, strides, strict=True)
        ]
        views.append(lax.slice(padded, (0, *starts, 0), (x.shape[0], *limits, x.shape[-1]), (1, *strides, 1)))
    return views


# --- pytrees by path ------------------------------------------------------------------------------


def _leaves(tree: PyTree) -> dict[Path, jax.Array]:
    return {
        tuple(str(entry.key) for entry in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _replace(tree: PyTree, leaves: dict[Path, jax.Array]) -> PyTree:
    """``tree`` with the leaves at the given paths replaced."""

    def pick(path, leaf):
        return leaves.get(tuple(str(entry.key) for entry in path), leaf)

    return jax.tree_util.tree_map_with_path(pick, tree)


def _subtree(tree: PyTree, path: Path) -> PyTree:
    for name in path:
        tree = tree.get(name, {})
    return tree
