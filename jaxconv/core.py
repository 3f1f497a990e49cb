"""The layer protocol: every jaxconv layer is a pair of pure functions.

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)

- Shapes include the batch axis; -1 (or None) stands for "any batch size".
  `init` works out the output shape from the input shape alone, so a whole net's
  sizes are checked before any data flows.
- ``params`` are what the optimiser trains; ``state`` is everything else a layer
  carries between calls (BatchNorm's running statistics). Both are nested dicts
  of arrays with readable keys; a layer without any returns ``{}``.
- ``key`` is a `jax.random` key that combinators split so every child gets its
  own; ``train`` switches Dropout, StochasticDepth and BatchNorm to training.
- Activations are NHWC (N, H, W, C) and convolution kernels HWIO.

`Layer` is a NamedTuple, so ``init, apply = net`` works as in ``stax``. Beside
the two functions, jaxconv's own layers carry a small description (`info`): the
kind of layer, its hyperparameters and, for combinators, its children. The
summary, the receptive-field calculator and FC->CONV surgery read it; the
protocol itself never needs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

from jaxconv.errors import LayerTypeError
from jaxconv.traits import Traits

Shape = tuple[int, ...]
ShapeTree = Any  # a Shape, or a tuple of them for multi-input layers
PyTree = Any
Params = PyTree
State = PyTree
Array = jax.Array
Key = jax.Array

UNKNOWN = -1  # a size known only when data arrives: the batch, or a free spatial size
LayerPath = tuple[str, ...]  # where a layer sits in a net: its keys in params, ('stage1', 'conv_0')


class InitFn(Protocol):
    def __call__(self, key: Key | None, input_shape: ShapeTree) -> tuple[ShapeTree, Params, State]: ...


class ApplyFn(Protocol):
    def __call__(
        self, params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False
    ) -> tuple[Any, State]: ...


class Layer(NamedTuple):
    """A layer: ``init(key, input_shape)`` and ``apply(params, state, x, *, key, train)``."""

    init: InitFn
    apply: ApplyFn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kind = info(self).kind
        if args or kwargs:
            raise LayerTypeError(
                f"a {kind} layer is not called on data: run it with "
                "layer.apply(params, state, x), after params, state = layer.init(key, shape)[1:]"
            )
        raise LayerTypeError(f"{kind} is already a layer, not a constructor: write {kind}, not {kind}()")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What a layer is: its kind (``'Conv'``), hyperparameters, sub-layers and `Traits`
    (None for a hand-written layer, whose insides nothing knows)."""

    kind: str
    spec: dict[str, Any]
    children: tuple[tuple[str, Layer], ...] = ()
    name: str | None = None
    traits: Traits | None = None


def layer(
    kind: str,
    init: InitFn,
    apply: ApplyFn,
    children: Sequence[tuple[str, Layer]] = (),
    *,
    traits: Traits | None = None,
    **spec: Any,
) -> Layer:
    """Make a `Layer` that describes itself as ``kind`` with hyperparameters ``spec`` and ``traits``
    (what the tools need to know of the kind; None: nothing, as for a hand-written layer)."""
    info = LayerInfo(kind, spec, tuple(children), traits=traits)

    def described_init(key: Key | None, input_shape: ShapeTree) -> tuple[ShapeTree, Params, State]:
        input_shape = normalize_shape(input_shape)
        output_shape, params, state = init(key, input_shape)
        _record(info, input_shape, output_shape, params, state)
        return output_shape, params, state

    described_init.info = info  # type: ignore[attr-defined]
    return Layer(described_init, apply)


def info(net: Layer) -> LayerInfo:
    """The description of a layer; a hand-written ``Layer(init, apply)`` is kind ``'Layer'``."""
    return getattr(net.init, "info", None) or LayerInfo("Layer", {})


def named(name: str, net: Layer) -> Layer:
    """The same layer under a chosen name: its key in the parent's params and state."""
    if not name or not isinstance(name, str):
        raise ValueError(f"named: the name must be a non-empty string, got {name!r}")

    return redescribed(net, name=name)


def redescribed(net: Layer, apply: ApplyFn | None = None, **changes: Any) -> Layer:
    """``net`` with its description's fields replaced (``name=``, ``spec=``), the same ``init``
    and ``apply`` (or the wrapper ``apply`` given): for layers that wrap another one."""

    def init(key: Key | None, input_shape: ShapeTree) -> tuple[ShapeTree, Params, State]:
        return net.init(key, input_shape)

    init.info = dataclasses.replace(info(net), **changes)  # type: ignore[attr-defined]
    return Layer(init, apply or net.apply)


def child_names(layers: Sequence[Layer], combinator: str = "serial") -> tuple[str, ...]:
    """Keys for a combinator's children: a chosen name, else ``'<kind>_<index>'``."""
    for index, child in enumerate(layers):
        check_layer(child, f"{combinator}: child {index}")
    names = tuple(info(child).name or f"{info(child).kind.lower()}_{i}" for i, child in enumerate(layers))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two layers are named {duplicates}; give each a distinct name")
    return names


