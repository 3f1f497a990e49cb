"""Training memory: the notes' model and what XLA keeps, in bytes (`Memory`).

Both models count the parameters times (1 + 1 gradient + the optimiser's
copies, counted from ``jax.eval_shape(optimizer.init, params)``), the layers'
state and the input batch; they differ in the activations:

- ``'notes'``: the notes' model: the activations kept for backpropagation and
  their gradients, of equal size. As in the notes' VGG table, layers that run
  in place or are views (`jaxconv.traits.Traits.in_place`: ReLU-like
  activations, Dropout, Flatten, Identity, fan_out) store nothing of their own.
- ``'xla'``: what a jitted train step (gradient and optimiser update, params
  and optimiser state donated) keeps on XLA's CPU backend. Each layer saves the
  tensors its backward pass reads once elementwise ops are fused
  (`jaxconv.traits.Traits.saved`: a Conv its output, which is the next layer's
  input or the pre-activation an activation's derivative needs; an activation
  its output; a normalisation two volumes; a max pool its output, an int32
  argmax index per axis per output value and the index grids over its input of
  XLA CPU's select-and-scatter). The backward pass adds the working set of one
  layer's step (its incoming and outgoing gradients, fused into one volume for
  elementwise layers) to the values saved by the layers before it, at the step
  where that sum peaks. A layer followed by one whose derivative reads only
  its own output (`Traits.output_derivative`: Tanh, Sigmoid) keeps nothing.
  It agrees with ``compiled.memory_analysis()`` within 25% on the nets of
  ``benchmarks/memory_vs_xla.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from jaxconv import sizing
from jaxconv.core import UNKNOWN, Record, ShapeTree
from jaxconv.layers.pool import uses_tiled_max
from jaxconv.traits import Traits

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


def xla_step(record: Record, traits: Traits, outputs: int) -> tuple[int, int]:
    """The values a layer saves for its backward pass in the 'xla' model, and the values live during
    its backward step, per example; ``outputs`` is the size of its output volume."""
    inputs = _volume(record.input_shape)
    if record.info.kind == "MaxPool":
        return _max_pool_step(record, inputs, outputs)
    if record.info.children and not traits.new_volume:
        return 0, 0  # a combinator: its children hold the volumes and do the work
    per_input, per_output = traits.saved
    workspace = outputs if traits.elementwise else inputs + outputs  # fused gradients: one volume
    return per_input * inputs + per_output * outputs, workspace


def _max_pool_step(record: Record, inputs: int, outputs: int) -> tuple[int, int]:
    """A max pool keeps its output when it runs as `jaxconv.layers.pool.tiled_max`; else (XLA CPU's
    select-and-scatter) its output, its argmax (an int32 index per axis) and the index grids."""
    window = sizing.layer_window(record.info, record.input_shape)
    spatial, impl = record.input_shape[1:-1], record.info.spec.get("impl")
    if window is not None and uses_tiled_max(
        spatial, window.size, window.stride, window.padding, impl=impl, dilation=window.dilation
    ):
        return outputs, inputs + outputs  # the output; the input is saved by its producer
    rank = len(record.input_shape)
    return (1 + rank) * outputs + rank * inputs, inputs + outputs


def saved_beside_successors(saved: Sequence[int], output_derivative: Sequence[bool]) -> list[int]:
    """Each layer's ``saved`` values (in the order the layers run), 0 where the next layer's
    derivative reads only its own output (``output_derivative``), which that next layer saves."""
    followed_by_reader = [*output_derivative[1:], False]
    return [0 if reader else kept for kept, reader in zip(saved, followed_by_reader, strict=True)]


def xla_peak(steps: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """Values saved by the forward pass, and the most the backward adds to what is still saved, from
    each layer's ``(saved, workspace)`` in the order they run.

    The backward pass meets the layers in reverse and frees each one's saved values after its
    step, so layer i's step runs beside the values saved up to layer i.
    """
    prefix, peak = 0, 0
    for saved, workspace in steps:
        prefix += saved
        peak = max(peak, prefix + workspace)
    return prefix, peak - prefix


def volume(dims: tuple[int, ...]) -> int:
    """The values in a volume of size ``dims`` (0 while a size is unknown)."""
    return 0 if UNKNOWN in dims else math.prod(dims)


def _volume(shape: ShapeTree) -> int:
    """Values per example of one input, or of a tuple of inputs."""
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        return volume(shape[1:])
    return sum(volume(s[1:]) for s in shape)


__all__ = ["Memory", "MemoryModel", "saved_beside_successors", "volume", "xla_peak", "xla_step"]
