"""The notes' layer-pattern notation, built into a net.

    INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

``->`` chains layers, ``[...]*N`` repeats a group (N an integer, or a letter
given in ``counts``), brackets nest, and ``POOL?`` is an optional pool, kept
while the volume is still at least as large as the pooling window. Layer
names: ``INPUT`` (optional, first only), ``CONV``, ``RELU``, ``POOL``, ``FC``,
``NORM`` or ``BN`` (BatchNorm), ``DROPOUT``; case does not matter.

The defaults are the notes' rules of thumb: 3x3 convolutions padded to keep
the size (P = (F - 1)/2), 2x2 max pooling with stride 2, conv widths doubling
after every pool, a `Flatten` before the first FC, and a last FC with
``num_classes`` outputs.

>>> import jax
>>> net = pattern("INPUT -> [[CONV -> RELU]*2 -> POOL]*3 -> [FC -> RELU]*2 -> FC", widths=16)
>>> net.init(jax.random.key(0), (-1, 32, 32, 3))[0]
(-1, 10)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

from jaxconv.combinators import Identity, serial, shape_dependent
from jaxconv.core import UNKNOWN, Layer
from jaxconv.errors import PatternError
from jaxconv.layers import AvgPool, BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu

LAYER_NAMES = ("INPUT", "CONV", "RELU", "POOL", "FC", "NORM", "BN", "DROPOUT")


@dataclasses.dataclass(frozen=True)
class _Token:
    name: str  # one of LAYER_NAMES
    optional: bool
    position: int


@dataclasses.dataclass(frozen=True)
class _Group:
    items: tuple[tuple[_Token | _Group, str | int, int], ...]  # (node, repeat count, position of count)


_LEXEME = re.compile(
    r"\s*(?:(?P<arrow>->)|(?P<name>[A-Za-z_]\w*\??)|(?P<number>\d+)|(?P<symbol>[\[\]*])|(?P<end>$))"
)


class _Parser:
    """Recursive descent over ``group := item ('->' item)*``, ``item := (NAME['?'] | '[' group ']') ['*' count]``."""

    def __init__(self, text: str):
        self.text, self.position = text, 0
        self.kind, self.value, self.start = self._scan()

    def _scan(self) -> tuple[str, str, int]:
        match = _LEXEME.match(self.text, self.position)
        if match is None:
            start = len(self.text) - len(self.text[self.position :].lstrip())
            raise PatternError(f"unexpected character {self.text[start]!r}", self.text, start)
        self.position = match.end()
        kind = match.lastgroup or "end"
        return kind, match.group(kind) or "", match.start(kind)

    def _advance(self) -> None:
        self.kind, self.value, self.start = self._scan()

    def _fail(self, expected: str) -> PatternError:
        found = "the end" if self.kind == "end" else repr(self.value)
        return PatternError(f"expected {expected}, found {found}", self.text, self.start)

    def parse(self) -> _Group:
        group = self._group()
        if self.kind != "end":
            raise self._fail("'->' or the end")
        return group

    def _group(self) -> _Group:
        items = [self._item()]
        while self.kind == "arrow":
            self._advance()
            items.append(self._item())
        return _Group(tuple(items))

    def _item(self) -> tuple[_Token | _Group, str | int, int]:
        if self.kind == "name":
            name = self.value.rstrip("?").upper()
            if name not in LAYER_NAMES:
                raise PatternError(
                    f"unknown layer {self.value!r}; use one of {', '.join(LAYER_NAMES)}",
                    self.text,
                    self.start,
                )
            optional = self.value.endswith("?")
            if optional and name != "POOL":
                raise PatternError(f"only POOL can be optional, not {name}", self.text, self.start)
            node: _Token | _Group = _Token(name, optional, self.start)
            self._advance()
        elif self.value == "[":
            opening = self.start
            self._advance()
            node = self._group()
            if self.value != "]":
                error = self._fail("']'")
                error.add_note(f"the '[' at position {opening} is not closed")
                raise error
            self._advance()
        else:
            raise self._fail("a layer name or '['")
        count: str | int = 1
        count_position = self.start
        if self.value == "*":
            self._advance()
            count_position = self.start
            if self.kind == "number":
                count = int(self.value)
            elif self.kind == "name" and not self.value.endswith("?"):
                count = self.value
            else:
                raise self._fail("a repeat count such as 2 or N")
            self._advance()
        return node, count, count_position


def parse(text: str, counts: Mapping[str, int] | None = None) -> list[_Token]:
    """The pattern as a flat list of layer tokens, repetitions expanded."""
    return _expand(_Parser(text).parse(), dict(counts or {}), text)


def _expand(group: _Group, counts: dict[str, int], text: str) -> list[_Token]:
    tokens: list[_Token] = []
    for node, count, position in group.items:
        if isinstance(count, str):
            if count not in counts:
                raise PatternError(
                    f"the repeat count {count} has no value; pass counts={{{count!r}: 2}}", text, position
                )
            count = counts[count]
        if count < 0:
            raise PatternError(f"a repeat count must be >= 0, got {count}", text, position)
        body = [node] if isinstance(node, _Token) else _expand(node, counts, text)
        tokens += body * count
    return tokens


def pattern(
    text: str,
    widths: int | Sequence[int] = 64,
    num_classes: int = 10,
    fc_widths: int | Sequence[int] = 256,
    counts: Mapping[str, int] | None = None,
    kernel_size: int = 3,
    padding: int | str | None = None,
    pool_window: int = 2,
    pool_stride: int | None = None,
    pool: str = "max",
    max_width: int | None = None,
    dropout_rate: float = 0.5,
    optional_pools: bool | None = None,
) -> Layer:
    """Build a net from the notes' layer-pattern notation.

    Args:
      widths: conv widths: an int for the first stage, doubled after every pool (capped at
        ``max_width``); or a list, one per CONV, or one per stage (the CONVs between two pools).
      num_classes: outputs of the last FC.
      fc_widths: widths of the other FCs, one int for all or one per FC.
      counts: values of letter repeat counts, e.g. ``{"N": 2, "M": 3, "K": 1}``.
      kernel_size, padding: the CONVs' F and P; P defaults to (F - 1)/2, which keeps the size.
      pool_window, pool_stride, pool: the POOLs' F, S (default F) and ``'max'`` or ``'avg'``.
      dropout_rate: the probability that DROPOUT drops an activation.
      optional_pools: ``POOL?``: None keeps it while the volume is at least the window, True
        always keeps it, False leaves it out.

    Shapes: (N, H, W, C) -> (N, num_classes) (or a volume if no FC ends the pattern).
    Raises `PatternError` (a ValueError) pointing at the fault of a malformed pattern.
    """
    tokens = _layer_tokens(text, counts)
    if not tokens:
        return Identity
    make = _Makers(
        iter(_conv_widths(tokens, widths, max_width)),
        iter(_fc_widths(tokens, fc_widths, num_classes)),
        kernel_size,
        (kernel_size - 1) // 2 if padding is None else padding,
        _pool_maker(pool, pool_window, pool_stride, optional_pools),
        dropout_rate,
    )
    if optional_pools is False:
        tokens = [t for t in tokens if not t.optional]
    return serial(*_chain(tokens, make, text))


def _layer_tokens(text: str, counts: Mapping[str, int] | None) -> list[_Token]:
    """The pattern's tokens without the leading INPUT (which may come first only)."""
    tokens = parse(text, counts)
    for index, token in enumerate(tokens):
        if token.name == "INPUT" and index:
            raise PatternError("INPUT can only come first", text, token.position)
    return [t for t in tokens if t.name != "INPUT"]


