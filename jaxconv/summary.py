"""The notes' accounting of a network, one row per layer: volumes, parameters, compute, memory.

`summary` runs the net's ``init`` under `jax.eval_shape`, so it reads every
layer's shapes without allocating an array (a 150-layer net at 224x224 takes
seconds), and returns a `Summary` that prints as a table and converts to plain
data.

Each row is one layer (and one per `residual`, whose sum is a new volume):

- ``activations``: the values in its output volume, per example.
- ``params``: the values it trains (weights and biases).
- ``macs``: multiply-adds per example, the papers' convention: a `Conv` does
  ``out positions * F*F * C_in/groups * K``, a `Dense` ``D_in * K``, a
  `LocallyConnected` the same as a Conv, a `ConvTranspose` ``in positions *
  F*F * C_in * K``. Biases, pools, normalisation and activations count 0.
- ``valid_macs``: the same without the taps that fall on a Conv's zero
  padding, which XLA's cost analysis skips (``flops / 2`` of the compiled
  forward pass is this plus the elementwise work).
- ``field`` and ``jump``: the receptive field of its neurons in input pixels
  and the distance between neighbours (`jaxconv.receptive`).
- ``im2col``: the values the layer's ``X_col`` matrix would hold per example
  (`jaxconv.im2col`), for a Conv.
- ``warning``: set when the filter, stride and padding do not tile the input
  (`jaxconv.sizing.fits`), so the last rows or columns are never seen.

Training memory (`Summary.memory`) has two models, in bytes of ``dtype``; both
count the parameters times (1 + 1 gradient + the optimiser's copies, counted
from ``jax.eval_shape(optimizer.init, params)``), the layers' state and the
input batch:

- ``'notes'``: the notes' model: the activations kept for backpropagation and
  their gradients, of equal size. As in the notes' VGG table, layers that can
  run in place or are views (ReLU-like activations, Dropout, Flatten, Identity,
  fan_out) store nothing of their own.
- ``'xla'``: what a jitted train step (gradient and optimiser update, params
  and optimiser state donated) keeps on XLA's CPU backend, per layer kind
  (`SAVED`): each layer saves the tensors its backward pass reads once
  elementwise ops are fused (a Conv its output, which is the next layer's input
  or the pre-activation an activation's derivative needs; an activation its
  output; a normalisation two volumes; a max pool its output, an int32 argmax
  index per axis per output value and the index grids over its input of XLA
  CPU's select-and-scatter), and the backward pass adds the working set of one
  layer's step (its incoming and outgoing gradients, fused into one volume for
  elementwise layers) to the values saved by the layers before it, at the step
  where that sum peaks.
  It agrees with ``compiled.memory_analysis()`` within 25% on the nets of
  ``benchmarks/memory_vs_xla.py``.

>>> import jaxconv as jc
>>> s = summary(jc.serial(jc.Conv(64, 3, padding=1), jc.Relu), (-1, 224, 224, 3))
>>> s.rows[1].params, s.rows[1].activations, s.macs
(1792, 3211264, 86704128)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxconv import core, im2col, receptive, sizing
from jaxconv.core import Layer, Record, ShapeTree
from jaxconv.layers.pool import uses_tiled_max
from jaxconv.sizing import ceil_mode_padding, per_axis

IN_PLACE = frozenset(
    {"Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Dropout", "StochasticDepth"}
    | {"Flatten", "Identity", "FanOut"}
)
"""Kinds that add no stored activations: in-place activations (their gradient is a function of
their output) and views."""

CONTAINERS_WITH_OUTPUT = frozenset({"Residual"})  # combinators that compute a new volume themselves

ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Elu", "Gelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax"})
OUTPUT_DERIVATIVE = frozenset({"Tanh", "Sigmoid"})  # derivatives written in terms of the output
NORMALIZATIONS = frozenset({"BatchNorm", "LayerNorm", "GroupNorm", "LocalResponseNorm"})
SAVED: dict[str, tuple[int, int]] = (
    dict.fromkeys(("Flatten", "Identity", "FanOut", "Residual", "FanInSum"), (0, 0))
    | dict.fromkeys(("Conv", "Dense", "LocallyConnected", "ConvTranspose", "FanInConcat"), (0, 1))
    | dict.fromkeys(ACTIVATIONS, (0, 1))
    | dict.fromkeys(("LayerNorm", "LocalResponseNorm"), (0, 2))
    # BatchNorm and GroupNorm are one multiply-add per element: their gradients read only the input
    | dict.fromkeys(("BatchNorm", "GroupNorm"), (0, 0))
    | dict.fromkeys(("Dropout", "StochasticDepth"), (0, 2))  # the mask and the output
    | dict.fromkeys(("LpPool", "GlobalMaxPool"), (1, 1))
)
"""The 'xla' memory model: (input, output) volumes a layer kind keeps for its backward pass.
`MaxPool` keeps its output, an argmax index per axis per output value and the index grids of
XLA CPU's select-and-scatter; any other kind, its output once. A layer followed by a Tanh or
Sigmoid keeps nothing (their derivatives read only their outputs)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer's line in the summary; counts are per example."""

    path: str
    kind: str
    output_shape: ShapeTree  # without the batch axis
    activations: int
    params: int
    macs: int
    field: tuple[int, ...] | None
    jump: tuple[int, ...] | None
    stored: bool  # counted in the notes' training memory model
    im2col: int = 0
    warning: str | None = None
    valid_macs: int = 0  # multiply-adds on the input rather than its zero padding
    saved: int = 0  # values kept for the backward pass in the 'xla' memory model
    workspace: int = 0  # values live during this layer's backward step in the 'xla' model


