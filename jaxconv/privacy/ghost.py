"""Ghost clipping: clipped gradient sums without per-example gradients (Bu et al. 2022).

For a layer ``y = x @ W`` applied at T positions (T = 1 for Dense, the output
positions for a convolution, with x the im2col patches), example i's weight
gradient is ``sum_t a_t g_t^T`` with a_t the layer's input patch and g_t the
gradient of the example's loss at output t. Its squared norm is either

    ghost norm:  sum_{s,t} (a_s . a_t)(g_s . g_t)     cost ~ T^2 (d + K), no d x K matrix
    direct:      ||sum_t a_t g_t^T||^2                 cost ~ T d K

(d the patch size, K the outputs); like the paper's mixed ghost norm, each
layer takes the ghost norm when ``2 T^2 < d K``. The bias gradient is
``sum_t g_t``. Two passes give the clipped sum:

1. a forward and backward pass that keeps each Conv's and Dense's input and
   output gradient per example (the output gradient is the gradient of a zero
   "probe" added to the output) and forms the norms above;
2. one ordinary backward pass of ``sum_i min(1, C / norm_i) * loss_i``.

Nets are walked through `serial` and `residual`; Conv (``groups=1``, default
layout) and Dense layers are handled as above, and every other parameter
(GroupNorm's scale, a layer inside another combinator) gets its per-example
gradient from `jax.vmap`, which is exact but materialises those gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Key, Layer, Params, PyTree, State, info, split_key
from jaxconv.layers._util import channel_last, per_axis, slide
from jaxconv.per_example import example_keys, softmax_cross_entropy
from jaxconv.privacy.clipping import _check_clip, clip_factors

Path = tuple[str, ...]
OutputLoss = Callable[[jax.Array, jax.Array], jax.Array]


def ghost_grad_norms(
    net: Layer, loss: OutputLoss | None = None, *, train: bool = True
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``norms(params, state, x, y, key=None) -> (global_norms, layer_norms)`` by ghost norms.

    The same quantities as `jaxconv.per_example.per_example_grad_norms` of
    ``net_loss(net, loss, train=train)``: (N,) global norms and a dict from layer
    path to (N,) norms; each example runs alone with key ``fold_in(key, i)``.
    ``loss(outputs, labels)`` (default: softmax cross-entropy) sees one example
    with its batch axis of one.
    """
    loss = loss or softmax_cross_entropy

    def norms(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        tapped = _tapped_layers(net, params, state, x, key, train)
        rest = {path: leaf for path, leaf in _leaves(params).items() if path[:-1] not in tapped}
        probes = {path: jnp.zeros(shape, dtype) for path, (shape, dtype) in tapped.items()}

        def example_loss(probes, rest, x_i, y_i, key_i):
            outputs, inputs = _tap_apply(net, _replace(params, rest), state, x_i, key_i, train, probes)
            return loss(outputs, y_i), inputs

        grad_fn = jax.grad(example_loss, argnums=(0, 1), has_aux=True)
        per_example = jax.vmap(grad_fn, in_axes=(None, None, 0, 0, 0))
        (output_grads, rest_grads), inputs = per_example(
            probes, rest, x[:, None], y[:, None], example_keys(key, x.shape[0])
        )
        squared = {}
        for path in tapped:
            layer_params = _subtree(params, path)
            squared["/".join(path)] = _squared_norm(
                _find(net, path), inputs[path], output_grads[path], "bias" in layer_params
            )
        for path, grad in rest_grads.items():
            name = "/".join(path[:-1])
            squared[name] = squared.get(name, 0.0) + jnp.sum(
                jnp.square(grad), axis=tuple(range(1, grad.ndim))
            )
        return jnp.sqrt(sum(squared.values())), {name: jnp.sqrt(value) for name, value in squared.items()}

    return norms


def ghost_clipped_grad_sum(
    net: Layer, l2_norm_clip: float, loss: OutputLoss | None = None, *, train: bool = True
) -> Callable[..., tuple[Params, jax.Array]]:
    """``fn(params, state, x, y, key=None, mask=None) -> (clipped_sum, norms)`` by ghost clipping.

    Equal to `jaxconv.privacy.clipped_grad_sum` of ``net_loss(net, loss, train=train)``
    (same keys per example): the sum over examples of each gradient scaled by
    ``min(1, C / norm_i)``, and the unclipped norms (N,).
    """
    _check_clip(l2_norm_clip)
    loss = loss or softmax_cross_entropy
    norms_fn = ghost_grad_norms(net, loss, train=train)

    def fn(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None, mask=None):
        norms, _ = norms_fn(params, state, x, y, key)
        weights = clip_factors(norms, l2_norm_clip)
        if mask is not None:
            weights = weights * mask

        def weighted_loss(params):
            def example_loss(x_i, y_i, key_i):
                return loss(net.apply(params, state, x_i, key=key_i, train=train)[0], y_i)

            losses = jax.vmap(example_loss)(x[:, None], y[:, None], example_keys(key, x.shape[0]))
            return jnp.sum(lax.stop_gradient(weights) * losses)

        return jax.grad(weighted_loss)(params), norms

    return fn


# --- walking the net ------------------------------------------------------------------------------


def _is_tapped(layer: Layer) -> bool:
    """Dense, and Conv with the layouts and grouping the ghost norm handles."""
    description = info(layer)
    if description.kind == "Dense":
        return True
    spec = description.spec
    return description.kind == "Conv" and spec.get("groups") == 1 and spec.get("dimension_numbers") is None


def _tap_apply(net, params, state, x, key, train, probes, path: Path = ()):
    """``net.apply`` with probes added to the tapped layers' outputs; returns (y, inputs per path)."""
    description = info(net)
    children = dict(description.children)

    def visit(name, x, child_key):
        child_params, child_state = params.get(name, {}), state.get(name, {})
        return _tap_apply(
            children[name], child_params, child_state, x, child_key, train, probes, (*path, name)
        )

    if description.kind == "Serial":
        inputs = {}
        for name, child_key in zip(children, split_key(key, len(children)), strict=True):
            x, child_inputs = visit(name, x, child_key)
            inputs.update(child_inputs)
        return x, inputs
    if description.kind == "Residual":
        body_key, shortcut_key = split_key(key, 2)
        y, inputs = visit("body", x, body_key)
        if "shortcut" in children:
            x, shortcut_inputs = visit("shortcut", x, shortcut_key)
            inputs.update(shortcut_inputs)
        return y + x, inputs
    try:
        y, _ = net.apply(params, state, x, key=key, train=train)
    except ValueError as error:
        error.add_note(f"in {'/'.join(path) or 'the net'} ({description.kind})")
        raise
    if not _is_tapped(net):
        return y, {}
    return (y if probes is None else y + probes[path]), {path: x}


def _tapped_layers(net, params, state, x, key, train) -> dict[Path, tuple[tuple[int, ...], jnp.dtype]]:
    """The path of every tapped layer with the shape and dtype of its output on one example."""

    def outputs(x_i, key_i):
        _, inputs = _tap_apply(net, params, state, x_i, key_i, train, None)
        return {path: _apply_at(net, path, params, state, a, train) for path, a in inputs.items()}

    example_key = None if key is None else jax.random.fold_in(key, 0)
    shapes = jax.eval_shape(outputs, x[:1], example_key)
    return {path: (s.shape, s.dtype) for path, s in shapes.items()}


def _apply_at(net, path, params, state, x, train):
    return _find(net, path).apply(_subtree(params, path), _subtree(state, path), x, train=train)[0]


def _find(net: Layer, path: Path) -> Layer:
    for name in path:
        net = dict(info(net).children)[name]
    return net


# --- the norms ------------------------------------------------------------------------------------


def _squared_norm(layer: Layer, inputs: jax.Array, output_grads: jax.Array, has_bias: bool) -> jax.Array:
    """Per-example squared norm (N,) of a Dense or Conv layer's kernel (and bias) gradient.

    ``inputs`` (N, 1, ...) and ``output_grads`` (N, 1, ...) are each example's
    layer input and the gradient of its loss at the layer output.
    """
    inputs, output_grads = inputs[:, 0], output_grads[:, 0]
    if info(layer).kind == "Conv":
        inputs = _patches(layer, inputs)
    num = inputs.shape[0]
    patches = inputs.reshape(num, -1, inputs.shape[-1])  # (N, T, d)
    grads = output_grads.reshape(num, -1, output_grads.shape[-1])  # (N, T, K)
    positions, size, features = patches.shape[1], patches.shape[2], grads.shape[2]
    if 2 * positions**2 < size * features:  # the ghost norm: T x T Gram matrices
        patch_gram = jnp.einsum("nsd,ntd->nst", patches, patches)
        grad_gram = jnp.einsum("nsk,ntk->nst", grads, grads)
        squared = jnp.sum(patch_gram * grad_gram, axis=(1, 2))
    else:  # the per-example kernel gradient itself, d x K
        squared = jnp.sum(jnp.square(jnp.einsum("ntd,ntk->ndk", patches, grads)), axis=(1, 2))
    if has_bias:
        squared = squared + jnp.sum(jnp.square(grads.sum(1)), axis=1)
    return squared


def _patches(layer: Layer, x: jax.Array) -> jax.Array:
    """The im2col patches (N, *out_spatial, C * prod(F)) that a Conv multiplies by its kernel."""
    spec = info(layer).spec
    rank = x.ndim - 2
    window = per_axis(spec["kernel_size"], rank, "Conv", "kernel_size")
    strides = per_axis(spec["stride"], rank, "Conv", "stride")
    dilations = per_axis(spec["dilation"], rank, "Conv", "dilation")
    geometry = slide("Conv", x.shape[1:-1], window, strides, spec["padding"], dilations, None)
    return lax.conv_general_dilated_patches(
        x,
        window,
        strides,
        geometry.padding,
        rhs_dilation=dilations,
        dimension_numbers=channel_last(rank),
        precision=lax.Precision.HIGHEST,  # patches are copies of inputs: keep them exact
    )


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
