"""FractalNet (Larsson, Maire & Shakhnarovich 2017): deep and shallow paths without residuals.

A fractal block of C columns follows the paper's expansion rule

    f_1(z) = conv(z),        f_{C+1}(z) = join(f_C(f_C(z)), conv(z)),

where conv is 3x3 conv -> norm -> ReLU and join is the elementwise mean of its
inputs. As in the paper's figure, a join whose input is another join's output
takes that join's inputs instead: the last join of f_C averages its C columns,
column k holding 2^(k-1) convs. A block has 2^C - 1 convs, 2^(C-1) on its
longest path. The CIFAR networks stack B = 5 blocks of widths 64, 128, 256,
512, 512, each followed by 2x2 max pooling (32x32 -> 1x1), and one FC layer:
B * 2^(C-1) conv layers deep (``fractalnet20``: C = 3, ``fractalnet40``: C = 4).

Regularisation, active in training only:

- ``drop_path``: local drop-path. Every join drops each of its inputs with
  probability ``drop_path``, keeping one chosen at random when all would go;
  one draw per join and batch (the paper: 0.15). Global drop-path (one column
  for the whole network) is not implemented.
- ``dropout``: a drop rate per block, applied after each conv of the block,
  before its norm (the paper: ``PAPER_DROPOUT`` = 0, 0.1, 0.2, 0.3, 0.4).

Params follow the rule: ``block1``..``blockB`` / ``fractal`` / ``deep`` / ``first`` or
``second`` (f_C twice) / ... or ``shallow`` (the conv(z) of each level), ending at a
conv unit's ``conv`` and ``norm``; then ``head`` / ``fc``. The deepest conv of
a C = 3 block: ``['block1']['fractal']['deep']['second']['deep']['second']['conv']['kernel']``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxconv.combinators import Lambda, serial, wired
from jaxconv.core import Layer, layer, named
from jaxconv.errors import ShapeError
from jaxconv.layers import Dropout, MaxPool, Relu
from jaxconv.layers.shared import require_key
from jaxconv.models.blocks import Norm, norm_conv, norm_layer, pooled_classifier
from jaxconv.models.registry import register
from jaxconv.traits import Traits

CIFAR_WIDTHS = (64, 128, 256, 512, 512)
PAPER_DROPOUT = (0.0, 0.1, 0.2, 0.3, 0.4)
PAPER_DROP_PATH = 0.15


def Join(drop_path: float = 0.0) -> Layer:
    """The elementwise mean of a tuple of equal-shaped branches; with local drop-path in training.

    In training with ``drop_path > 0`` each branch is left out with probability
    ``drop_path`` (one draw per batch) and the mean is over the branches kept; when
    every branch would be dropped, one chosen uniformly is kept. Needs a key then.
    Shapes: ((N, H, W, C), ...) -> (N, H, W, C).
    """
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"Join(drop_path={drop_path}): the drop probability must be in [0, 1)")

    def init(key, input_shape):
        if any(shape != input_shape[0] for shape in input_shape[1:]):
            raise ShapeError(f"Join: the branch shapes {list(input_shape)} differ; it averages equal shapes")
        return input_shape[0], {}, {}

    def apply(params, state, xs, *, key=None, train=False):
        if not train or drop_path == 0.0:
            return sum(xs[1:], start=xs[0]) / len(xs), {}
        weights = _kept(require_key("Join", key), len(xs), drop_path).astype(xs[0].dtype)
        weights = weights / weights.sum()
        return sum(weight * x for weight, x in zip(weights, xs, strict=True)), {}

    return layer("Join", init, apply, traits=Traits(field="fan_in"), drop_path=drop_path)


def _kept(key: jax.Array, num: int, drop_path: float) -> jax.Array:
    """Which of ``num`` branches survive: each with probability 1 - ``drop_path``, at least one."""
    drop_key, rescue_key = jax.random.split(key)
    kept = jax.random.bernoulli(drop_key, 1.0 - drop_path, (num,))
    rescued = jax.nn.one_hot(jax.random.randint(rescue_key, (), 0, num), num, dtype=bool)
    return jnp.where(kept.any(), kept, rescued)


def _fractal(deep: Layer, shallow: Layer, join: Layer | None) -> Layer:
    """``join(*deep(x), shallow(x))``, or the tuple of branches itself when ``join`` is None."""
    children = (("deep", deep), ("shallow", shallow), *((("join", join),) if join else ()))

    def run(step, x):
        """Thread ``x`` (a shape at init, an array at apply) through the children with ``step``."""
        branches = (*step("deep", deep, x), step("shallow", shallow, x))
        return step("join", join, branches) if join else branches

    return wired("Fractal", children, run)


def _expand(columns: int, unit: Callable[[], list[Layer]], drop_path: float, joined: bool) -> Layer:
    """f_C by the expansion rule; unless ``joined``, without its last join (a tuple of C columns)."""
    if columns == 1:
        return serial(*unit()) if joined else serial(*unit(), Lambda(lambda y: (y,), name="AsBranches"))
    deep = serial(
        named("first", _expand(columns - 1, unit, drop_path, joined=True)),
        named("second", _expand(columns - 1, unit, drop_path, joined=False)),
    )
    return _fractal(deep, serial(*unit()), Join(drop_path) if joined else None)


def fractal_block(
    columns: int, features: int, *, norm: Norm = "batch", dropout: float = 0.0, drop_path: float = 0.0
) -> Layer:
    """f_C with C = ``columns``: (N, H, W, C_in) -> (N, H, W, features), 2^C - 1 convs, 2^(C-1) deep."""
    if columns < 1:
        raise ValueError(f"fractal_block(columns={columns}): a fractal has at least 1 column")

    def unit() -> list[Layer]:
        conv = named("conv", norm_conv(features, 3, padding=1, norm=norm))
        drop = [Dropout(dropout)] if dropout else []
        return [conv, *drop, named("norm", norm_layer(norm)), Relu]

    return _expand(columns, unit, drop_path, joined=True)


def fractalnet(
    columns: int = 4,
    num_classes: int = 10,
    *,
    widths: Sequence[int] = CIFAR_WIDTHS,
    norm: Norm = "batch",
    dropout: Sequence[float] | None = None,
    drop_path: float = 0.0,
) -> Layer:
    """A FractalNet of ``len(widths)`` blocks of ``columns`` columns, (N, H, W, 3) -> (N, num_classes).

    Each block is followed by 2x2 max pooling, so H and W must be divisible by
    2^B (32 for the CIFAR B = 5); then global average pooling and one FC layer.
    ``dropout`` gives one drop rate per block (default none); for it and
    ``drop_path`` see the module docstring.
    """
    rates = tuple(dropout) if dropout is not None else (0.0,) * len(widths)
    if len(rates) != len(widths):
        raise ValueError(
            f"fractalnet: dropout={tuple(rates)} gives {len(rates)} rates for {len(widths)} blocks; "
            f"give one per block, e.g. {PAPER_DROPOUT[: len(widths)]}"
        )
    blocks = [
        named(
            f"block{index}",
            serial(
                named("fractal", fractal_block(columns, width, norm=norm, dropout=rate, drop_path=drop_path)),
                MaxPool(2),
            ),
        )
        for index, (width, rate) in enumerate(zip(widths, rates, strict=True), 1)
    ]
    return serial(*blocks, named("head", pooled_classifier(num_classes)))


register("fractalnet20", fractalnet, (32, 32, 3), 10, columns=3)  # B * 2^(C-1) = 5 * 4 conv layers deep
register("fractalnet40", fractalnet, (32, 32, 3), 10, columns=4)  # 5 * 8
