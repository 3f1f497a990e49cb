"""Sizing arithmetic of convolutions and pools, in the notes' letters.

A layer sliding a filter of size F with stride S, zero-padding P and dilation D
over an input of width W produces

    (W - D*(F - 1) - 1 + 2P) / S + 1

outputs along that axis (with D = 1 this is the notes' ``(W - F + 2P)/S + 1``;
``D*(F - 1) + 1`` is the *effective* filter size). With per-side padding
``(P_lo, P_hi)`` the ``2P`` becomes ``P_lo + P_hi``.

When the division is not exact the filter does not tile the input. By default
jaxconv floors, like other frameworks, and the last rows or columns are never
seen; with ``strict=True`` on a layer, or inside ``with sizing.strict():`` for a
whole net, it raises `SizeError` with the numbers and paddings or strides that
would fit.

>>> output_size(W=227, F=11, S=4)      # AlexNet's first layer
55
>>> output_size(W=32, F=3, S=1, P=1)   # 'same' 3x3 convolution
32
>>> receptive_fields([(3, 1, 1)] * 3)  # three stacked 3x3 convs see 7x7
[(3, 1), (5, 1), (7, 1)]
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from jaxconv.core import UNKNOWN, LayerInfo, Shape, ShapeTree
from jaxconv.errors import ShapeError, SizeError

PaddingLike = int | str | Sequence[int] | Sequence[tuple[int, int]]
Pair = tuple[int, int]
SizeArg = int | Sequence[int]

_SPATIAL_LETTERS = "DHW"

_strict = contextvars.ContextVar("jaxconv_strict_sizes", default=False)


@contextlib.contextmanager
def strict(enabled: bool = True) -> Iterator[None]:
    """Within this block, layers with ``strict=None`` raise on sizes that do not fit."""
    token = _strict.set(enabled)
    try:
        yield
    finally:
        _strict.reset(token)


def is_strict(layer_strict: bool | None) -> bool:
    """A layer's own ``strict`` wins; ``None`` defers to the enclosing `strict()` block."""
    return _strict.get() if layer_strict is None else layer_strict


def effective_filter(F: int, D: int = 1) -> int:
    """Size of a filter of size F dilated by D: ``D*(F - 1) + 1``."""
    return D * (F - 1) + 1


def same_padding(W: int, F: int, S: int = 1, D: int = 1) -> Pair:
    """Per-side padding that gives ``ceil(W / S)`` outputs (TensorFlow's and XLA's 'SAME')."""
    out = -(-W // S)
    total = max((out - 1) * S + effective_filter(F, D) - W, 0)
    return total // 2, total - total // 2


def padding_pairs(
    padding: PaddingLike,
    W: Sequence[int],
    F: Sequence[int],
    S: Sequence[int],
    D: Sequence[int],
    layer: str = "Conv",
) -> tuple[Pair, ...]:
    """Normalise a padding argument to one ``(P_lo, P_hi)`` pair per spatial axis.

    Accepts an int (the same P on every side), one int per axis (symmetric),
    one ``(lo, hi)`` pair per axis, or the strings ``'SAME'`` and ``'VALID'``.
    A 'SAME' padding along an axis of unknown size is returned as ``(-1, -1)``.
    Errors name ``layer``.
    """
    rank = len(W)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * rank
        if mode == "SAME":
            return tuple(
                (UNKNOWN, UNKNOWN) if w == UNKNOWN else same_padding(w, f, s, d)
                for w, f, s, d in zip(W, F, S, D, strict=True)
            )
        raise ValueError(f"{layer}: padding={padding!r} is not a mode; use 'SAME', 'VALID' or an int P")
    if isinstance(padding, numbers.Integral):
        padding = int(padding)
        pairs = ((padding, padding),) * rank
    elif len(padding) == rank and all(isinstance(p, numbers.Integral) for p in padding):
        pairs = tuple((int(p), int(p)) for p in padding)
    elif len(padding) == rank and all(_is_pair(p) for p in padding):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise ValueError(
            f"{layer}: padding={padding!r} does not fit {rank} spatial axes; give an int P, "
            f"{rank} ints (one per axis) or {rank} (P_lo, P_hi) pairs"
        )
    if any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"{layer}: padding={padding!r} is negative; P must be >= 0")
    return pairs


def _is_pair(p: object) -> bool:
    return isinstance(p, Sequence) and len(p) == 2 and all(isinstance(v, numbers.Integral) for v in p)


