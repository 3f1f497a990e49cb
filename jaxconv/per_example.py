"""Per-example gradients: one gradient per example of a batch, for norm studies and DP-SGD.

A per-example loss has the signature

    loss_fn(params, state, x, y, key) -> scalar        # or (scalar, aux) with has_aux=True

and is called on ONE example that keeps a batch axis of one: ``x`` is (1, H, W, C)
and ``y`` is (1, ...), the jaxconv convention, so every layer sees the shapes it
sees in training. `net_loss` builds one from any net (a zoo model included):

>>> import jax, jaxconv as jc
>>> net = jc.serial(jc.Conv(4, 3), jc.Relu, jc.Flatten, jc.Dense(10))
>>> _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 1))
>>> from jaxconv.per_example import net_loss, per_example_grads
>>> grads_fn = per_example_grads(net_loss(net))
>>> grads = grads_fn(params, state, jax.numpy.ones((5, 8, 8, 1)), jax.numpy.arange(5))
>>> grads["dense_3"]["kernel"].shape  # (N, *kernel.shape)
(5, 144, 10)

Randomness: with a ``key``, example ``i`` of the batch gets
``jax.random.fold_in(key, i)``, whatever the strategy, so Dropout masks are
reproducible example by example.

Strategies (all give the same numbers; they differ in speed and memory):

- ``'vmap'``: `jax.vmap` of `jax.grad` over all examples at once. The memory
  of N gradients; on CPU the convolution weight gradients become grouped
  convolutions that XLA's CPU backend runs slowly.
- ``'chunked'``: vmap over ``chunk_size`` examples at a time, a `lax.scan` over
  the chunks: bounded memory.
- ``'loop'``: one example at a time in a `lax.scan` (``chunk_size=1``).
- ``'einsum'``: for a loss from `net_loss`: one vmapped forward and backward
  pass that keeps each Conv's and Dense's input and output gradient per
  example; their weight gradients are einsums of input patches and output
  gradients (Opacus' method), every other parameter's come from vmap
  (`jaxconv.privacy.ghost`).
- ``'auto'``: ``'einsum'`` for a `net_loss` loss on every backend (on a
  2-core CPU, batch 64 of the small Fashion-MNIST CNN, it measured 1.6-2.1x a
  jitted per-example loop, 9-12x ``'loop'`` and 14-19x ``'vmap'``:
  ``benchmarks/per_example.py``; on accelerators it is large matrix products,
  where vmap's grouped convolutions are the alternative); for any other loss
  (or with ``chunk_size`` or ``has_aux``), ``'loop'`` on CPU, else ``'chunked'``
  when ``chunk_size`` is given, else ``'vmap'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Key, Layer, Params, PyTree, State
from jaxconv.losses import cross_entropy

Strategy = Literal["auto", "vmap", "chunked", "loop", "einsum"]
STRATEGIES = ("auto", "vmap", "chunked", "loop", "einsum")
LossFn = Callable[..., Any]  # (params, state, x, y, key) -> scalar, or (scalar, aux)
ExampleFn = Callable[[Params, State, PyTree, PyTree, Key | None], tuple[PyTree, PyTree]]


@dataclasses.dataclass(frozen=True, eq=False)
class NetLoss:
    """``loss(net.apply(params, state, x, key=key, train=train)[0], y)``: a per-example loss that
    knows its net, so that the ``'einsum'`` strategy can walk the net's layers."""

    net: Layer
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    train: bool = True

    def __call__(
        self, params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None
    ) -> jax.Array:
        outputs, _ = self.net.apply(params, state, x, key=key, train=self.train)
        return self.loss(outputs, y)


def net_loss(
    net: Layer,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    *,
    train: bool = True,
) -> NetLoss:
    """The per-example loss ``loss(net.apply(params, state, x, key=key, train=train)[0], y)``.

    ``loss(outputs, labels)`` defaults to the mean softmax cross-entropy with
    integer labels, outputs (N, classes) and labels (N,).
    """
    return NetLoss(net, loss or cross_entropy, train)