@dataclasses.dataclass
class _Makers:
    """The layer for each token of a pattern, taken in order (widths are used up as CONVs and FCs come)."""

    conv_widths: Iterator[int]
    fc_widths: Iterator[int]
    kernel_size: int
    padding: int | str
    pool: Callable[[_Token], Layer]
    dropout_rate: float

    def __call__(self, token: _Token) -> Layer:
        if token.name == "CONV":
            return Conv(next(self.conv_widths), self.kernel_size, padding=self.padding)
        if token.name == "POOL":
            return self.pool(token)
        if token.name == "FC":
            return Dense(next(self.fc_widths))
        if token.name == "RELU":
            return Relu
        if token.name in ("NORM", "BN"):
            return BatchNorm()
        return Dropout(self.dropout_rate)


def _chain(tokens: list[_Token], make: Callable[[_Token], Layer], text: str) -> list[Layer]:
    """The layers of the tokens, with a `Flatten` before the first FC."""
    layers: list[Layer] = []
    flat = False
    for token in tokens:
        if token.name in ("CONV", "POOL") and flat:
            raise PatternError(
                f"{token.name} after FC: the volume is already flattened", text, token.position
            )
        if token.name == "FC" and not flat:
            layers.append(Flatten)
            flat = True
        layers.append(make(token))
    return layers


def _pool_maker(
    pool: str, window: int, stride: int | None, optional_pools: bool | None
) -> Callable[[_Token], Layer]:
    """The layer for a POOL token: ``pool`` (``'max'`` or ``'avg'``), made optional for ``POOL?``."""
    pool_layer = {"max": MaxPool, "avg": AvgPool}.get(pool)
    if pool_layer is None:
        raise ValueError(f"pattern(pool={pool!r}): use 'max' or 'avg'")
    return lambda token: _optional(pool_layer(window, stride), window, token.optional and not optional_pools)


def _conv_widths(tokens: list[_Token], widths: int | Sequence[int], max_width: int | None) -> list[int]:
    """The width of every CONV, in order."""
    stages, stage = [], 0
    for token in tokens:
        if token.name == "CONV":
            stages.append(stage)
        elif token.name == "POOL":
            stage += 1
    if isinstance(widths, int):
        return [min(widths * 2**s, max_width or widths * 2**s) for s in stages]
    widths = list(widths)
    if len(widths) == len(stages):
        return widths
    used = sorted(set(stages))
    if len(widths) == len(used):
        return [widths[used.index(s)] for s in stages]
    raise ValueError(
        f"pattern(widths={widths}): the pattern has {len(stages)} CONV layers in {len(used)} stages; "
        f"give {len(stages)} widths (one per CONV), {len(used)} (one per stage) or one int"
    )


def _fc_widths(tokens: list[_Token], fc_widths: int | Sequence[int], num_classes: int) -> list[int]:
    """The width of every FC, in order: ``fc_widths`` then ``num_classes`` for the last."""
    hidden = sum(t.name == "FC" for t in tokens) - 1
    if hidden < 0:
        return []
    widths = [fc_widths] * hidden if isinstance(fc_widths, int) else list(fc_widths)
    if len(widths) != hidden:
        raise ValueError(
            f"pattern(fc_widths={fc_widths}): the pattern has {hidden} FC layers before the last; "
            f"give {hidden} widths or one int"
        )
    return [*widths, num_classes]


def _optional(pool_layer: Layer, window: int, optional: bool) -> Layer:
    """The pool, or for ``POOL?`` the pool only while every spatial size is at least the window."""
    if not optional:
        return pool_layer

    def choose(input_shape):
        fits = all(size == UNKNOWN or size >= window for size in input_shape[1:-1])
        return pool_layer if fits else Identity

    return shape_dependent(choose)


__all__ = ["LAYER_NAMES", "parse", "pattern"]
