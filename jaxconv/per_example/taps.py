"""Per-example gradients and norms from one pass over a net that taps its Conv and Dense layers.

A layer is tapped when its `jaxconv.traits.Traits` say so (``tap``: Dense, Conv with one
group and the default layout): its per-example weight gradient is a product of its input
patches and its output gradient (`jaxconv.per_example.tap_grads`). The walker runs
``net.apply`` inside `jaxconv.core.intercept`, so every combinator (serial, residual,
parallel, wired, ...) threads keys, params and state exactly as in training; the hook
records each tapped layer's input and replaces its output ``y`` by ``y + probe`` with a zero
``probe`` whose gradient is the layer's output gradient. Each example runs alone, vmapped,
with key ``fold_in(key, i)``; with ``copies=K`` an example is x (N, K, ...)'s K augmented
copies, run together, and its loss their mean (`jaxconv.per_example.example_rows`). Two passes:

- book-keeping (`bookkeeping_pass`; Bu et al. 2023, "Differentially Private Optimization on
  Large Model at Small Cost"): one forward and backward pass keeps each tapped layer's input
  and output gradient per example; per-example gradients, norms and any weighted sum over
  examples follow without a second backward pass, but every output gradient is held at once;
- norms only (`norms_pass`), the leanest in memory: each tapped layer's backward turns its
  output gradient into the example's squared norm on the spot (a `jax.custom_vjp`), so no
  output gradient outlives its layer.

Every other parameter (GroupNorm's scale, a grouped Conv, a layer applied twice, a layer
inside `remat`, whose children run inside a JAX transformation) gets its per-example
gradient from `jax.vmap` in the same pass, exact but materialised.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.core import Key, Layer, LayerPath, Params, PyTree, State, apply_watched, info, leaf_path, subtree
from jaxconv.losses import cross_entropy
from jaxconv.per_example.mapped import example_keys, example_rows
from jaxconv.per_example.tap_grads import (
    Tap,
    per_example_layer_grads,
    squared_norm,
    weighted_layer_sum,
    with_kernel_grads,
)
from jaxconv.traits import Traits

OutputLoss = Callable[[jax.Array, jax.Array], jax.Array]  # loss(outputs (1, ...), labels (1, ...))
OnTap = Callable[[LayerPath, Layer, jax.Array, jax.Array], jax.Array]


class Taps(NamedTuple):
    """What the book-keeping pass keeps: a `Tap` per tapped layer, and the per-example gradients
    (N, *leaf.shape) of every other leaf of ``params``, keyed by the leaf's path."""

    layers: dict[LayerPath, Tap]
    rest_grads: dict[LayerPath, jax.Array]


class TappedLayer(NamedTuple):
    """A tapped layer as one example meets it: the layer and its output's shape and dtype."""

    layer: Layer
    output: jax.ShapeDtypeStruct  # (1, ..., K)


