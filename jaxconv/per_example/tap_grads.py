"""A tapped layer's per-example weight gradients, their norms and weighted sums, from each example's
input and output gradient of the layer (Opacus' einsums, Bu et al.'s ghost norms).

For a layer ``y = x @ W`` applied at T positions (T = 1 for Dense, the output
positions for a convolution, with x the im2col patches), example i's weight
gradient is ``G_i = sum_t a_t g_t^T`` with a_t the layer's input patch and g_t
the gradient of the example's loss at output t. Its squared norm is either

    ghost norm:  sum_{s,t} (a_s . a_t)(g_s . g_t)     cost ~ T^2 (d + K), no d x K matrix
    direct:      ||sum_t a_t g_t^T||^2                 cost ~ T d K

(d the patch size, K the outputs); like the paper's mixed ghost norm (Bu et al.
2022, "Scalable and Efficient Training of Large CNNs with Differential
Privacy"), each layer takes the ghost norm when ``2 T^2 < d K``. The bias
gradient is ``sum_t g_t``. A weighted sum over examples ``sum_i w_i G_i`` is the
layer's own weight gradient at the output gradients scaled by ``w_i`` (Bu et al.
2023's book-keeping), or the weighted sum of the ``G_i`` the direct norm formed.

A weight-standardised Conv multiplies by ``f(W)``, each filter standardised (`Traits.tap_kernel`):
the taps give each example's gradient with respect to ``f(W)``, formed and pulled back through
f's vector-Jacobian product; its norm is then always the direct one.

With augmentation multiplicity an example is ``copies`` rows (its augmented copies) and its
loss their mean: its gradient sums over the positions of all its rows, so the copies are
simply more positions t of the same example (the norm of the average, cross terms included).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Layer, Params, info
from jaxconv.sizing import Window, layer_window


class Tap(NamedTuple):
    """One tapped layer's per-example quantities (a Conv with one group, or a Dense)."""

    layer: Layer
    inputs: jax.Array  # (N, ...): the layer's input
    output_grads: jax.Array  # (N, ..., K): the gradient of the example's loss at the layer's output
    kernel_grads: jax.Array | None  # (N, d, K) where the direct norm is cheaper, else None
    copies: int = 1  # rows per example: inputs and output_grads hold N * copies rows


def with_kernel_grads(tap: Tap, kernel: jax.Array) -> Tap:
    """``tap`` with its per-example kernel gradients (N, d, K) formed where the direct norm is
    cheaper than the ghost norm (``2 T^2 >= d K``), else unchanged. A layer that multiplies by a
    function of its ``kernel`` (`Traits.tap_kernel`: weight standardisation) always forms them,
    pulled back through that function: the norm of the pulled-back gradient is not a ghost norm."""
    transform = info(tap.layer).traits.tap_kernel
    if transform is not None:
        return tap._replace(kernel_grads=_pulled_back(kernel_grads(tap), transform, kernel))
    positions = math.prod(tap.output_grads.shape[1:-1]) * tap.copies
    if 2 * positions**2 >= kernel.size:
        return tap._replace(kernel_grads=kernel_grads(tap))
    return tap


def _pulled_back(
    grads: jax.Array, transform: Callable[[jax.Array], jax.Array], kernel: jax.Array
) -> jax.Array:
    """Per-example gradients (N, d, K) with respect to ``transform(kernel)`` as gradients with
    respect to ``kernel``: each example's through the transform's vector-Jacobian product."""
    _, pullback = jax.vjp(transform, kernel)
    per_example = grads.reshape(-1, *kernel.shape).astype(kernel.dtype)
    return jax.vmap(lambda grad: pullback(grad)[0])(per_example).reshape(grads.shape)


def kernel_grads(tap: Tap) -> jax.Array:
    """Per-example kernel gradients (N, d, K): ``sum_t a_t g_t^T``, one kernel offset at a time;
    d runs over the kernel's (*F, C) axes in order, so ``reshape(N, *kernel.shape)`` gives them."""
    views, grads = _pieces(tap)
    return jnp.concatenate([jnp.einsum("ntc,ntk->nck", view, grads) for view in views], axis=1)


def bias_grads(tap: Tap) -> jax.Array:
    """(N, K): the bias gradient, each example's output gradients summed over its positions."""
    return _example_output_grads(tap).sum(1)