def check_layer(candidate: Any, where: str) -> None:
    """Raise `LayerTypeError` unless ``candidate`` is a `Layer`, showing the likely right call."""
    if isinstance(candidate, Layer):
        return
    name = getattr(candidate, "__name__", "")
    if callable(candidate) and getattr(candidate, "__module__", "").startswith("jaxconv.") and name:
        raise LayerTypeError(f"{where} is the constructor {name}, not a layer: write {name}(...)")
    if callable(candidate):
        raise LayerTypeError(
            f"{where} is the function {name or repr(candidate)}, not a layer: wrap it as jc.Lambda(fn)"
        )
    raise LayerTypeError(
        f"{where} is {candidate!r} ({type(candidate).__name__}), not a layer; "
        "layers are jc.Relu, jc.Conv(32, 3), jc.serial(...) or jc.Layer(init, apply)"
    )


# --- threading keys, params and state through children --------------------------------------


def split_key(key: Key | None, num: int) -> list[Key | None]:
    """One key per child; no key stays no key."""
    return [None] * num if key is None else list(jax.random.split(key, num))


def is_empty(tree: PyTree) -> bool:
    return not jax.tree_util.tree_leaves(tree)


def init_child(
    name: str, child: Layer, key: Key | None, input_shape: ShapeTree
) -> tuple[ShapeTree, Params, State]:
    """Initialise a child under ``name``; an error gets a note saying where it happened."""
    with _scope(name):
        try:
            return child.init(key, input_shape)
        except ValueError as error:
            error.add_note(f"in {name} ({info(child).kind}) with input shape {input_shape}")
            raise


def apply_child(
    name: str,
    child: Layer,
    params: Params,
    state: State,
    x: Any,
    key: Key | None,
    train: bool,
) -> tuple[Any, State]:
    """Apply a child to its entry of ``params`` and ``state`` (absent entries are empty), through
    the hook of an enclosing `intercept` block if there is one."""
    hook = _hook.get()
    try:
        with _scope(name):
            if hook is None:
                return child.apply(params.get(name, {}), state.get(name, {}), x, key=key, train=train)
            return hook(_path.get(), child, params.get(name, {}), state.get(name, {}), x, key, train)
    except ValueError as error:
        error.add_note(f"in {name} ({info(child).kind})")
        raise


Hook = Callable[[LayerPath, Layer, Params, State, Any, "Key | None", bool], tuple[Any, State]]
"""``hook(path, layer, params, state, x, key, train) -> (y, new_state)``: runs in place of
``layer.apply(params, state, x, key=key, train=train)`` for every child a combinator applies."""


@contextlib.contextmanager
def intercept(hook: Hook | None) -> Iterator[None]:
    """Within this block every combinator applies its children through ``hook`` (None: as they
    are), with the child's path in the net: to watch or replace what layers compute (the
    per-example taps), while the combinators keep threading keys, params and state as they
    always do. Python-level and trace-time only: under `jax.jit` it shapes the traced program."""
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)


Watch = Callable[[LayerPath, Layer, Any, Any], Any]  # watch(path, layer, x, y) -> the y to go on with


def apply_watched(
    net: Layer, params: Params, state: State, x: Any, key: Key | None, train: bool, watch: Watch
) -> Any:
    """``net.apply(params, state, x, key=key, train=train)[0]`` with each layer's output y (the net's
    at ``()`` too) replaced by ``watch(path, layer, x, y)``; an opaque layer's children run as is."""

    def hook(path, layer, params, state, x, key, train):
        with intercept(None) if (info(layer).traits or Traits()).opaque else contextlib.nullcontext():
            y, new_state = layer.apply(params, state, x, key=key, train=train)
        return watch(path, layer, x, y), new_state

    with intercept(hook):
        return hook((), net, params, state, x, key, train)[0]


def put(tree: dict[str, PyTree], name: str, value: PyTree) -> None:
    """Store a child's params or state, leaving out empty ones to keep trees readable."""
    if not is_empty(value):
        tree[name] = value


# --- shapes ---------------------------------------------------------------------------------


def normalize_shape(shape: ShapeTree) -> ShapeTree:
    """A shape as a tuple of ints with -1 for unknown sizes; tuples of shapes recurse."""
    if isinstance(shape, Sequence) and shape and not all(_is_dim(d) for d in shape):
        if all(isinstance(s, Sequence) for s in shape):
            return tuple(normalize_shape(s) for s in shape)
        raise ValueError(f"input_shape={shape!r} is not a shape: use ints, with -1 for the batch")
    if not isinstance(shape, Sequence):
        raise ValueError(f"input_shape={shape!r} is not a shape: use a tuple such as (-1, 28, 28, 1)")
    return tuple(UNKNOWN if d is None else int(d) for d in shape)