def ghost_grad_norms(
    net: Layer, loss: OutputLoss | None = None, *, train: bool = True, copies: int = 1
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``norms(params, state, x, y, key=None) -> (global_norms, layer_norms)`` by ghost norms.

    The same quantities as `jaxconv.per_example.per_example_grad_norms` of
    ``net_loss(net, loss, train=train)``: (N,) global norms and a dict from layer
    path to (N,) norms; each example runs alone with key ``fold_in(key, i)``.
    ``loss(outputs, labels)`` (default: softmax cross-entropy) sees one example
    with its batch axis of one (of ``copies`` rows with augmentation multiplicity).
    No layer's output gradient outlives its layer.
    """
    run_pass = norms_pass(net, loss or cross_entropy, train, copies)

    def norms(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        squared = run_pass(params, state, x, y, key)
        return jnp.sqrt(sum(squared.values())), {name: jnp.sqrt(value) for name, value in squared.items()}

    return norms


def tapped_per_example_grads(
    net: Layer, loss: OutputLoss | None = None, *, train: bool = True, copies: int = 1
) -> Callable[..., Params]:
    """``grads(params, state, x, y, key=None)``: per-example gradients (N, *leaf.shape) from patches.

    The same numbers as `jaxconv.per_example.per_example_grads` of ``net_loss(net,
    loss, train=train)``; Conv and Dense weight gradients are einsums of each
    example's input patches and output gradients (Opacus' method), not vmapped
    weight gradients.
    """
    run_pass = bookkeeping_pass(net, loss or cross_entropy, train, copies)

    def grads(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None) -> Params:
        taps = run_pass(params, state, x, y, key)
        leaves = dict(taps.rest_grads)
        for path, tap in taps.layers.items():
            for name, value in per_example_layer_grads(tap, subtree(params, path)).items():
                leaves[(*path, name)] = value
        return _replace_leaves(params, leaves)

    return grads


def squared_norms(taps: Taps, params: Params) -> dict[str, jax.Array]:
    """Squared per-example gradient norms (N,) keyed by layer path (``'a/b/conv_0'``)."""
    squared = {
        "/".join(path): squared_norm(tap, "bias" in subtree(params, path))
        for path, tap in taps.layers.items()
    }
    return _add_rest(squared, taps.rest_grads)


def weighted_sum(taps: Taps, params: Params, weights: jax.Array) -> Params:
    """Book-keeping: ``sum_i weights_i * g_i`` for every leaf, shaped like ``params``; weights (N,)."""
    leaves = {path: jnp.tensordot(weights, grad, axes=1) for path, grad in taps.rest_grads.items()}
    for path, tap in taps.layers.items():
        for name, value in weighted_layer_sum(tap, subtree(params, path), weights).items():
            leaves[(*path, name)] = value
    return _replace_leaves(params, leaves)


# --- the passes -----------------------------------------------------------------------------------


def bookkeeping_pass(net: Layer, loss: OutputLoss, train: bool, copies: int = 1) -> Callable[..., Taps]:
    """``run(params, state, x, y, key) -> Taps``: one vmapped forward and backward pass over the
    examples of x (N, ...) and y (N, ...) keeping each tapped layer's input and output gradient."""

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None) -> Taps:
        found = find_taps(net, params, state, x, key, train, copies)
        rest = _rest_leaves(params, found)
        probes = {path: jnp.zeros(tapped.output.shape, tapped.output.dtype) for path, tapped in found.items()}

        def example_loss(probes, rest, x_i, y_i, key_i):
            inputs = {}
            x_i, y_i = example_rows(x_i, y_i, copies)

            def keep_input(path, layer, x, y):
                inputs[path] = x
                return y + probes[path]

            outputs = apply_tapped(
                net, _replace_leaves(params, rest), state, x_i, key_i, train, keep_input, probes
            )
            return loss(outputs, y_i), inputs

        grad_fn = jax.grad(example_loss, argnums=(0, 1), has_aux=True)
        (output_grads, rest_grads), inputs = jax.vmap(grad_fn, in_axes=(None, None, 0, 0, 0))(
            probes, rest, x[:, None], y[:, None], example_keys(key, x.shape[0])
        )
        layers = {
            path: with_kernel_grads(
                Tap(tapped.layer, _rows(inputs[path]), _rows(output_grads[path]), None, copies),
                subtree(params, path)["kernel"],
            )
            for path, tapped in found.items()
        }
        return Taps(layers, rest_grads)

    return run


def norms_pass(
    net: Layer, loss: OutputLoss, train: bool, copies: int = 1
) -> Callable[..., dict[str, jax.Array]]:
    """``run(params, state, x, y, key)``: squared per-example norms (N,) by layer path from one
    vmapped forward and backward pass; each tapped layer's backward turns its output gradient into
    its squared norm at once."""

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None) -> dict[str, jax.Array]:
        found = find_taps(net, params, state, x, key, train, copies)
        rest = _rest_leaves(params, found)
        probes = {path: jnp.zeros((), jnp.float32) for path in found}

        def example_loss(probes, rest, x_i, y_i, key_i):
            x_i, y_i = example_rows(x_i, y_i, copies)

            def norm_probe(path, layer, x, y):
                layer_params = subtree(params, path)
                tap = _norm_tap(layer, "bias" in layer_params, copies)
                return tap(y, x, probes[path], layer_params["kernel"])

            outputs = apply_tapped(
                net, _replace_leaves(params, rest), state, x_i, key_i, train, norm_probe, probes
            )
            return loss(outputs, y_i)

        per_example = jax.vmap(jax.grad(example_loss, argnums=(0, 1)), in_axes=(None, None, 0, 0, 0))
        squared, rest_grads = per_example(probes, rest, x[:, None], y[:, None], example_keys(key, x.shape[0]))
        return _add_rest({"/".join(path): value for path, value in squared.items()}, rest_grads)

    return run


# --- walking the net ------------------------------------------------------------------------------