def squared_norm(tap: Tap, has_bias: bool) -> jax.Array:
    """Per-example squared norm (N,) of the layer's kernel (and bias) gradient."""
    if tap.kernel_grads is None:  # the ghost norm: T x T Gram matrices
        views, grads = _pieces(tap)
        patch_gram = sum(jnp.einsum("nsc,ntc->nst", view, view) for view in views)
        grad_gram = jnp.einsum("nsk,ntk->nst", grads, grads)
        squared = jnp.sum(patch_gram * grad_gram, axis=(1, 2))
    else:
        squared = jnp.sum(jnp.square(tap.kernel_grads), axis=(1, 2))
    if has_bias:
        squared = squared + jnp.sum(jnp.square(bias_grads(tap)), axis=1)
    return squared


def per_example_layer_grads(tap: Tap, layer_params: Params) -> Params:
    """The layer's per-example gradients: ``{'kernel': (N, *kernel.shape), 'bias': (N, K)}``
    (no bias if the layer has none), in the dtypes of ``layer_params``."""
    kernel = layer_params["kernel"]
    grads = tap.kernel_grads if tap.kernel_grads is not None else kernel_grads(tap)
    leaves = {"kernel": grads.reshape(-1, *kernel.shape).astype(kernel.dtype)}
    if "bias" in layer_params:
        leaves["bias"] = bias_grads(tap).astype(layer_params["bias"].dtype)
    return leaves


def weighted_layer_sum(tap: Tap, layer_params: Params, weights: jax.Array) -> Params:
    """``sum_i weights_i * G_i`` for the layer's kernel (and bias), shaped like ``layer_params``;
    ``weights`` is (N,)."""
    if tap.kernel_grads is None:  # the layer's own weight gradient at the weighted output gradients
        row_weights = jnp.repeat(weights, tap.copies)
        weighted = tap.output_grads * row_weights.reshape(-1, *[1] * (tap.output_grads.ndim - 1))
        _, pullback = jax.vjp(lambda p: tap.layer.apply(p, {}, tap.inputs)[0], layer_params)
        return pullback(weighted.astype(tap.output_grads.dtype))[0]
    kernel = layer_params["kernel"]
    sums = {"kernel": jnp.tensordot(weights, tap.kernel_grads, axes=1).reshape(kernel.shape)}
    if "bias" in layer_params:
        sums["bias"] = jnp.tensordot(weights, bias_grads(tap), axes=1)
    return {name: value.astype(layer_params[name].dtype) for name, value in sums.items()}


def _pieces(tap: Tap) -> tuple[list[jax.Array], jax.Array]:
    """The input under each kernel offset, (N, T, C) each in the kernel's (*F) order (Dense: the
    input), and the output gradients (N, T, K); T counts the positions of all an example's copies.

    The im2col patches (N, T, prod(F) * C) are these pieces side by side; each piece is the
    input's size and is consumed at once. The pieces are made to depend on the output
    gradients (``+ 0 * g``): otherwise XLA computes every layer's pieces in the forward pass,
    where they all wait for the backward (XLA drops an optimisation barrier here).
    """
    output_grads = tap.output_grads
    inputs = tap.inputs + 0 * output_grads.reshape(-1)[0].astype(tap.inputs.dtype)
    window = layer_window(info(tap.layer), inputs.shape)
    views = [inputs] if window is None else _patches(window, inputs)
    flat = [view.reshape(view.shape[0] // tap.copies, -1, view.shape[-1]) for view in views]
    return flat, _example_output_grads(tap)


def _example_output_grads(tap: Tap) -> jax.Array:
    """The output gradients (N, T, K) by example, T the positions of all its copies."""
    grads = tap.output_grads
    return grads.reshape(grads.shape[0] // tap.copies, -1, grads.shape[-1])


def _patches(window: Window, x: jax.Array) -> list[jax.Array]:
    """The input (N, *spatial, C) under each kernel offset, (N, *out_spatial, C) each, in the
    kernel's (*F) order.

    Strided slices of the padded input: together the im2col patches that a Conv multiplies
    by its kernel (*F, C, K), without an identity-kernel convolution (d^2 multiply-adds a
    position) or their concatenation.
    """
    pads = [(0, 0, 0), *((lo, hi, 0) for lo, hi in window.padding), (0, 0, 0)]
    padded = lax.pad(x, jnp.zeros((), x.dtype), pads)
    views = []
    for offsets in itertools.product(*(range(size) for size in window.size)):
        starts = [offset * dilation for offset, dilation in zip(offsets, window.dilation, strict=True)]
        limits = [
            start + (out - 1) * stride + 1
            for start, out, stride in zip(starts, window.out_spatial, window.stride, strict=True)
        ]
        strides = (1, *window.stride, 1)
        views.append(lax.slice(padded, (0, *starts, 0), (x.shape[0], *limits, x.shape[-1]), strides))
    return views
