"""What the tools around the layers know about a kind of layer, declared where the layer is built.

A layer passes its `Traits` to `jaxconv.core.layer`; the summary, the memory models, the
receptive fields, the per-example taps and the privacy checks read them from
``jaxconv.core.info(layer).traits``, so no tool keeps a table of layer kinds, and a new layer
is known to every tool once it declares its traits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

FIELDS = ("auto", "window", "whole", "fan_out", "fan_in", "unknown")
MACS = (None, "output_positions", "input_positions", "kernel")


@dataclasses.dataclass(frozen=True)
class Traits:
    """What the tools around the layers need to know about a kind of layer, declared where it is
    built (`layer`), so that no tool keeps a table of kinds.

    Attributes:
      elementwise: each output value depends on its input value (and per-channel or per-position
        statistics) alone: activations, normalisation, views. Its fused gradient is one volume.
      in_place: it stores no activation of its own for the backward pass (the notes' memory
        model): ReLU-like activations, Dropout and views such as Flatten.
      output_derivative: its derivative is a function of its output alone (Tanh, Sigmoid), so
        the layer before it need not keep its own output.
      saved: the (input, output) volumes XLA keeps for its backward pass (the 'xla' memory model).
      window: the spec key of a sliding window's size (``'kernel_size'``, ``'window'``): each
        output sees a window of its input, moved by ``spec['stride']``.
      field: how the receptive field passes through it: ``'window'`` (see ``window``),
        ``'whole'`` (each output sees the whole input volume), ``'fan_out'``, ``'fan_in'``
        (branches), ``'unknown'`` (lost from here on), or ``'auto'``: unchanged where the
        spatial size is (the layer acts on each position alone), else unknown.
      macs: how its multiply-adds are counted: ``'output_positions'`` (kernel size per output
        position, Conv), ``'input_positions'`` (ConvTranspose), ``'kernel'`` (one per kernel
        value, Dense and LocallyConnected), or None (no multiply-adds counted).
      tap: its per-example weight gradient is the product of its input patches and its output
        gradient (Conv with one group, Dense): the per-example taps' einsum and ghost norms.
      tap_kernel: for a tapped layer that multiplies by a function of its kernel rather than the
        kernel itself (weight standardisation), that function, kernel -> kernel of the same
        shape: the taps form each example's gradient with respect to its output, then pull it
        back through the function.
      fixed: a fixed feature extractor: no parameters, no state, no randomness, each example's
        output a function of its input alone (the scattering transform). Training without
        augmentation computes it once per example (`jaxconv.runs.fixed_front`).
      mixes_examples: in training, one example's output depends on the rest of the batch
        (BatchNorm's batch statistics): no per-example privacy through it.
      new_volume: a combinator whose own operation makes a new volume (residual's sum).
      opaque: it applies its insides under a JAX transformation (remat's ``custom_vjp``), so a
        tool that intercepts the children it applies (`jaxconv.core.intercept`) must not reach in.
    """

    elementwise: bool = False
    in_place: bool = False
    output_derivative: bool = False
    saved: tuple[int, int] = (0, 1)
    window: str | None = None
    field: str = "auto"
    macs: str | None = None
    tap: bool = False
    tap_kernel: Callable[[Any], Any] | None = None
    fixed: bool = False
    mixes_examples: bool = False
    new_volume: bool = False
    opaque: bool = False

    def __post_init__(self) -> None:
        if self.field not in FIELDS:
            raise ValueError(f"Traits(field={self.field!r}): use one of {FIELDS}")
        if self.macs not in MACS:
            raise ValueError(f"Traits(macs={self.macs!r}): use one of {MACS}")
        if self.window is not None and self.field != "window":
            raise ValueError(f"Traits(window={self.window!r}) slides a window: give field='window'")


ACTIVATION = Traits(elementwise=True, in_place=True)
"""An activation whose derivative reads its output, computed in place (ReLU-like)."""

VIEW = Traits(elementwise=True, in_place=True, saved=(0, 0))
"""A layer that only reshapes or copies: stores nothing, computes nothing."""


__all__ = ["ACTIVATION", "FIELDS", "MACS", "VIEW", "Traits"]