MemoryModel = Literal["notes", "xla"]


class Memory(NamedTuple):
    """Training memory in bytes, by the notes' three sources (``total`` adds them).

    ``activation_gradients`` is the size of ``activations`` in the notes' model and,
    in the 'xla' model, what the backward pass holds beyond the saved values at its peak.
    """

    activations: int
    activation_gradients: int
    params: int
    param_gradients: int
    optimizer: int
    state: int
    input: int

    @property
    def total(self) -> int:
        return sum(self)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Per-layer rows and totals of a net on one input shape; ``str()`` gives the table."""

    rows: tuple[Row, ...]
    input_shape: ShapeTree
    output_shape: ShapeTree
    dtype: str
    params: int  # total, from the params tree
    state: int  # values in the state tree (BatchNorm statistics)
    optimizer_bytes: int
    budget_bytes: int | None = None

    @property
    def itemsize(self) -> int:
        return jnp.dtype(self.dtype).itemsize

    @property
    def activations(self) -> int:
        """Stored values per example, the input included (the notes' "TOTAL memory" count)."""
        return sum(row.activations for row in self.rows if row.stored)

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass per example."""
        return sum(row.macs for row in self.rows)

    @property
    def valid_macs(self) -> int:
        """Multiply-adds of one forward pass per example, leaving out taps on zero padding."""
        return sum(row.valid_macs for row in self.rows)

    @property
    def warnings(self) -> list[str]:
        return [f"{row.path}: {row.warning}" for row in self.rows if row.warning]

    def memory(self, batch_size: int = 1, model: MemoryModel = "notes") -> Memory:
        """The training-memory estimate for a batch of ``batch_size``, in bytes.

        ``model``: ``'notes'`` (activations and as many gradients) or ``'xla'``
        (what XLA keeps; see the module docstring).
        """
        inputs = _size(self.input_shape[1:]) if _is_shape(self.input_shape) else 0
        if model == "notes":
            kept = gradients = self.activations - inputs
        elif model == "xla":
            kept, gradients = _xla_peak(self.rows)
        else:
            raise ValueError(f"memory(model={model!r}): use 'notes' or 'xla'")
        weights = self.params * self.itemsize
        return Memory(
            activations=batch_size * kept * self.itemsize,
            activation_gradients=batch_size * gradients * self.itemsize,
            params=weights,
            param_gradients=weights,
            optimizer=self.optimizer_bytes,
            state=self.state * self.itemsize,
            input=batch_size * inputs * self.itemsize,
        )

    def max_batch(self, budget_bytes: int | None = None, model: MemoryModel = "notes") -> int:
        """The largest batch whose training memory (by ``model``) fits ``budget_bytes`` (0 if none fits)."""
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        if budget is None:
            raise ValueError(
                "max_batch needs a budget: max_batch(budget_bytes=16 * 2**30) or summary(budget_bytes=...)"
            )
        fixed = self.memory(0, model).total
        per_example = self.memory(1, model).total - fixed
        return max((budget - fixed) // per_example, 0) if per_example else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the rows, the totals and the memory of a batch of one."""
        data = {
            "input_shape": list(self.input_shape),
            "output_shape": _plain(self.output_shape),
            "dtype": self.dtype,
            "rows": [_plain(dataclasses.asdict(row)) for row in self.rows],
            "params": self.params,
            "state": self.state,
            "activations": self.activations,
            "macs": self.macs,
            "valid_macs": self.valid_macs,
            "memory_per_batch_of_one": _memory_dict(self.memory(1)),
            "xla_memory_per_batch_of_one": _memory_dict(self.memory(1, "xla")),
            "warnings": self.warnings,
        }
        if self.budget_bytes is not None:
            data |= {"budget_bytes": self.budget_bytes, "max_batch": self.max_batch()}
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        return _table(self)


def summary(
    net: Layer,
    input_shape: ShapeTree,
    dtype: Any = jnp.float32,
    optimizer: Any = None,
    budget_bytes: int | None = None,
) -> Summary:
    """The per-layer accounting of ``net`` on inputs of ``input_shape`` (with the batch axis, e.g. -1).

    Args:
      dtype: the dtype of activations, parameters and gradients in the memory model.
      optimizer: an Optax ``GradientTransformation``; its state is counted from
        ``jax.eval_shape(optimizer.init, params)`` (none: plain SGD, no copies).
      budget_bytes: a memory budget for `Summary.max_batch`.
    """
    input_shape = core.normalize_shape(input_shape)
    shape_trace = receptive.trace(net, input_shape)
    fields = receptive.layer_fields(net, shape_trace, input_shape)
    rows = [_input_row(input_shape)] if _is_shape(input_shape) else []
    rows += [_row(record, fields.get(record.path)) for record in shape_trace.records if _is_row(record)]
    rows = _drop_outputs_read_by_successor(rows)
    typed_params = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype), shape_trace.params)
    optimizer_state = jax.eval_shape(optimizer.init, typed_params) if optimizer is not None else {}
    return Summary(
        rows=tuple(rows),
        input_shape=input_shape,
        output_shape=shape_trace.output_shape,
        dtype=jnp.dtype(dtype).name,
        params=_count(shape_trace.params),
        state=_count(shape_trace.state),
        optimizer_bytes=sum(
            leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(optimizer_state)
        ),
        budget_bytes=budget_bytes,
    )


