"""The mapped per-example strategies: ``'vmap'``, ``'chunked'`` and ``'loop'`` run a function on
every example of a batch, each with its batch axis of one and its own key.

`map_examples` is the engine under `jaxconv.per_example.per_example_grads`,
`jaxconv.per_example.per_example_grad_norms` and `jaxconv.privacy.clipped_grad_sum` for any loss;
see `jaxconv.per_example` for the strategies and the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Key, Params, PyTree, State, leaf_path

Strategy = Literal["auto", "vmap", "chunked", "loop", "einsum"]
STRATEGIES = ("auto", "vmap", "chunked", "loop", "einsum")
LossFn = Callable[..., Any]  # (params, state, x, y, key) -> scalar, or (scalar, aux)
ExampleFn = Callable[[Params, State, PyTree, PyTree, Key | None], tuple[PyTree, PyTree]]


def layer_squared_norms(grads: Params) -> dict[str, jax.Array]:
    """Squared L2 norm of each layer's gradient, keyed by the layer's path (``'a/b/conv_0'``).

    ``grads`` is one example's gradient, shaped like ``params``; every value is a scalar (all of a
    layer's leaves, all their axes, summed).
    """
    squared: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        layer = "/".join(leaf_path(path)[:-1])
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
        num = num_examples(x, y)
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


def example_rows(x: PyTree, y: PyTree, copies: int) -> tuple[PyTree, PyTree]:
    """One example as the rows a net sees: x (1, copies, ...) -> (copies, ...) and its labels
    (1, ...) repeated to (copies, ...); with ``copies=1``, x and y as they are.

    Augmentation multiplicity (De et al. 2022) gives each example ``copies`` augmented
    copies; the example's loss is the mean over them, so its gradient is their mean.
    """
    if copies == 1:
        return x, y
    sizes = {jnp.shape(leaf)[1:2] for leaf in jax.tree.leaves(x)}
    if sizes != {(copies,)}:
        raise ValueError(
            f"copies={copies} needs x shaped (N, {copies}, H, W, C), each example's copies on axis 1; "
            f"got axis-1 sizes {sorted(sizes)}"
        )
    merged = jax.tree.map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), x)
    return merged, jax.tree.map(lambda leaf: jnp.repeat(leaf, copies, axis=0), y)


def example_keys(key: Key | None, num: int) -> jax.Array | None:
    """``fold_in(key, i)`` for i in range(num): example i's key (None without a key)."""
    return None if key is None else jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num))


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


def num_examples(x: PyTree, y: PyTree) -> int:
    """N, the leading axis every leaf of ``x`` and ``y`` shares; an error naming the shapes if not."""
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
    "ExampleFn",
    "LossFn",
    "Strategy",
    "example_keys",
    "example_rows",
    "layer_squared_norms",
    "map_examples",
    "resolve_strategy",
]
