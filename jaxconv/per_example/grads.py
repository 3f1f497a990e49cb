"""Per-example gradients and their norms for any loss, by the strategy that suits it: the
mapped strategies (`jaxconv.per_example.mapped`) for any function, the taps
(`jaxconv.per_example.taps`) for a loss from `net_loss`. See `jaxconv.per_example`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.core import Key, Layer, Params, PyTree, State
from jaxconv.losses import cross_entropy
from jaxconv.per_example.mapped import (
    STRATEGIES,
    LossFn,
    Strategy,
    example_rows,
    layer_squared_norms,
    map_examples,
    num_examples,
    resolve_strategy,
)
from jaxconv.per_example.taps import ghost_grad_norms, tapped_per_example_grads


@dataclasses.dataclass(frozen=True, eq=False)
class NetLoss:
    """``loss(net.apply(params, state, x, key=key, train=train)[0], y)``: a per-example loss that
    knows its net, so that the ``'einsum'`` strategy can walk the net's layers. With
    ``copies=K`` one example is x (1, K, ...), its K augmented copies, and its loss the mean
    of theirs (`jaxconv.per_example.example_rows`)."""

    net: Layer
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    train: bool = True
    copies: int = 1

    def __call__(
        self, params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None
    ) -> jax.Array:
        x, y = example_rows(x, y, self.copies)
        outputs, _ = self.net.apply(params, state, x, key=key, train=self.train)
        return self.loss(outputs, y)


def net_loss(
    net: Layer,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    *,
    train: bool = True,
    copies: int = 1,
) -> NetLoss:
    """The per-example loss ``loss(net.apply(params, state, x, key=key, train=train)[0], y)``.

    ``loss(outputs, labels)`` defaults to the mean softmax cross-entropy with
    integer labels, outputs (N, classes) and labels (N,). ``copies=K``
    (augmentation multiplicity): the batch is x (N, K, H, W, C) with labels (N,),
    and each example's loss (so its gradient) is the mean over its K copies.
    """
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(
            f"net_loss(copies={copies!r}): give a positive int, the augmented copies per example"
        )
    return NetLoss(net, loss or cross_entropy, train, copies)


def per_example_grads(
    loss_fn: LossFn,
    *,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """``grads(params, state, x, y, key=None, *, out=None)``: the gradient of ``loss_fn`` for
    each example, jitted.

    ``x`` is (N, H, W, C) (or any pytree with a leading example axis), ``y`` is
    (N, ...). Returns a pytree like ``params`` whose leaves have a leading axis
    N, or ``(grads, aux)`` with ``has_aux=True`` (aux also stacked over N).
    Works under `jax.jit`.

    ``out``: the gradients an earlier call returned for a batch of the same size, given back
    so that this call writes into their buffers (they are donated: ``out`` cannot be read
    afterwards). On a CPU an output over 32 MiB otherwise costs fresh pages on every call: the
    small CNN's 108 MB at batch 64 took 25,090 page faults a call, 1 with ``out``, and ran
    1.3-1.6x faster (see `jaxconv.per_example` for the figures). Under an outer `jax.jit` give
    ``out`` there (``donate_argnames``) instead.
    """
    compute = _grads_function(loss_fn, strategy, chunk_size, has_aux)

    def into(params, state, x, y, key, out):
        del out  # only donated: XLA writes the gradients into its buffers
        return compute(params, state, x, y, key)

    jitted = jax.jit(into, donate_argnums=5, keep_unused=True)

    def grads(
        params: Params,
        state: State,
        x: PyTree,
        y: PyTree,
        key: Key | None = None,
        *,
        out: Params | None = None,
    ) -> Any:
        if out is not None:
            _check_out(out, params, num_examples(x, y))
        return jitted(params, state, x, y, key, out)

    return grads


def _grads_function(
    loss_fn: LossFn, strategy: Strategy, chunk_size: int | None, has_aux: bool
) -> Callable[..., Any]:
    if choose_strategy(loss_fn, strategy, chunk_size, has_aux=has_aux) == "einsum":
        return tapped_per_example_grads(loss_fn.net, loss_fn.loss, train=loss_fn.train, copies=loss_fn.copies)
    grad_fn = jax.grad(loss_fn, has_aux=has_aux)

    def one_example(params, state, x, y, key):
        return (), grad_fn(params, state, x, y, key)

    mapped = map_examples(one_example, strategy=strategy, chunk_size=chunk_size)

    def grads(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None) -> Any:
        return mapped(params, state, x, y, key)[1]

    return grads


def _check_out(out: Params, params: Params, count: int) -> None:
    """``out`` must have the shapes and dtypes of this call's gradients: ``params``' tree with
    each leaf (count, *leaf.shape)."""
    if jax.tree.structure(out) != jax.tree.structure(params):
        raise ValueError(
            "per_example_grads(out=...): out is not a tree like params; give the gradients an "
            "earlier call returned (the first element with has_aux=True), or out=None"
        )
    for (path, leaf), param in zip(
        jax.tree_util.tree_leaves_with_path(out), jax.tree.leaves(params), strict=True
    ):
        shape, dtype = (count, *jnp.shape(param)), jnp.result_type(param)
        if (jnp.shape(leaf), jnp.result_type(leaf)) != (shape, dtype):
            raise ValueError(
                f"per_example_grads(out=...): out{jax.tree_util.keystr(path)} is {jnp.shape(leaf)} "
                f"{jnp.result_type(leaf)}, this call's gradient is {shape} {dtype} (N={count}); give "
                "the gradients of an earlier call with the same batch size, or out=None"
            )


def per_example_grad_norms(
    loss_fn: LossFn,
    *,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``norms(params, state, x, y, key=None)``: per-example gradient L2 norms.

    Returns ``(global_norms, layer_norms)``: the norm of each example's whole
    gradient, (N,), and a dict from each layer's path in ``params``
    (``'residual_4/body/conv_0'``) to the norm of that layer's gradient, (N,).
    With the ``'chunked'`` and ``'loop'`` strategies only the norms of a chunk's
    gradients are kept, never all N gradients; with ``'einsum'`` they are ghost
    norms (`ghost_grad_norms`).
    """
    if choose_strategy(loss_fn, strategy, chunk_size) == "einsum":
        return ghost_grad_norms(loss_fn.net, loss_fn.loss, train=loss_fn.train, copies=loss_fn.copies)
    grad_fn = jax.grad(loss_fn)

    def one_example(params, state, x, y, key):
        layer_norms = layer_squared_norms(grad_fn(params, state, x, y, key))
        return (), (sum(layer_norms.values()), layer_norms)

    mapped = map_examples(one_example, strategy=strategy, chunk_size=chunk_size)

    def norms(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        squared, layer_squared = mapped(params, state, x, y, key)[1]
        return jnp.sqrt(squared), {path: jnp.sqrt(value) for path, value in layer_squared.items()}

    return norms


def choose_strategy(
    loss_fn: LossFn,
    strategy: str,
    chunk_size: int | None = None,
    *,
    has_aux: bool = False,
    extra: tuple[str, ...] = (),
) -> str:
    """The strategy that runs: ``strategy`` itself, checked, or what ``'auto'`` picks for ``loss_fn``.

    ``'auto'`` picks ``'einsum'`` for a `net_loss` loss without aux output or
    ``chunk_size``, else a mapped strategy (see the module docstring). ``extra``
    names strategies a caller adds (``clipped_grad_sum``'s ``'ghost'``).
    """
    valid = (*STRATEGIES, *extra)
    if strategy not in valid:
        raise ValueError(f"strategy={strategy!r} is not a per-example strategy; choose one of {valid}")
    walkable = isinstance(loss_fn, NetLoss) and not has_aux
    if strategy == "auto":
        return "einsum" if walkable and chunk_size is None else resolve_strategy("auto", chunk_size)[0]
    if strategy in ("einsum", *extra) and not walkable:
        what = "has_aux=True" if has_aux else f"a plain function {getattr(loss_fn, '__name__', loss_fn)!r}"
        raise ValueError(
            f"strategy={strategy!r} walks the net's Conv and Dense layers and needs the loss from "
            f"jc.per_example.net_loss(net, loss) without aux output; got {what}. Build the loss with "
            "net_loss, or choose strategy='vmap', 'chunked' or 'loop'"
        )
    if strategy not in ("einsum", *extra):
        resolve_strategy(strategy, chunk_size)  # checks chunk_size
    return strategy