def output_size(
    W: int,
    F: int,
    S: int = 1,
    P: int | Pair = 0,
    D: int = 1,
    *,
    strict: bool | None = False,
    layer: str = "Conv",
) -> int:
    """Outputs along one axis: ``(W - D*(F-1) - 1 + P_lo + P_hi) // S + 1``.

    Raises `SizeError` if the (dilated) filter is larger than the padded input,
    and, when strict, if the filter does not tile the input exactly. An unknown
    W (-1) gives an unknown output.
    """
    if W == UNKNOWN:
        return UNKNOWN
    lo, hi = (P, P) if isinstance(P, int) else P
    span = W + lo + hi - effective_filter(F, D)
    if span < 0:
        raise SizeError(
            f"{_describe(layer, F, S, P, D)} on W={W}: the filter spans {effective_filter(F, D)} "
            f"but the padded input is only W + {_padding_term(P)} = {W + lo + hi}; "
            f"use a smaller filter or pad by at least {(1 - span) // 2} more on each side"
        )
    if span % S and is_strict(strict):
        raise SizeError(
            f"{_describe(layer, F, S, P, D)} on W={W}: {_formula(P, D)} = "
            f"{span / S + 1:g} is not an integer; " + "; ".join(_fixes(W, F, S, (lo, hi), D))
        )
    return span // S + 1


def transpose_output_size(
    W: int, F: int, S: int = 1, P: int | Pair = 0, D: int = 1, output_padding: int = 0
) -> int:
    """Outputs of a transposed convolution: ``(W - 1)*S - P_lo - P_hi + D*(F-1) + 1 + extra``."""
    if W == UNKNOWN:
        return UNKNOWN
    lo, hi = (P, P) if isinstance(P, int) else P
    return (W - 1) * S - lo - hi + effective_filter(F, D) + output_padding


