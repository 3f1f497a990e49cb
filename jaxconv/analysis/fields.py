"""Receptive fields: how much of the input each layer's neurons see, for any net.

Along one spatial axis, a layer sliding a filter of size F with dilation D and
stride S over a volume whose neurons each see ``field`` input pixels, adjacent
ones ``jump`` pixels apart, gives neurons that see

    field + (D*(F - 1)) * jump      pixels, adjacent ones S * jump apart

(`jaxconv.sizing.receptive_fields` for a chain). How a field passes through a
layer is the layer's `jaxconv.traits.Traits.field`. Branches (`fan_out`,
`parallel`, `residual`, the fan-ins) take the largest field over their branches.
Layers that act on each position alone (activations, BatchNorm, LRN, Dropout,
Dense on a vector) keep the field; normalisation statistics are ignored, as in
the notes. `Flatten`, `GlobalAvgPool` and `GlobalMaxPool` see their whole input
volume, so their field spans it and their jump is ``None``. `ConvTranspose`,
hand-written layers (nothing is known of their insides) and layers that change
the spatial size without a window give ``None`` (unknown) from there on.

>>> import jaxconv as jc
>>> net = jc.serial(jc.Conv(8, 3), jc.Relu, jc.Conv(8, 3), jc.MaxPool(2), jc.Conv(8, 3, dilation=2))
>>> receptive_field(net, (-1, 32, 32, 3))
Field(size=(14, 14), jump=(2, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxconv import core, sizing
from jaxconv.core import UNKNOWN, Layer, LayerInfo, LayerPath, Record, ShapeTrace, ShapeTree


class Field(NamedTuple):
    """A neuron's receptive field in input pixels, and the jump between neighbours, per spatial axis."""

    size: tuple[int, ...]
    jump: tuple[int, ...] | None


FieldTree = Any  # a Field, None (unknown), or a tuple of them for multi-branch volumes


def receptive_field(net: Layer, input_shape: ShapeTree) -> FieldTree:
    """The receptive field and jump of ``net``'s output neurons on an input of ``input_shape``."""
    input_shape = core.normalize_shape(input_shape)
    return layer_fields(net, core.trace(net, input_shape), input_shape)[()]


def layer_fields(net: Layer, shape_trace: ShapeTrace, input_shape: ShapeTree) -> dict[LayerPath, FieldTree]:
    """The field of every layer's output, keyed by its path (the net itself is ``()``), from the
    `jaxconv.core.trace` of ``net`` on inputs of ``input_shape``."""
    fields: dict[LayerPath, FieldTree] = {}
    _flow(net, (), initial_field(core.normalize_shape(input_shape)), shape_trace.by_path(), fields)
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


# --- the field flowing through a net's structure ------------------------------------------------

Records = dict[LayerPath, Record]


def _flow(net: Layer, path: LayerPath, field: FieldTree, records: Records, out: dict) -> FieldTree:
    """The field after ``net`` given the field before it; every layer's field is stored in ``out``."""
    description = core.info(net)
    rule = _COMBINATORS.get(description.kind)
    if rule is not None:
        result = rule(description, path, field, records, out)
    elif description.kind == "ShapeDependent" and path in records:
        inner = description.spec["make_layer"](records[path].input_shape)
        result = _flow(inner, path, field, records, out)
    else:
        result = _through(description, records.get(path), field)
    out[path] = result
    return result


def _serial(description: LayerInfo, path: LayerPath, field: FieldTree, records: Records, out: dict):
    for name, child in description.children:
        field = _flow(child, (*path, name), field, records, out)
    return field


def _parallel(description: LayerInfo, path: LayerPath, field: FieldTree, records: Records, out: dict):
    branches = field if isinstance(field, tuple) else (field,) * len(description.children)
    return tuple(
        _flow(child, (*path, name), branch, records, out)
        for (name, child), branch in zip(description.children, branches, strict=True)
    )


def _residual(description: LayerInfo, path: LayerPath, field: FieldTree, records: Records, out: dict):
    results = [_flow(child, (*path, name), field, records, out) for name, child in description.children]
    if len(results) == 1:  # identity shortcut
        results.append(field)
    return widest(tuple(results))


_COMBINATORS: dict[str, Callable[..., FieldTree]] = {
    "Serial": _serial,
    "Parallel": _parallel,
    "Residual": _residual,
}


def _through(description: LayerInfo, record: Record | None, field: FieldTree) -> FieldTree:
    """The field after one layer, by its `Traits.field`; a hand-written layer (no traits) loses it."""
    traits = description.traits
    rule = "unknown" if traits is None else traits.field
    if rule == "fan_out":
        return (field,) * description.spec["num"]
    if rule == "fan_in":
        return widest(field)
    if field is None or record is None or rule == "unknown" or not isinstance(field, Field):
        return None
    if rule == "window":
        return _slide(field, sizing.layer_window(description, record.input_shape))
    if rule == "whole":
        return _whole(field, record.input_shape)
    if field.jump is None or _spatial(record.input_shape) == _spatial(record.output_shape):
        return field  # 'auto': acts on each position (or on a flat vector) alone
    return None


def _slide(field: Field, window: sizing.Window | None) -> Field | None:
    if field.jump is None or window is None:
        return None
    size = tuple(
        f + (sizing.effective_filter(F, D) - 1) * j
        for f, j, F, D in zip(field.size, field.jump, window.size, window.dilation, strict=True)
    )
    return Field(size, tuple(j * S for j, S in zip(field.jump, window.stride, strict=True)))


def _whole(field: Field, input_shape: tuple[int, ...]) -> Field | None:
    spatial = _spatial(input_shape)
    if field.jump is None or UNKNOWN in spatial:
        return None if UNKNOWN in spatial else field
    return Field(
        tuple(f + (W - 1) * j for f, W, j in zip(field.size, spatial, field.jump, strict=True)), None
    )


def _spatial(shape: ShapeTree) -> tuple[int, ...] | None:
    if not shape or isinstance(shape[0], tuple):
        return None
    return tuple(shape[1:-1])


__all__ = ["Field", "FieldTree", "initial_field", "layer_fields", "receptive_field", "widest"]