# --- rows ---------------------------------------------------------------------------------------


def _is_row(record: Record) -> bool:
    kind = record.info.kind
    return (not record.info.children and kind != "ShapeDependent") or kind in CONTAINERS_WITH_OUTPUT


def _input_row(input_shape: tuple[int, ...]) -> Row:
    field = receptive.initial_field(input_shape)
    size = _size(input_shape[1:])
    return Row("input", "Input", input_shape[1:], size, 0, 0, field.size, field.jump, stored=True)


def _row(record: Record, field: receptive.FieldTree) -> Row:
    kind, output = record.info.kind, record.output_shape
    activations = _size(output[1:]) if _is_shape(output) else 0
    params = 0 if record.info.children else _count(record.params)
    widest = receptive.widest(field)
    macs = _macs(record, activations)
    saved, workspace = _xla_memory(record, activations)
    return Row(
        path="/".join(record.path) or kind.lower(),
        kind=kind,
        output_shape=output[1:] if _is_shape(output) else tuple(s[1:] for s in output),
        activations=activations,
        params=params,
        macs=macs,
        field=None if widest is None else widest.size,
        jump=None if widest is None else widest.jump,
        stored=_is_shape(output) and kind not in IN_PLACE,
        im2col=_im2col_size(record),
        warning=_fit_warning(record),
        valid_macs=_valid_macs(record, macs),
        saved=saved,
        workspace=workspace,
    )