def per_example_grads(
    loss_fn: LossFn,
    *,
    strategy: Strategy = "auto",
    chunk_size: int | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """``grads(params, state, x, y, key=None)``: the gradient of ``loss_fn`` for each example.

    ``x`` is (N, H, W, C) (or any pytree with a leading example axis), ``y`` is
    (N, ...). Returns a pytree like ``params`` whose leaves have a leading axis
    N, or ``(grads, aux)`` with ``has_aux=True`` (aux also stacked over N).
    Works under `jax.jit`.
    """
    if choose_strategy(loss_fn, strategy, chunk_size, has_aux=has_aux) == "einsum":
        from jaxconv.privacy.ghost import tapped_per_example_grads  # the layer walker lives there

        return tapped_per_example_grads(loss_fn.net, loss_fn.loss, train=loss_fn.train)
    grad_fn = jax.grad(loss_fn, has_aux=has_aux)

    def one_example(params, state, x, y, key):
        return (), grad_fn(params, state, x, y, key)

    mapped = map_examples(one_example, strategy=strategy, chunk_size=chunk_size)

    def grads(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None) -> Any:
        return mapped(params, state, x, y, key)[1]

    return grads


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
    norms (`jaxconv.privacy.ghost_grad_norms`).
    """
    if choose_strategy(loss_fn, strategy, chunk_size) == "einsum":
        from jaxconv.privacy.ghost import ghost_grad_norms  # the layer walker lives there

        return ghost_grad_norms(loss_fn.net, loss_fn.loss, train=loss_fn.train)
    grad_fn = jax.grad(loss_fn)

    def one_example(params, state, x, y, key):
        layer_norms = layer_squared_norms(grad_fn(params, state, x, y, key))
        return (), (sum(layer_norms.values()), layer_norms)

    mapped = map_examples(one_example, strategy=strategy, chunk_size=chunk_size)

    def norms(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        squared, layer_squared = mapped(params, state, x, y, key)[1]
        return jnp.sqrt(squared), {path: jnp.sqrt(value) for path, value in layer_squared.items()}

    return norms


def layer_squared_norms(grads: Params) -> dict[str, jax.Array]:
    """Squared L2 norm of each layer's gradient, keyed by the layer's path (``'a/b/conv_0'``)."""
    squared: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        layer = "/".join(str(getattr(entry, "key", entry)) for entry in path[:-1])
        squared[layer] = squared.get(layer, 0.0) + jnp.sum(jnp.square(leaf))
    return squared


def map_examples(
    fn: ExampleFn, *, strategy: Strategy = "auto", chunk_size: int | None = None
) -> Callable[..., tuple[PyTree, PyTree]]:
    """Run ``fn(params, state, x_i, y_i, key_i) -> (summed, stacked)`` on every example.

    Each example is passed with a batch axis of one and key
    ``fold_in(key, i)`` (or None). Returns the sum over examples of the first
    output and the second output stacked along a leading axis N. The strategy
    decides how many examples run at once (see the module docstring).
    """
    strategy, chunk_size = resolve_strategy(strategy, chunk_size)

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None = None):
        num = _num_examples(x, y)
        keys = example_keys(key, num)

        def one(example):
            x_i, y_i, key_i = example
            return fn(params, state, _add_batch_axis(x_i), _add_batch_axis(y_i), key_i)

        def many(examples):  # (chunk, ...) examples -> chunk's sum and stacked outputs
            summed, stacked = jax.vmap(one)(examples)
            return jax.tree.map(lambda leaf: leaf.sum(0), summed), stacked

        examples = (x, y, keys)
        if strategy == "loop":
            return _scan_sum(one, examples)
        if chunk_size >= num:
            return many(examples)
        return _chunked(many, examples, num, chunk_size)

    return run


def example_keys(key: Key | None, num: int) -> jax.Array | None:
    """``fold_in(key, i)`` for i in range(num): example i's key (None without a key)."""
    return None if key is None else jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num))


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


def resolve_strategy(strategy: Strategy, chunk_size: int | None) -> tuple[str, int]:
    """The concrete mapped strategy and chunk size (examples at once; huge for ``'vmap'``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not a per-example strategy; choose one of {STRATEGIES}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int (examples per chunk)")
    if strategy == "einsum":
        raise ValueError(
            "strategy='einsum' is not a mapped strategy: map_examples takes 'vmap', 'chunked' or 'loop'"
        )
    if strategy == "auto":
        strategy = _auto_strategy(chunk_size)
    if strategy == "loop":
        return "loop", 1
    if strategy == "chunked":
        if chunk_size is None:
            raise ValueError("strategy='chunked' needs chunk_size, e.g. chunk_size=16 examples at a time")
        return "chunked", chunk_size
    return "vmap", 2**62


def _auto_strategy(chunk_size: int | None) -> str:
    """A mapped strategy: one example at a time on CPU (vmapped conv weight gradients are slow
    there: 'loop' measured 1.5x 'vmap', 20x 'chunked'); else vmap, in chunks when ``chunk_size`` is given."""
    if jax.default_backend() == "cpu":
        return "loop"
    return "vmap" if chunk_size is None else "chunked"


def _chunked(many, examples, num: int, chunk_size: int):
    """``many`` over full chunks in a `lax.scan`, then over the remainder; sums add, stacks join."""
    full = num - num % chunk_size
    chunks = jax.tree.map(lambda leaf: leaf[:full].reshape(-1, chunk_size, *leaf.shape[1:]), examples)
    total, stacked = _scan_sum(many, chunks)
    stacked = jax.tree.map(lambda leaf: leaf.reshape(full, *leaf.shape[2:]), stacked)
    if full == num:
        return total, stacked
    rest_total, rest_stacked = many(jax.tree.map(lambda leaf: leaf[full:], examples))
    total = jax.tree.map(jnp.add, total, rest_total)
    return total, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), stacked, rest_stacked)


def _scan_sum(fn, xs):
    """`lax.scan` of ``fn(x) -> (summed, stacked)`` over the leading axis of ``xs``."""
    first = jax.tree.map(lambda leaf: leaf[0], xs)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first)[0])

    def step(total, x):
        summed, stacked = fn(x)
        return jax.tree.map(jnp.add, total, summed), stacked

    return lax.scan(step, zeros, xs)


def _num_examples(x: PyTree, y: PyTree) -> int:
    sizes = {leaf.shape[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves((x, y))}
    if len(sizes) != 1 or None in sizes:
        shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves((x, y))]
        raise ValueError(
            f"per-example functions need x and y with the same leading example axis N, got shapes "
            f"{shapes}; give x as (N, H, W, C) and y as (N, ...)"
        )
    return sizes.pop()


def _add_batch_axis(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda leaf: leaf[None], tree)


__all__ = [
    "STRATEGIES",
    "LossFn",
    "NetLoss",
    "Strategy",
    "choose_strategy",
    "example_keys",
    "layer_squared_norms",
    "map_examples",
    "net_loss",
    "per_example_grad_norms",
    "per_example_grads",
    "resolve_strategy",
]
