"""Receptive fields: how much of the input each layer's neurons see, for any net.

Along one spatial axis, a layer sliding a filter of size F with dilation D and
stride S over a volume whose neurons each see ``field`` input pixels, adjacent
ones ``jump`` pixels apart, gives neurons that see

    field + (D*(F - 1)) * jump      pixels, adjacent ones S * jump apart

(`jaxconv.sizing.receptive_fields` for a chain). Branches (`fan_out`,
`parallel`, `residual`, the fan-ins) take the largest field over their branches.
Layers that act on each position alone (activations, BatchNorm, LRN, Dropout,
Dense on a vector) keep the field; normalisation statistics are ignored, as in
the notes. `Flatten`, `GlobalAvgPool` and `GlobalMaxPool` see their whole input
volume, so their field spans it and their jump is ``None``. `ConvTranspose`,
and hand-written layers that change the spatial size, give ``None`` (unknown)
from there on.

>>> import jaxconv as jc
>>> net = jc.serial(jc.Conv(8, 3), jc.Relu, jc.Conv(8, 3), jc.MaxPool(2), jc.Conv(8, 3, dilation=2))
>>> receptive_field(net, (-1, 32, 32, 3))
Field(size=(14, 14), jump=(2, 2))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxconv import core, sizing
from jaxconv.core import Layer, Record, ShapeTree
from jaxconv.sizing import per_axis

Path = tuple[str, ...]

SLIDING = {"Conv": "kernel_size", "LocallyConnected": "kernel_size"} | dict.fromkeys(
    ("MaxPool", "AvgPool", "LpPool"), "window"
)
WHOLE_VOLUME = frozenset({"Flatten", "GlobalAvgPool", "GlobalMaxPool"})
UNKNOWN = frozenset({"ConvTranspose"})


class Field(NamedTuple):
    """A neuron's receptive field in input pixels, and the jump between neighbours, per spatial axis."""

    size: tuple[int, ...]
    jump: tuple[int, ...] | None


FieldTree = Any  # a Field, None (unknown), or a tuple of them for multi-branch volumes


@dataclasses.dataclass(frozen=True)
class ShapeTrace:
    """What `trace` learns from a net's init without allocating arrays."""

    output_shape: ShapeTree
    params: Any  # pytree of jax.ShapeDtypeStruct
    state: Any
    records: list[Record]

    def by_path(self) -> dict[Path, Record]:
        """The record of each path; for `shape_dependent` layers, the outer one."""
        return {record.path: record for record in self.records}


def trace(net: Layer, input_shape: ShapeTree) -> ShapeTrace:
    """Run ``net.init`` under `jax.eval_shape`: every layer's shapes, no arrays allocated.

    Params and state (in the result and in each `core.Record`) are trees of
    `jax.ShapeDtypeStruct`.
    """
    captured: dict[str, Any] = {}

    def run(key):
        (output_shape, params, state), records = core.trace_init(net, key, input_shape)
        captured["records"] = [
            dataclasses.replace(r, params=_abstract(r.params), state=_abstract(r.state)) for r in records
        ]
        captured["output_shape"] = output_shape
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return ShapeTrace(captured["output_shape"], params, state, captured["records"])


def _abstract(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), tree)


def receptive_field(net: Layer, input_shape: ShapeTree) -> FieldTree:
    """The receptive field and jump of ``net``'s output neurons on an input of ``input_shape``."""
    shape_trace = trace(net, input_shape)
    return layer_fields(net, shape_trace, core.normalize_shape(input_shape))[()]


def layer_fields(net: Layer, shape_trace: ShapeTrace, input_shape: ShapeTree) -> dict[Path, FieldTree]:
    """The field of every layer's output, keyed by its path (the net itself is ``()``)."""
    fields: dict[Path, FieldTree] = {}
    _walk(net, (), initial_field(input_shape), shape_trace.by_path(), fields)
    return fields


def initial_field(shape: ShapeTree) -> FieldTree:
    """An input pixel sees itself: field 1, jump 1 on every spatial axis."""
    if shape and isinstance(shape[0], tuple):
        return tuple(initial_field(s) for s in shape)
    rank = max(len(shape) - 2, 0)
    return Field((1,) * rank, (1,) * rank)