def _macs(record: Record, activations: int) -> int:
    """Multiply-adds per example: every kernel value is used once per output (or input) position."""
    kernel = record.params.get("kernel") if isinstance(record.params, dict) else None
    kind = record.info.kind
    if kernel is None or kind not in ("Conv", "Dense", "LocallyConnected", "ConvTranspose"):
        return 0
    if kind == "Conv":
        return activations // record.info.spec["features"] * kernel.size
    if kind == "ConvTranspose":
        return _size(record.input_shape[1:-1]) * kernel.size
    return kernel.size  # Dense; LocallyConnected has one kernel per output position


def _valid_macs(record: Record, macs: int) -> int:
    """A Conv's multiply-adds whose input tap lies inside the input, not on its zero padding."""
    geometry = _window(record)
    if record.info.kind != "Conv" or geometry is None or sizing.UNKNOWN in record.input_shape[1:]:
        return macs
    taps = math.prod(
        _valid_taps(W, O, F, S, D, P[0])
        for W, O, F, S, D, P in zip(
            record.input_shape[1:-1], record.output_shape[1:-1], *geometry, strict=True
        )
    )
    return macs // math.prod(record.output_shape[1:-1]) // math.prod(geometry[0]) * taps


def _valid_taps(W: int, out: int, F: int, S: int, D: int, pad_lo: int) -> int:
    """Pairs (output position o, tap k) on one axis whose input index o*S + k*D - P_lo is in [0, W)."""
    count = 0
    for k in range(F):
        first = max(0, -((k * D - pad_lo) // S))  # smallest o with o*S + k*D - P_lo >= 0
        last = min(out - 1, (W - 1 + pad_lo - k * D) // S)
        count += max(0, last - first + 1)
    return count


def _xla_memory(record: Record, activations: int) -> tuple[int, int]:
    """Values the 'xla' model saves for this layer's backward pass, and its backward working set."""
    kind, shape = record.info.kind, record.input_shape
    inputs = _size(shape[1:]) if _is_shape(shape) else sum(_size(s[1:]) for s in shape)
    if kind == "MaxPool" and uses_tiled_max(shape[1:-1], *_window(record)[:2], _window(record)[3]):
        return activations, inputs + activations  # the output; the input is saved by its producer
    if kind == "MaxPool":  # XLA CPU: the output, its argmax (an int32 index per axis) and index grids
        rank = len(shape)
        return (1 + rank) * activations + rank * inputs, inputs + activations
    if record.info.children and kind not in CONTAINERS_WITH_OUTPUT:
        return 0, 0
    per_input, per_output = SAVED.get(kind, (0, 1))
    elementwise = kind in ACTIVATIONS or kind in NORMALIZATIONS or kind in IN_PLACE
    workspace = activations if elementwise else inputs + activations  # fused gradients: one volume
    return per_input * inputs + per_output * activations, workspace


def _drop_outputs_read_by_successor(rows: list[Row]) -> list[Row]:
    """In the 'xla' model, a layer followed by `OUTPUT_DERIVATIVE` saves nothing: the activation's
    derivative needs only the activation's own output, which it saves."""
    kept = [
        dataclasses.replace(row, saved=0) if following.kind in OUTPUT_DERIVATIVE else row
        for row, following in itertools.pairwise(rows)
    ]
    return kept + rows[-1:]


def _xla_peak(rows: tuple[Row, ...]) -> tuple[int, int]:
    """Values saved by the forward pass, and the most the backward adds to what is still saved.

    The backward pass meets the layers in reverse and frees each one's saved values after its
    step, so layer i's step runs beside the values saved up to layer i.
    """
    prefix, peak = 0, 0
    for row in rows:
        prefix += row.saved
        peak = max(peak, prefix + row.workspace)
    return prefix, peak - prefix


def _window(record: Record) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple] | None:
    """Window, stride, dilation and (lo, hi) padding of a sliding layer on its input, else None."""
    kind, spec, shape = record.info.kind, record.info.spec, record.input_shape
    name = receptive.SLIDING.get(kind)
    if name is None or not _is_shape(shape) or spec.get("dimension_numbers"):
        return None
    spatial = shape[1:-1]
    window = per_axis(spec[name], len(spatial), kind, name)
    stride = per_axis(spec.get("stride", 1), len(spatial), kind, "stride")
    dilation = per_axis(spec.get("dilation", 1), len(spatial), kind, "dilation")
    pads = sizing.padding_pairs(spec.get("padding", 0), spatial, window, stride, dilation)
    if spec.get("ceil_mode"):
        pads = ceil_mode_padding(spatial, window, stride, pads)
    return window, stride, dilation, pads


def _fit_warning(record: Record) -> str | None:
    geometry = _window(record)
    if geometry is None:
        return None
    for W, F, S, D, P in zip(record.input_shape[1:-1], *geometry, strict=True):
        if W != sizing.UNKNOWN and not sizing.fits(W, F, S, P, D):
            span = W + sum(P) - sizing.effective_filter(F, D)
            return (
                f"F={F}, S={S}, P={P[0] if P[0] == P[1] else P}"
                + (f", D={D}" if D != 1 else "")
                + f" on W={W}: (W - F + 2P)/S + 1 = {span / S + 1:g} is not an integer; "
                f"the last {span % S} rows/columns are never seen"
            )
    return None


def _im2col_size(record: Record) -> int:
    geometry = _window(record)
    if geometry is None or record.info.kind != "Conv" or sizing.UNKNOWN in record.input_shape[1:]:
        return 0
    window, stride, dilation, pads = geometry
    rows, columns = im2col.patch_matrix_shape(record.input_shape, window, stride, pads, dilation)
    return rows * columns


# --- helpers --------------------------------------------------------------------------------------


def _is_shape(shape: ShapeTree) -> bool:
    return isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)


def _size(dims: tuple[int, ...]) -> int:
    return 0 if sizing.UNKNOWN in dims else math.prod(dims)


def _count(tree: Any) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _memory_dict(memory: Memory) -> dict[str, int]:
    return memory._asdict() | {"total": memory.total}


def _dims(value: Any) -> str:
    if value is None:
        return "-"
    if value and isinstance(value[0], tuple):
        return ", ".join(_dims(v) for v in value)
    return "x".join(str(d) for d in value) or "1"


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _table(s: Summary) -> str:
    header = ("layer", "kind", "output", "activations", "params", "MACs", "field", "jump", "")
    lines = [
        (
            row.path,
            row.kind,
            _dims(row.output_shape),
            f"{row.activations:,}" if row.stored else f"({row.activations:,})",
            f"{row.params:,}",
            f"{row.macs:,}",
            _dims(row.field),
            _dims(row.jump),
            "!" if row.warning else "",
        )
        for row in s.rows
    ]
    widths = [max(len(cell[i]) for cell in (header, *lines)) for i in range(len(header))]
    right = {3, 4, 5}

    def fmt(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(fmt(header))
    memory = s.memory(1)
    out = [fmt(header), rule, *map(fmt, lines), rule]
    out.append(
        f"params {s.params:,}   stored activations per example {s.activations:,}   MACs {s.macs:,} "
        f"({s.valid_macs:,} without the taps on zero padding)"
    )
    out.append(
        f"training memory per example ({s.dtype}): activations + gradients "
        f"{_megabytes(memory.activations + memory.activation_gradients + memory.input)}; "
        f"fixed: params + gradients + optimiser + state "
        f"{_megabytes(memory.params + memory.param_gradients + memory.optimizer + memory.state)}"
    )
    if s.budget_bytes is not None:
        out.append(f"largest batch within {_megabytes(s.budget_bytes)}: {s.max_batch()}")
    out += [f"! {warning}" for warning in s.warnings]
    out.append("(activations in parentheses are views or in place and not stored)")
    return "\n".join(out)


__all__ = ["IN_PLACE", "SAVED", "Memory", "MemoryModel", "Row", "Summary", "summary"]
