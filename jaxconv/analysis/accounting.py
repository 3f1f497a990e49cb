"""The notes' accounting of a network, one row per layer: volumes, parameters, compute, memory.

`summary` traces the net's ``init`` (`jaxconv.core.trace`), so it reads every
layer's shapes without allocating an array (a 150-layer net at 224x224 takes
seconds), and returns a `Summary` that prints as a table and converts to plain
data. What a row counts follows from the layer's `jaxconv.traits.Traits`; a
hand-written ``Layer(init, apply)`` is counted as `HAND_WRITTEN`.

Each row is one layer (and one per `residual`, whose sum is a new volume):

- ``activations``: the values in its output volume, per example.
- ``params``: the values it trains (weights and biases).
- ``macs``: multiply-adds per example, the papers' convention (`Traits.macs`):
  a `Conv` does ``out positions * F*F * C_in/groups * K``, a `Dense` ``D_in * K``,
  a `LocallyConnected` the same as a Conv, a `ConvTranspose` ``in positions *
  F*F * C_in * K``. Biases, pools, normalisation and activations count 0.
- ``valid_macs``: the same without the taps that fall on a Conv's zero
  padding, which XLA's cost analysis skips (``flops / 2`` of the compiled
  forward pass is this plus the elementwise work).
- ``field`` and ``jump``: the receptive field of its neurons in input pixels
  and the distance between neighbours (`jaxconv.analysis.fields`).
- ``im2col``: the values the layer's ``X_col`` matrix would hold per example
  (`jaxconv.analysis.im2col`), for a Conv.
- ``warning``: set when the filter, stride and padding do not tile the input
  (`jaxconv.sizing.fits`), so the last rows or columns are never seen.

Training memory (`Summary.memory`) has two models, ``'notes'`` and ``'xla'``,
described in `jaxconv.analysis.memory`.

>>> import jaxconv as jc
>>> s = summary(jc.serial(jc.Conv(64, 3, padding=1), jc.Relu), (-1, 224, 224, 3))
>>> s.rows[1].params, s.rows[1].activations, s.macs
(1792, 3211264, 86704128)
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv import core, sizing
from jaxconv.analysis import fields, im2col, memory, table
from jaxconv.analysis.memory import Memory, MemoryModel, volume
from jaxconv.core import UNKNOWN, Layer, Record, ShapeTrace, ShapeTree
from jaxconv.traits import Traits

HAND_WRITTEN = Traits(saved=(1, 1), field="unknown")
"""How a layer described without `Traits` is counted, since nothing is known of its insides: it
stores its output (not in place), its backward pass may read its input and output and holds both
gradients, it counts no multiply-adds and its receptive field is unknown. (A hand-written
``Layer(init, apply)`` records nothing during ``init``, so it gets no row at all: `summary` names it
in `Summary.warnings`.)"""


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
    hand_written: tuple[str, ...] = ()  # paths of layers whose volumes no row counts

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
        unseen = [
            f"{path}: a hand-written Layer(init, apply): its volumes and multiply-adds are not counted"
            for path in self.hand_written
        ]
        return [f"{row.path}: {row.warning}" for row in self.rows if row.warning] + unseen

    def memory(self, batch_size: int = 1, model: MemoryModel = "notes") -> Memory:
        """The training-memory estimate for a batch of ``batch_size``, in bytes.

        ``model``: ``'notes'`` (activations and as many gradients) or ``'xla'``
        (what XLA keeps; see `jaxconv.analysis.memory`).
        """
        inputs = volume(self.input_shape[1:]) if _is_shape(self.input_shape) else 0
        if model == "notes":
            kept = gradients = self.activations - inputs
        elif model == "xla":
            kept, gradients = memory.xla_peak((row.saved, row.workspace) for row in self.rows)
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
        return table.render(self)


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
    shape_trace = core.trace(net, input_shape)
    typed_params = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype), shape_trace.params)
    optimizer_state = jax.eval_shape(optimizer.init, typed_params) if optimizer is not None else {}
    return Summary(
        rows=_rows(net, shape_trace, input_shape),
        input_shape=input_shape,
        output_shape=shape_trace.output_shape,
        dtype=jnp.dtype(dtype).name,
        params=_count(shape_trace.params),
        state=_count(shape_trace.state),
        optimizer_bytes=sum(
            leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(optimizer_state)
        ),
        budget_bytes=budget_bytes,
        hand_written=_hand_written(net, shape_trace),
    )


def _hand_written(net: Layer, shape_trace: ShapeTrace) -> tuple[str, ...]:
    """The paths of the layers without a description: their ``init`` records nothing."""
    recorded = shape_trace.by_path()
    return tuple(
        "/".join(path) or "net"
        for path, description in core.walk(net)
        if description.traits is None and path not in recorded
    )


# --- rows ---------------------------------------------------------------------------------------


def _rows(net: Layer, shape_trace: ShapeTrace, input_shape: ShapeTree) -> tuple[Row, ...]:
    """The input's row (for a single input), then a row per layer that makes a volume."""
    layer_fields = fields.layer_fields(net, shape_trace, input_shape)
    records = [record for record in shape_trace.records if _is_row(record)]
    rows = [_input_row(input_shape)] if _is_shape(input_shape) else []
    rows += [_row(record, layer_fields.get(record.path)) for record in records]
    output_derivative = [False] * (len(rows) - len(records))
    output_derivative += [_traits(record).output_derivative for record in records]
    saved = memory.saved_beside_successors([row.saved for row in rows], output_derivative)
    return tuple(dataclasses.replace(row, saved=kept) for row, kept in zip(rows, saved, strict=True))