def receptive_fields(layers: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Receptive field and jump after each layer of a chain of ``(F, S, D)`` layers.

    The receptive field grows by ``(D*(F-1)) * jump`` per layer and the jump (the
    distance in input pixels between adjacent outputs) multiplies by S.
    """
    field, jump, out = 1, 1, []
    for F, S, D in layers:
        field += (effective_filter(F, D) - 1) * jump
        jump *= S
        out.append((field, jump))
    return out


def _describe(layer: str, F: int, S: int, P: int | Pair, D: int) -> str:
    dilation = f", D={D}" if D != 1 else ""
    padding = f"P={P}" if isinstance(P, int) else f"P=({P[0]}, {P[1]})"
    return f"{layer}(F={F}, S={S}, {padding}{dilation})"


def _padding_term(P: int | Pair) -> str:
    return "2P" if isinstance(P, int) else "P_lo + P_hi"


def _formula(P: int | Pair, D: int) -> str:
    filt = "F" if D == 1 else "D*(F - 1) - 1"
    return f"(W - {filt} + {_padding_term(P)})/S + 1"


def _fixes(W: int, F: int, S: int, P: Pair, D: int) -> list[str]:
    """Up to three changes that make the sizes fit, each with the output it gives."""
    fe, (lo, hi) = effective_filter(F, D), P
    fixes = []
    for p in range(max(lo, hi), max(lo, hi) + S + 1):
        if (W - fe + 2 * p) % S == 0:
            fixes.append(f"P={p} would give {(W - fe + 2 * p) // S + 1}")
            break
    extra = next(e for e in range(1, S + 1) if (W - fe + lo + hi + e) % S == 0)
    if extra % 2 == 1 or not fixes:
        fixes.append(
            f"padding ({lo}, {hi + extra}) per side would give {(W - fe + lo + hi + extra) // S + 1}"
        )
    span = W - fe + lo + hi
    stride = max(s for s in range(1, S) if span % s == 0) if S > 1 else 1
    fixes.append(f"S={stride} would give {span // stride + 1}")
    return fixes[:3]


def ceil_mode_padding(
    W: Sequence[int],
    F: Sequence[int],
    S: Sequence[int],
    pads: Sequence[Pair],
    D: Sequence[int] | None = None,
) -> tuple[Pair, ...]:
    """``pads`` with the high sides grown so that the output sizes round up, as PyTorch's
    ``ceil_mode`` (a last window that runs past the end is kept if it starts inside the input or
    its low padding); a window dilated by D spans ``D*(F - 1) + 1``."""
    spans = [effective_filter(f, d) for f, d in zip(F, D or (1,) * len(F), strict=True)]
    grown = []
    for size, window, stride, (low, high) in zip(W, spans, S, pads, strict=True):
        if size == UNKNOWN:
            grown.append((low, high))
            continue
        out = -(-(size + low + high - window) // stride) + 1
        if (out - 1) * stride >= size + low:  # the last window must start inside the input or low pad
            out -= 1
        grown.append((low, max(high, (out - 1) * stride + window - size - low)))
    return tuple(grown)


def fits(W: int, F: int, S: int = 1, P: int | Pair = 0, D: int = 1) -> bool:
    """Whether the filter tiles the padded input exactly (the notes' "sizes fit neatly")."""
    lo, hi = (P, P) if isinstance(P, int) else P
    span = W + lo + hi - effective_filter(F, D)
    return span >= 0 and span % S == 0


# --- a sliding window on a whole input: every spatial axis at once -------------------------------


class Window(NamedTuple):
    """A sliding window's geometry on one input, per spatial axis: its size F, stride S,
    dilation D, ``(P_lo, P_hi)`` padding, and the output sizes."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[Pair, ...]
    out_spatial: tuple[int, ...]


def per_axis(value: SizeArg, rank: int, layer: str, name: str, minimum: int = 1) -> tuple[int, ...]:
    """An int (same on every spatial axis) or one int per axis, as a tuple of ``rank`` ints >= minimum."""
    is_ints = isinstance(value, Sequence) and len(value) > 0 and all(_is_int(v) for v in value)
    if not (_is_int(value) or is_ints):
        raise ValueError(f"{layer}: {name}={value!r} is not a size; give an int or one int per axis")
    values = (value,) * rank if _is_int(value) else tuple(value)
    if len(values) != rank:
        raise ShapeError(
            f"{layer}: {name}={value!r} has {len(values)} entries but the input has {rank} "
            f"spatial axes; give one int or {rank}"
        )
    if any(v < minimum for v in values):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{layer}: {name}={value!r} must be {bound}")
    return tuple(int(v) for v in values)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def spatial_rank(layer: str, input_shape: Shape, fixed: SizeArg | None = None) -> int:
    """The number of spatial axes of an (N, *spatial, C) input, checked against ``fixed``."""
    rank = len(input_shape) - 2
    expected = None if fixed is None or _is_int(fixed) else len(tuple(fixed))
    if rank < 1 or (expected is not None and rank != expected):
        want = f"(N, {', '.join(_SPATIAL_LETTERS[-expected:])}, C)" if expected else "(N, ..., C)"
        raise ShapeError(
            f"{layer} expects a rank-{(expected or 1) + 2}{'' if expected else '+'} input {want}, "
            f"got shape {tuple(input_shape)}; under vmap over single examples keep a batch axis "
            "of 1 (x[:, None]) so every example is still (1, H, W, C)"
        )
    bad = [size for size in input_shape[1:] if not (size >= 1 or size == UNKNOWN)]
    if bad:
        raise ShapeError(
            f"{layer} got an input of shape {tuple(input_shape)}: its sizes after the batch must be "
            f"positive (or {UNKNOWN}, unknown), not {bad[0]}; check the shape given to init"
        )
    return rank


def channel_last(rank: int) -> tuple[str, str, str]:
    """XLA dimension numbers for NHWC activations and HWIO kernels (any spatial rank)."""
    spatial = _SPATIAL_LETTERS[-rank:] if rank <= 3 else "".join(chr(ord("a") + i) for i in range(rank))
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def slide(
    layer: str,
    W: Sequence[int],
    F: Sequence[int],
    S: Sequence[int],
    padding: PaddingLike,
    D: Sequence[int],
    strict: bool | None,
    ceil_mode: bool = False,
) -> Window:
    """Resolve ``padding`` (grown for ``ceil_mode``) and apply the sizing rule on every spatial
    axis of an input of spatial sizes ``W``; raises `SizeError` as `output_size` does."""
    pads = padding_pairs(padding, W, F, S, D, layer)
    if ceil_mode:
        pads = ceil_mode_padding(W, F, S, pads, D)
    out = tuple(
        output_size(w, f, s, p[0] if p[0] == p[1] else p, d, strict=strict, layer=layer)
        for w, f, s, p, d in zip(W, F, S, pads, D, strict=True)
    )
    return Window(tuple(F), tuple(S), tuple(D), pads, out)


def layer_window(description: LayerInfo, input_shape: ShapeTree) -> Window | None:
    """The window of a sliding layer (its `Traits.window` set) on an (N, *spatial, C) input, for
    the tools that read a net's description (summary, receptive fields, im2col, per-example taps);
    None for any other layer, another layout (``dimension_numbers``) or a tuple of inputs."""
    traits, spec, kind = description.traits, description.spec, description.kind
    plain = isinstance(input_shape, tuple) and all(isinstance(d, int) for d in input_shape)
    if traits is None or traits.window is None or not plain or spec.get("dimension_numbers"):
        return None
    spatial = input_shape[1:-1]
    rank = len(spatial)
    return slide(
        kind,
        spatial,
        per_axis(spec[traits.window], rank, kind, traits.window),
        per_axis(spec.get("stride", 1), rank, kind, "stride"),
        spec.get("padding", 0),
        per_axis(spec.get("dilation", 1), rank, kind, "dilation"),
        strict=False,
        ceil_mode=bool(spec.get("ceil_mode")),
    )