def apply_tapped(
    net: Layer,
    params: Params,
    state: State,
    x: Any,
    key: Key | None,
    train: bool,
    on_tap: OnTap,
    only: Collection[LayerPath] | None = None,
) -> Any:
    """``net.apply(params, state, x, key=key, train=train)[0]`` with the output y of every tapped
    layer (of those at the paths ``only``, if given) replaced by ``on_tap(path, layer, x, y)``,
    x the layer's input; the net itself is at path ``()``. The combinators apply their children
    as always (`jaxconv.core.apply_watched`); a `remat` sub-net is applied untapped."""

    def watch(path, layer, x, y):
        opaque = (info(layer).traits or Traits()).opaque  # its children run inside a jax.custom_vjp
        if is_tapped(layer) and not opaque and (only is None or path in only):
            return on_tap(path, layer, x, y)
        return y

    return apply_watched(net, params, state, x, key, train, watch)


def is_tapped(layer: Layer) -> bool:
    """Whether the taps handle ``layer``'s weight gradient (its `Traits.tap`: Dense, and Conv with
    one group and the default layout)."""
    traits = info(layer).traits
    return traits is not None and traits.tap


def find_taps(
    net: Layer, params: Params, state: State, x: PyTree, key: Key | None, train: bool, copies: int = 1
) -> dict[LayerPath, TappedLayer]:
    """Every tapped layer that ``net`` applies exactly once, by path, with its output on one example
    (x[:1], key ``fold_in(key, 0)``), found without computing anything; a layer applied twice
    (shared weights) is left to vmap."""
    calls: dict[LayerPath, list[TappedLayer]] = {}

    def record(path, layer, x, y):
        calls.setdefault(path, []).append(TappedLayer(layer, jax.ShapeDtypeStruct(y.shape, y.dtype)))
        return y

    def first_example(x_i, key_i):
        rows, _ = example_rows(x_i, (), copies)
        return apply_tapped(net, params, state, rows, key_i, train, record)

    jax.eval_shape(first_example, x[:1], None if key is None else jax.random.fold_in(key, 0))
    return {path: found[0] for path, found in calls.items() if len(found) == 1}


def _rows(per_example: jax.Array) -> jax.Array:
    """(N, rows, ...) -> (N * rows, ...): each example's rows one after another."""
    return per_example.reshape(-1, *per_example.shape[2:])


def _norm_tap(layer: Layer, has_bias: bool, copies: int):
    """``tap(outputs, inputs, probe, kernel) = outputs`` whose backward gives the probe the layer's
    squared weight-gradient norm, from one example's ``inputs`` (copies, ...) and output gradient
    (copies, ..., K); ``kernel`` is the layer's (its gradient comes from the taps: zero here)."""

    @jax.custom_vjp
    def tap(outputs, inputs, probe, kernel):
        return outputs

    def forward(outputs, inputs, probe, kernel):
        return outputs, (inputs, kernel)

    def backward(saved, output_grads):
        inputs, kernel = saved
        one = with_kernel_grads(Tap(layer, inputs, output_grads, None, copies), kernel)
        norm = squared_norm(one, has_bias)[0].astype(jnp.float32)
        return output_grads, _zero_cotangent(inputs), norm, jnp.zeros_like(kernel)

    tap.defvjp(forward, backward)
    return tap


def _zero_cotangent(value: jax.Array) -> jax.Array:
    """A zero cotangent for ``value``: float0 for integer inputs (uint8 images into a first Conv)."""
    if jnp.issubdtype(value.dtype, jnp.inexact):
        return jnp.zeros_like(value)
    return np.zeros(value.shape, jax.dtypes.float0)


# --- pytrees by path ------------------------------------------------------------------------------


def _add_rest(squared: dict[str, jax.Array], rest_grads: dict[LayerPath, jax.Array]) -> dict[str, jax.Array]:
    """``squared`` with the squared norms of the other leaves' per-example gradients added by layer."""
    for path, grad in rest_grads.items():
        name = "/".join(path[:-1])
        squared[name] = squared.get(name, 0.0) + jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))
    return squared


def _rest_leaves(params: Params, tapped: Collection[LayerPath]) -> dict[LayerPath, jax.Array]:
    """The leaves of ``params`` outside the tapped layers, by path: their gradients come from vmap."""
    leaves = {leaf_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    return {path: leaf for path, leaf in leaves.items() if path[:-1] not in tapped}


def _replace_leaves(tree: PyTree, leaves: dict[LayerPath, jax.Array]) -> PyTree:
    """``tree`` with the leaves at the given paths replaced."""

    def pick(path, leaf):
        return leaves.get(leaf_path(path), leaf)

    return jax.tree_util.tree_map_with_path(pick, tree)