def _is_shape(value: object) -> bool:
    return isinstance(value, tuple) and all(_is_dim(d) for d in value)


def _is_dim(d: object) -> bool:
    return d is None or (isinstance(d, int | np.integer) and not isinstance(d, bool))


def concrete(shape: Shape, batch: int = 1) -> Shape:
    """A shape with unknown sizes replaced by ``batch``, for `jax.eval_shape`."""
    return tuple(batch if d == UNKNOWN else d for d in shape)


def with_batch(shape: Shape, like: Shape) -> Shape:
    """``shape`` with its batch axis set back to that of ``like`` (possibly -1)."""
    return (like[0], *shape[1:])


def eval_output_shape(fn: Callable[[Array], Any], input_shape: Shape, dtype: Any) -> ShapeTree:
    """The output shape of ``fn`` on an input of ``input_shape``, found without running it."""
    inputs = jax.tree_util.tree_map(
        lambda shape: jax.ShapeDtypeStruct(concrete(shape), dtype), input_shape, is_leaf=_is_shape
    )
    out = jax.eval_shape(fn, inputs)
    batch_like = (
        input_shape if _is_shape(input_shape) else jax.tree_util.tree_leaves(input_shape, _is_shape)[0]
    )
    return jax.tree_util.tree_map(lambda s: with_batch(s.shape, batch_like), out)


# --- recording what init sees, for the summary ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """One layer's view during `init`: where it sits, what it is, what goes in and out."""

    path: LayerPath
    info: LayerInfo
    input_shape: ShapeTree
    output_shape: ShapeTree
    params: Params
    state: State


_path: contextvars.ContextVar[LayerPath] = contextvars.ContextVar("jaxconv_path", default=())
_records: contextvars.ContextVar[list[Record] | None] = contextvars.ContextVar(
    "jaxconv_records", default=None
)
_hook: contextvars.ContextVar[Hook | None] = contextvars.ContextVar("jaxconv_apply_hook", default=None)


@contextlib.contextmanager
def _scope(name: str) -> Iterator[None]:
    token = _path.set((*_path.get(), name))
    try:
        yield
    finally:
        _path.reset(token)


def _record(info: LayerInfo, input_shape, output_shape, params, state) -> None:
    records = _records.get()
    if records is not None:
        records.append(Record(_path.get(), info, input_shape, output_shape, params, state))


def trace_init(
    net: Layer, key: Key | None, input_shape: ShapeTree
) -> tuple[tuple[ShapeTree, Params, State], list[Record]]:
    """Run ``net.init`` and return its result with a `Record` per layer, children first."""
    records: list[Record] = []
    token = _records.set(records)
    try:
        result = net.init(key, input_shape)
    finally:
        _records.reset(token)
    return result, records


@dataclasses.dataclass(frozen=True)
class ShapeTrace:
    """What `trace` learns from a net's ``init`` without allocating arrays: the output shape,
    params and state as trees of `jax.ShapeDtypeStruct`, and a `Record` per layer."""

    output_shape: ShapeTree
    params: PyTree
    state: PyTree
    records: list[Record]

    def by_path(self) -> dict[LayerPath, Record]:
        """The record of each path; for `shape_dependent` layers, the outer one."""
        return {record.path: record for record in self.records}


def trace(net: Layer, input_shape: ShapeTree) -> ShapeTrace:
    """Run ``net.init`` under `jax.eval_shape`: every layer's shapes, and no array allocated (a
    150-layer net at 224x224 takes seconds). The one shape-only pass over a net."""
    captured: dict[str, Any] = {}
    input_shape = normalize_shape(input_shape)

    def run(key):
        (output_shape, params, state), records = trace_init(net, key, input_shape)
        captured["records"] = [
            dataclasses.replace(r, params=_abstract(r.params), state=_abstract(r.state)) for r in records
        ]
        captured["output_shape"] = output_shape
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return ShapeTrace(captured["output_shape"], params, state, captured["records"])


def _abstract(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)


def walk(net: Layer, path: LayerPath = ()) -> Iterator[tuple[LayerPath, LayerInfo]]:
    """Every layer of ``net`` with its path, parents before children (the net itself at ``()``):
    the one walk over a net's descriptions. A hand-written layer hides its insides."""
    description = info(net)
    yield path, description
    for name, child in description.children:
        yield from walk(child, (*path, name))


def leaf_path(keys: Sequence[Any]) -> LayerPath:
    """A pytree key path (`jax.tree_util.tree_leaves_with_path`'s) as the names along it:
    ``('residual_4', 'body', 'conv_0', 'kernel')``; the layer's path is all but the last."""
    return tuple(str(getattr(entry, "key", entry)) for entry in keys)


def subtree(tree: PyTree, path: LayerPath) -> PyTree:
    """The part of a params or state tree under ``path`` (``{}`` where a layer keeps nothing)."""
    for name in path:
        tree = tree.get(name, {})
    return tree