def _traits(record: Record) -> Traits:
    return record.info.traits or HAND_WRITTEN


def _is_row(record: Record) -> bool:
    """Leaf layers, and combinators whose own operation makes a new volume (`residual`'s sum)."""
    leaf = not record.info.children and record.info.kind != "ShapeDependent"
    return leaf or _traits(record).new_volume


def _input_row(input_shape: tuple[int, ...]) -> Row:
    field = fields.initial_field(input_shape)
    size = volume(input_shape[1:])
    return Row("input", "Input", input_shape[1:], size, 0, 0, field.size, field.jump, stored=True)


def _row(record: Record, field: fields.FieldTree) -> Row:
    kind, output, traits = record.info.kind, record.output_shape, _traits(record)
    activations = volume(output[1:]) if _is_shape(output) else 0
    window = sizing.layer_window(record.info, record.input_shape)
    widest = fields.widest(field)
    macs = _macs(record, traits, activations)
    saved, workspace = memory.xla_step(record, traits, activations)
    return Row(
        path="/".join(record.path) or kind.lower(),
        kind=kind,
        output_shape=output[1:] if _is_shape(output) else tuple(s[1:] for s in output),
        activations=activations,
        params=0 if record.info.children else _count(record.params),
        macs=macs,
        field=None if widest is None else widest.size,
        jump=None if widest is None else widest.jump,
        stored=_is_shape(output) and not traits.in_place,
        im2col=_im2col_size(record, traits, window),
        warning=_fit_warning(record, window),
        valid_macs=_valid_macs(record, traits, window, macs),
        saved=saved,
        workspace=workspace,
    )


def _macs(record: Record, traits: Traits, activations: int) -> int:
    """Multiply-adds per example: every kernel value is used once per output (or input) position."""
    kernel = record.params.get("kernel") if isinstance(record.params, dict) else None
    if kernel is None or traits.macs is None:
        return 0
    if traits.macs == "output_positions":
        return activations // record.info.spec["features"] * kernel.size
    if traits.macs == "input_positions":
        return volume(record.input_shape[1:-1]) * kernel.size
    return kernel.size  # 'kernel': Dense; LocallyConnected has one kernel per output position


def _convolves(record: Record, traits: Traits) -> bool:
    """A convolution (`Traits.macs` ``'output_positions'``) on an input of known size."""
    known = _is_shape(record.input_shape) and UNKNOWN not in record.input_shape[1:]
    return traits.macs == "output_positions" and known


def _valid_macs(record: Record, traits: Traits, window: sizing.Window | None, macs: int) -> int:
    """A Conv's multiply-adds whose input tap lies inside the input, not on its zero padding."""
    if window is None or not _convolves(record, traits):
        return macs
    taps = math.prod(
        _valid_taps(W, O, F, S, D, P[0])
        for W, O, F, S, D, P in zip(record.input_shape[1:-1], window.out_spatial, *window[:4], strict=True)
    )
    return macs // math.prod(window.out_spatial) // math.prod(window.size) * taps


def _valid_taps(W: int, out: int, F: int, S: int, D: int, pad_lo: int) -> int:
    """Pairs (output position o, tap k) on one axis whose input index o*S + k*D - P_lo is in [0, W)."""
    count = 0
    for k in range(F):
        first = max(0, -((k * D - pad_lo) // S))  # smallest o with o*S + k*D - P_lo >= 0
        last = min(out - 1, (W - 1 + pad_lo - k * D) // S)
        count += max(0, last - first + 1)
    return count


def _fit_warning(record: Record, window: sizing.Window | None) -> str | None:
    if window is None:
        return None
    for W, F, S, D, P in zip(record.input_shape[1:-1], *window[:4], strict=True):
        if W != UNKNOWN and not sizing.fits(W, F, S, P, D):
            span = W + sum(P) - sizing.effective_filter(F, D)
            return (
                f"F={F}, S={S}, P={P[0] if P[0] == P[1] else P}"
                + (f", D={D}" if D != 1 else "")
                + f" on W={W}: (W - F + 2P)/S + 1 = {span / S + 1:g} is not an integer; "
                f"the last {span % S} rows/columns are never seen"
            )
    return None


def _im2col_size(record: Record, traits: Traits, window: sizing.Window | None) -> int:
    if window is None or not _convolves(record, traits):
        return 0
    rows, columns = im2col.patch_matrix_shape(
        record.input_shape, window.size, window.stride, window.padding, window.dilation
    )
    return rows * columns


# --- helpers --------------------------------------------------------------------------------------


def _is_shape(shape: ShapeTree) -> bool:
    return isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)


def _count(tree: Any) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _memory_dict(estimate: Memory) -> dict[str, int]:
    return estimate._asdict() | {"total": estimate.total}


__all__ = ["HAND_WRITTEN", "Row", "Summary", "summary"]