def widest(field: FieldTree) -> Field | None:
    """The largest field (and jump) over the branches of ``field``; None if any is unknown."""
    if field is None or isinstance(field, Field):
        return field
    parts = [widest(f) for f in field]
    if any(p is None for p in parts) or not parts:
        return None
    sizes = tuple(max(axis) for axis in zip(*(p.size for p in parts), strict=True))
    jumps = [p.jump for p in parts if p.jump is not None]
    jump = tuple(max(axis) for axis in zip(*jumps, strict=True)) if len(jumps) == len(parts) else None
    return Field(sizes, jump)


def _walk(net: Layer, path: Path, field: FieldTree, records: dict[Path, Record], out: dict) -> FieldTree:
    description = core.info(net)
    rule = _COMBINATORS.get(description.kind)
    if rule is not None:
        result = rule(description, path, field, records, out)
    elif description.kind == "ShapeDependent" and path in records:
        inner = description.spec["make_layer"](records[path].input_shape)
        result = _walk(inner, path, field, records, out)
    else:
        result = _leaf(description, records.get(path), field)
    out[path] = result
    return result


def _serial(description, path, field, records, out):
    for name, child in description.children:
        field = _walk(child, (*path, name), field, records, out)
    return field


def _parallel(description, path, field, records, out):
    branches = field if isinstance(field, tuple) else (field,) * len(description.children)
    return tuple(
        _walk(child, (*path, name), branch, records, out)
        for (name, child), branch in zip(description.children, branches, strict=True)
    )


def _residual(description, path, field, records, out):
    results = [_walk(child, (*path, name), field, records, out) for name, child in description.children]
    if len(results) == 1:  # identity shortcut
        results.append(field)
    return widest(tuple(results))


_COMBINATORS: dict[str, Callable[..., FieldTree]] = {
    "Serial": _serial,
    "Parallel": _parallel,
    "Residual": _residual,
}


def _leaf(description: core.LayerInfo, record: Record | None, field: FieldTree) -> FieldTree:
    kind, spec = description.kind, description.spec
    if kind == "FanOut":
        return (field,) * spec["num"]
    if kind in ("FanInSum", "FanInConcat"):
        return widest(field)
    if field is None or record is None or kind in UNKNOWN or not isinstance(field, Field):
        return None
    if kind in SLIDING:
        return _slide(field, kind, spec, record.input_shape)
    if kind in WHOLE_VOLUME:
        return _whole(field, record.input_shape)
    if field.jump is None or _spatial(record.input_shape) == _spatial(record.output_shape):
        return field  # acts on each position (or on a flat vector) alone
    return None


def _slide(field: Field, kind: str, spec: dict, input_shape: tuple[int, ...]) -> Field | None:
    if field.jump is None:
        return None
    rank = len(field.size)
    window = per_axis(spec[SLIDING[kind]], rank, kind, SLIDING[kind])
    stride = per_axis(spec.get("stride", 1), rank, kind, "stride")
    dilation = per_axis(spec.get("dilation", 1), rank, kind, "dilation")
    size = tuple(
        f + (sizing.effective_filter(F, D) - 1) * j
        for f, j, F, D in zip(field.size, field.jump, window, dilation, strict=True)
    )
    return Field(size, tuple(j * S for j, S in zip(field.jump, stride, strict=True)))


def _whole(field: Field, input_shape: tuple[int, ...]) -> Field | None:
    spatial = _spatial(input_shape)
    if field.jump is None or sizing.UNKNOWN in spatial:
        return None if sizing.UNKNOWN in spatial else field
    return Field(
        tuple(f + (W - 1) * j for f, W, j in zip(field.size, spatial, field.jump, strict=True)), None
    )


def _spatial(shape: ShapeTree) -> tuple[int, ...] | None:
    if not shape or isinstance(shape[0], tuple):
        return None
    return tuple(shape[1:-1])


__all__ = ["Field", "ShapeTrace", "layer_fields", "receptive_field", "trace", "widest"]
