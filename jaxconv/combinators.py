"""Combinators: layers made of layers.

`serial` chains layers; `fan_out`, `parallel` and the fan-ins build branches
(Inception modules, DenseNet's concatenations); `residual` adds a shortcut.
Each threads params, state and a key per child, and computes its output shape
at init from its children's, without running anything.

>>> import jax, jaxconv as jc
>>> net = jc.serial(jc.Conv(8, 3, padding=1), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(10))
>>> out_shape, params, state = net.init(jax.random.key(0), (-1, 28, 28, 1))
>>> out_shape
(-1, 10)
>>> sorted(params), state
(['conv_0', 'dense_4'], {})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax.numpy as jnp

from jaxconv.core import (
    UNKNOWN,
    Array,
    Layer,
    Shape,
    ShapeTree,
    apply_child,
    check_layer,
    child_names,
    eval_output_shape,
    init_child,
    layer,
    named,
    put,
    split_key,
)
from jaxconv.errors import ShapeError
from jaxconv.traits import VIEW, Traits

_COMBINATOR = Traits(saved=(0, 0))  # its children hold the volumes and the work


def serial(*layers: Layer) -> Layer:
    """Apply ``layers`` one after another; params and state are keyed by child name."""
    if not layers:
        raise ValueError("serial() needs at least one layer; use Identity for a no-op")
    names = child_names(layers, "serial")

    def init(key, input_shape):
        params, state, shape = {}, {}, input_shape
        for name, child, child_key in zip(names, layers, split_key(key, len(layers)), strict=True):
            shape, child_params, child_state = init_child(name, child, child_key, shape)
            put(params, name, child_params)
            put(state, name, child_state)
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        for name, child, child_key in zip(names, layers, split_key(key, len(layers)), strict=True):
            x, child_state = apply_child(name, child, params, state, x, child_key, train)
            put(new_state, name, child_state)
        return x, new_state

    return layer("Serial", init, apply, children=tuple(zip(names, layers, strict=True)), traits=_COMBINATOR)


def parallel(*layers: Layer) -> Layer:
    """Apply the i-th layer to the i-th input of a tuple; returns a tuple."""
    names = child_names(layers, "parallel")

    def init(key, input_shape):
        _check_arity("parallel", input_shape, len(layers))
        params, state, shapes = {}, {}, []
        keys = split_key(key, len(layers))
        for name, child, child_key, shape in zip(names, layers, keys, input_shape, strict=True):
            out_shape, child_params, child_state = init_child(name, child, child_key, shape)
            shapes.append(out_shape)
            put(params, name, child_params)
            put(state, name, child_state)
        return tuple(shapes), params, state

    def apply(params, state, xs, *, key=None, train=False):
        outputs, new_state = [], {}
        keys = split_key(key, len(layers))
        for name, child, child_key, x in zip(names, layers, keys, xs, strict=True):
            y, child_state = apply_child(name, child, params, state, x, child_key, train)
            outputs.append(y)
            put(new_state, name, child_state)
        return tuple(outputs), new_state

    return layer("Parallel", init, apply, children=tuple(zip(names, layers, strict=True)), traits=_COMBINATOR)


def fan_out(num: int) -> Layer:
    """Copy the input into a tuple of ``num`` branches."""
    if num < 1:
        raise ValueError(f"fan_out(num={num}): num must be at least 1")

    def init(key, input_shape):
        return (input_shape,) * num, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return (x,) * num, {}

    return layer("FanOut", init, apply, traits=dataclasses.replace(VIEW, field="fan_out"), num=num)


def _fan_in_sum() -> Layer:
    def init(key, input_shape):
        _check_arity("fan_in_sum", input_shape)
        shape = input_shape[0]
        for other in input_shape[1:]:
            shape = _merge_shapes("fan_in_sum", shape, other)
        return shape, {}, {}

    def apply(params, state, xs, *, key=None, train=False):
        chex.assert_equal_shape(xs)  # checked while tracing; free at run time
        return sum(xs[1:], start=xs[0]), {}

    return layer("FanInSum", init, apply, traits=Traits(saved=(0, 0), field="fan_in"))


fan_in_sum = _fan_in_sum()
"""Sum a tuple of branches of equal shape."""


def fan_in_concat(axis: int = -1) -> Layer:
    """Concatenate a tuple of branches along ``axis`` (channels by default)."""

    def init(key, input_shape):
        _check_arity("fan_in_concat", input_shape)
        rank = len(input_shape[0])
        ax = axis % rank
        if ax == 0:
            raise ValueError("fan_in_concat(axis=0) would concatenate batches; use a feature axis")
        for shape in input_shape:
            rest = shape[:ax] + shape[ax + 1 :]
            if len(shape) != rank or not _compatible(rest, input_shape[0][:ax] + input_shape[0][ax + 1 :]):
                raise ShapeError(
                    f"fan_in_concat(axis={axis}): branch shapes {list(input_shape)} differ "
                    f"outside axis {ax}; only the concatenated axis may differ"
                )
        total = sum(shape[ax] for shape in input_shape)
        out = list(input_shape[0])
        out[ax] = total
        return tuple(out), {}, {}

    def apply(params, state, xs, *, key=None, train=False):
        return jnp.concatenate(xs, axis=axis), {}

    return layer("FanInConcat", init, apply, traits=Traits(field="fan_in"), axis=axis)


def residual(body: Layer, shortcut: Layer | None = None) -> Layer:
    """``body(x) + shortcut(x)``; the shortcut is the identity unless given.

    The shapes must agree; when the body changes size or width, give a
    projection such as ``shortcut=Conv(features, 1, stride=2)``.
    """
    check_layer(body, "residual: body")
    if shortcut is not None:
        check_layer(shortcut, "residual: shortcut")
    children = (("body", body),) + ((("shortcut", shortcut),) if shortcut is not None else ())

    def init(key, input_shape):
        body_key, shortcut_key = split_key(key, 2)
        params, state = {}, {}
        body_shape, body_params, body_state = init_child("body", body, body_key, input_shape)
        put(params, "body", body_params)
        put(state, "body", body_state)
        shortcut_shape = input_shape
        if shortcut is not None:
            shortcut_shape, shortcut_params, shortcut_state = init_child(
                "shortcut", shortcut, shortcut_key, input_shape
            )
            put(params, "shortcut", shortcut_params)
            put(state, "shortcut", shortcut_state)
        if not _compatible(body_shape, shortcut_shape):
            fix = "give a projection shortcut, e.g. shortcut=Conv(features, 1, stride=...)"
            raise ShapeError(
                f"residual: the body gives {body_shape} but the shortcut gives {shortcut_shape}; "
                + ("make them agree" if shortcut is not None else fix)
            )
        return _merge_shapes("residual", body_shape, shortcut_shape), params, state

    def apply(params, state, x, *, key=None, train=False):
        body_key, shortcut_key = split_key(key, 2)
        y, body_state = apply_child("body", body, params, state, x, body_key, train)
        new_state = {}
        put(new_state, "body", body_state)
        if shortcut is not None:
            x, shortcut_state = apply_child("shortcut", shortcut, params, state, x, shortcut_key, train)
            put(new_state, "shortcut", shortcut_state)
        chex.assert_equal_shape((y, x))
        return y + x, new_state

    return layer("Residual", init, apply, children=children, traits=Traits(saved=(0, 0), new_volume=True))


def wired(kind: str, children: Sequence[tuple[str, Layer]], run: Callable[..., Any]) -> Layer:
    """A layer of named ``children`` connected by ``run(step, x)``, for graphs the other combinators
    do not express (auxiliary heads, FractalNet's joins).

    ``run`` passes values through the children by calling ``step(name, child, value)``; the same
    ``run`` works out shapes at init (``value`` is a shape) and computes at apply (``value`` is an
    array). Each child is stepped once, in a fixed order, and gets its own key.
    """
    for name, child in children:
        check_layer(child, f"{kind}: child {name!r}")

    def init(key, input_shape):
        params, state, keys = {}, {}, iter(split_key(key, len(children)))

        def step(name, child, shape):
            shape, child_params, child_state = init_child(name, child, next(keys), shape)
            put(params, name, child_params)
            put(state, name, child_state)
            return shape

        return run(step, input_shape), params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state, keys = {}, iter(split_key(key, len(children)))

        def step(name, child, x):
            y, child_state = apply_child(name, child, params, state, x, next(keys), train)
            put(new_state, name, child_state)
            return y

        return run(step, x), new_state

    return layer(kind, init, apply, children=tuple(children), traits=_COMBINATOR)


def _identity() -> Layer:
    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x, {}

    return layer("Identity", init, apply, traits=VIEW)


Identity = _identity()
"""The layer that returns its input."""


def Lambda(fn: Callable[[Array], Array], name: str = "Lambda") -> Layer:
    """A layer without parameters that applies ``fn`` to its input.

    The output shape is found with `jax.eval_shape`, so ``fn`` must not depend
    on the batch size.
    """

    def init(key, input_shape):
        return eval_output_shape(fn, input_shape, jnp.float32), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return fn(x), {}

    return layer(name, init, apply, traits=Traits(), fn=fn)


def shape_dependent(make_layer: Callable[[Shape], Layer]) -> Layer:
    """A layer chosen from the input shape: ``make_layer(input_shape)`` builds it.

    Useful when a hyperparameter depends on the incoming volume, e.g. a
    DenseNet transition that halves however many channels arrive. The shape
    given to ``make_layer`` has -1 for the batch, at init and at apply alike.
    """

    def init(key, input_shape):
        return make_layer((UNKNOWN, *input_shape[1:])).init(key, input_shape)

    def apply(params, state, x, *, key=None, train=False):
        shape = (UNKNOWN, *x.shape[1:])
        return make_layer(shape).apply(params, state, x, key=key, train=train)

    return layer("ShapeDependent", init, apply, traits=_COMBINATOR, make_layer=make_layer)


def concat_with_input(body: Layer) -> Layer:
    """``concat([x, body(x)], channels)``, DenseNet's connection; params under ``['paths']['new']``."""
    return serial(fan_out(2), named("paths", parallel(Identity, named("new", body))), fan_in_concat())


def with_aux_heads(stages: Sequence[tuple[str, Layer]], heads: Sequence[tuple[str, str, Layer]]) -> Layer:
    """Run named ``stages`` in order, also feeding the output of stage ``after`` to each head.

    ``heads`` are ``(after, name, head)``; the layer returns ``(final, *head outputs)`` in the
    order of ``heads`` (GoogLeNet's and Inception v3's auxiliary classifiers). Params are keyed
    by the stage and head names, side by side.
    """
    names = [name for name, _ in stages]
    for after, name, _ in heads:
        if after not in names:
            raise ValueError(
                f"with_aux_heads: head {name!r} follows unknown stage {after!r}; stages: {names}"
            )
    children = [*stages, *((name, head) for _, name, head in heads)]

    def run(step, x):
        """Thread ``x`` through the stages and heads with ``step(name, child, x)``."""
        taps = {}
        for name, stage in stages:
            x = step(name, stage, x)
            taps[name] = x
        return (x, *(step(name, head, taps[after]) for after, name, head in heads))

    return wired("WithAuxHeads", children, run)


# --- helpers -----------------------------------------------------------------------------------


def _check_arity(name: str, input_shape: ShapeTree, expected: int | None = None) -> None:
    is_tuple = isinstance(input_shape, tuple) and all(isinstance(s, tuple) for s in input_shape)
    if not is_tuple or (expected is not None and len(input_shape) != expected):
        want = f"a tuple of {expected} shapes" if expected else "a tuple of shapes"
        raise ShapeError(
            f"{name} takes {want} (the branches), got {input_shape}; put fan_out(n) before the branches"
        )


def _compatible(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(x == y or UNKNOWN in (x, y) for x, y in zip(a, b, strict=True))


def _merge_shapes(name: str, a: Shape, b: Shape) -> Shape:
    if not _compatible(a, b):
        raise ShapeError(f"{name}: branch shapes {a} and {b} differ; they must be equal to add")
    return tuple(y if x == UNKNOWN else x for x, y in zip(a, b, strict=True))


__all__ = [
    "Identity",
    "Lambda",
    "concat_with_input",
    "fan_in_concat",
    "fan_in_sum",
    "fan_out",
    "parallel",
    "residual",
    "serial",
    "shape_dependent",
    "wired",
    "with_aux_heads",
]
