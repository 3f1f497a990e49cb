"""Pooling: downsample each channel independently over sliding windows.

The notes' POOL layer takes windows of size F with stride S (most often
F=2, S=2, or the overlapping F=3, S=2) and reduces each to one number: its max,
its average, or its L2 norm. Pools work on (N, *spatial, C) inputs of any
spatial rank and keep C.

Max pooling has two formulations with identical results (ties and NaNs included; see
`tiled_max`), chosen per call at trace time: ``lax.reduce_window``, whose gradient XLA lowers to
``select_and_scatter``, and, for floating-point inputs whose windows tile them exactly (window =
stride on every axis, no padding, sizes divisible by the window, at most 64 elements a window),
a reshape to (N, H/F, F, W/F, F, C) and a max over the F axes, with a custom gradient that sends
each window's gradient to the one element ``select_and_scatter`` would pick. XLA's CPU backend runs
``select_and_scatter`` slowly (it took about half of the default model's train step), so the tiled
form is used where it measured faster (`benchmarks/maxpool.py`):

=========  ===========  ==============================================================
backend    tiled form   why
=========  ===========  ==============================================================
cpu        yes          2x2 pool fwd+bwd 27-64x faster alone, default train step 1.7-2.0x
gpu        no           not measured (no GPU at hand); XLA:GPU has its own kernel
tpu        no           not measured
=========  ===========  ==============================================================
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import sizing
from jaxconv.core import UNKNOWN, Layer, Shape, layer
from jaxconv.errors import ShapeError
from jaxconv.layers.shared import floating, positive, reduce_window
from jaxconv.sizing import SizeArg, per_axis, slide, spatial_rank
from jaxconv.traits import Traits

MAX_POOL_IMPLS = ("auto", "tiled", "reduce_window")
"""How MaxPool computes: ``'auto'`` the tiled form where the windows tile the input and the
backend is one of `TILED_BACKENDS`, ``'tiled'`` wherever the windows tile the input (any
backend), ``'reduce_window'`` always ``lax.reduce_window``."""

TILED_BACKENDS = frozenset({"cpu"})
"""The backends (`jax.default_backend()`) where the tiled max pool measured faster."""

_max_pool_impl = contextvars.ContextVar("jaxconv_max_pool_impl", default="auto")

_MAX_TILED_WINDOW = 64  # window elements; the custom gradient unrolls one comparison per element

_SLIDING = Traits(window="window", field="window")

Reduce = Callable[[jax.Array, sizing.Window, tuple], jax.Array]


def _pool(
    kind: str,
    reduce: Reduce,
    window: SizeArg,
    stride: SizeArg | None,
    padding: sizing.PaddingLike,
    strict: bool | None,
    traits: Traits = _SLIDING,
    **spec,
) -> Layer:
    """A pooling layer from ``reduce(x, window, given_padding)``: the `sizing.Window` on ``x`` and
    the padding given (before ``ceil_mode`` grew it); ``spec`` its other hyperparameters,
    ``ceil_mode`` and ``dilation`` among them."""
    stride = window if stride is None else stride
    dilation, ceil_mode = spec.get("dilation", 1), bool(spec.get("ceil_mode"))
    positive(kind, window=window, stride=stride, dilation=dilation)
    if ceil_mode and isinstance(padding, str):
        raise ValueError(
            f"{kind}(ceil_mode=True, padding={padding!r}): ceil_mode rounds the output size up "
            "from an int padding; drop ceil_mode ('SAME' rounds up already) or give padding=0"
        )

    def geometry(input_shape: Shape) -> tuple[sizing.Window, tuple]:
        rank = spatial_rank(kind, input_shape, window)
        windows = per_axis(window, rank, kind, "window")
        strides = per_axis(stride, rank, kind, "stride")
        dilations = per_axis(dilation, rank, kind, "dilation")
        spatial = input_shape[1:-1]
        given = sizing.padding_pairs(padding, spatial, windows, strides, dilations, kind)
        geo = slide(kind, spatial, windows, strides, padding, dilations, strict, ceil_mode)
        for (lo, hi), f, d in zip(given, windows, dilations, strict=True):
            if max(lo, hi) >= sizing.effective_filter(f, d):
                span = sizing.effective_filter(f, d)
                raise ShapeError(
                    f"{kind}(window={window}, padding={padding}{_dilated(dilation)}): a padding of "
                    f"{max(lo, hi)} is at least the window {span}, so some windows would hold only "
                    f"padding; use padding < {span}"
                )
        return geo, given

    def init(key, input_shape):
        geo, _ = geometry(input_shape)
        return (input_shape[0], *geo.out_spatial, input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return reduce(x, *geometry(x.shape)), {}

    return layer(kind, init, apply, traits=traits, window=window, stride=stride, padding=padding, **spec)


def _dilated(dilation: SizeArg) -> str:
    return "" if dilation == 1 else f", dilation={dilation}"


def MaxPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    strict: bool | None = None,
    ceil_mode: bool = False,
    impl: str | None = None,
    dilation: SizeArg = 1,
) -> Layer:
    """The maximum of each window (padding never wins). Stride defaults to the window.

    The conventions are PyTorch's ``MaxPool1d/2d/3d`` (and ONNX ``MaxPool``'s): with
    ``ceil_mode=True`` the output size rounds up, ``ceil((W - F + 2P)/S) + 1``: a last window
    that runs past the end is kept, provided it starts inside the input or its low padding
    (GoogLeNet's and SqueezeNet's pools). ``dilation`` D spaces the window's F taps D apart, so
    it spans ``D*(F - 1) + 1`` inputs (PyTorch's ``dilation``, ONNX's ``dilations``).

    ``impl`` picks the formulation (`MAX_POOL_IMPLS`; both give identical values and
    gradients); None follows the enclosing `max_pool_impl` block, ``'auto'`` by default. It is
    read while tracing; a dilated window always runs as ``lax.reduce_window``.

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """
    _check_impl(f"MaxPool(impl={impl!r})", impl, allow_none=True)

    def reduce(x, geo, given):
        if uses_tiled_max(x.shape[1:-1], geo.size, geo.stride, geo.padding, x.dtype, impl, geo.dilation):
            return tiled_max(x, geo.size)
        if any(d > 1 for d in geo.dilation):
            return _dilated_max(x, geo)
        return reduce_window(x, -jnp.inf, lax.max, geo.size, geo.stride, geo.padding)

    spec = {"ceil_mode": ceil_mode, "impl": impl, "dilation": dilation}
    return _pool("MaxPool", reduce, window, stride, padding, strict, **spec)


def _dilated_max(x: jax.Array, geo: sizing.Window) -> jax.Array:
    """Max pooling with a dilated window as the maximum of its F strided slices of the padded
    input, one per tap (JAX has no gradient of a dilated ``reduce_window`` max); a tie's
    gradient is split between the tied taps."""
    padded = jnp.pad(x, ((0, 0), *geo.padding, (0, 0)), constant_values=-jnp.inf)
    taps = []
    for offsets in itertools.product(*map(range, geo.size)):
        start = [0, *(o * d for o, d in zip(offsets, geo.dilation, strict=True)), 0]
        limit = [
            x.shape[0],
            *(b + (n - 1) * s + 1 for b, n, s in zip(start[1:-1], geo.out_spatial, geo.stride, strict=True)),
            x.shape[-1],
        ]
        taps.append(lax.slice(padded, start, limit, (1, *geo.stride, 1)))
    return functools.reduce(jnp.maximum, taps)


@contextlib.contextmanager
def max_pool_impl(impl: str) -> Iterator[None]:
    """Within this block, MaxPool layers built with ``impl=None`` compute with ``impl`` (one of
    `MAX_POOL_IMPLS`) when traced, e.g. ``with max_pool_impl("reduce_window"): jax.jit(step)...``
    to compare the formulations."""
    _check_impl(f"max_pool_impl({impl!r})", impl)
    token = _max_pool_impl.set(impl)
    try:
        yield
    finally:
        _max_pool_impl.reset(token)


def _check_impl(where: str, impl: str | None, allow_none: bool = False) -> None:
    if not (impl in MAX_POOL_IMPLS or (allow_none and impl is None)):
        raise ValueError(f"{where}: impl must be one of {MAX_POOL_IMPLS}")


def uses_tiled_max(
    spatial, windows, strides, pads, dtype=jnp.float32, impl: str | None = None, dilation=None
) -> bool:
    """Whether a MaxPool with ``impl`` (None: the enclosing `max_pool_impl`) on inputs of these
    spatial sizes and ``dtype``, its window dilated by ``dilation`` (None: not), runs as
    `tiled_max` on this backend."""
    impl = impl or _max_pool_impl.get()
    tiles = tuple(windows) == tuple(strides) and not any(p for pair in pads for p in pair)
    tiles = tiles and all(d == 1 for d in dilation or ())
    tiles = tiles and all(size % f == 0 for size, f in zip(spatial, windows, strict=True))
    small = np.prod(windows) <= _MAX_TILED_WINDOW
    wanted = impl == "tiled" or (impl == "auto" and jax.default_backend() in TILED_BACKENDS)
    return bool(tiles and small and wanted and jnp.issubdtype(dtype, jnp.floating))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def tiled_max(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Non-overlapping max pooling, (N, *spatial, C) -> (N, *spatial / window, C), as a reshape and
    a max; every spatial size must be divisible by its window.

    Equal, forward and backward, to ``lax.reduce_window(x, -inf, lax.max, ...)`` with stride =
    window: its derivative takes, in each window, the element XLA's ``select_and_scatter`` picks
    (the first maximum in row-major window order; see `_chosen`). A `jax.custom_jvp` rather than a
    `jax.custom_vjp`, so that forward mode (`jax.jvp`, `jax.jacfwd`) and higher orders work too; the
    one difference from ``select_and_scatter``: a -0.0 cotangent reaches the input as -0.0, not +0.0.
    """
    return jnp.max(_tiled(x, window), axis=_window_axes(window))


@tiled_max.defjvp
def _tiled_max_jvp(window: tuple[int, ...], primals, tangents) -> tuple[jax.Array, jax.Array]:
    (x,), (tangent,) = primals, tangents
    tiles, axes = _tiled(x, window), _window_axes(window)
    positions = np.arange(np.prod(window), dtype=np.int8).reshape(1, *(d for f in window for d in (1, f)), 1)
    chosen = positions == jnp.expand_dims(_chosen(tiles, window), axes)  # one-hot per window
    return jnp.max(tiles, axis=axes), jnp.sum(jnp.where(chosen, _tiled(tangent, window), 0), axis=axes)


def _tiled(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """(N, H, W, C) -> (N, H/F, F, W/F, F, C), for any spatial rank."""
    n, *spatial, c = x.shape
    return x.reshape(n, *(d for size, f in zip(spatial, window, strict=True) for d in (size // f, f)), c)


def _window_axes(window: tuple[int, ...]) -> tuple[int, ...]:
    """The F axes of `_tiled`'s layout."""
    return tuple(range(2, 2 + 2 * len(window), 2))


def _chosen(tiles: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """(N, H/F, W/F, C) int8: each window's chosen element as a row-major position in the window.

    XLA's ``select_and_scatter`` with the ``>=`` select of max pooling's gradient scans a window
    in row-major order and moves to the next element unless ``chosen >= next``: ties go to the
    first maximum, and a NaN is passed over as XLA passes over it.
    """
    values = [
        tiles[(slice(None), *(part for offset in offsets for part in (slice(None), offset)), slice(None))]
        for offsets in itertools.product(*map(range, window))
    ]
    best, chosen = values[0], jnp.zeros(values[0].shape, jnp.int8)
    for position, value in enumerate(values[1:], start=1):
        move = ~(best >= value)
        best, chosen = jnp.where(move, value, best), jnp.where(move, jnp.int8(position), chosen)
    return chosen


def AvgPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    count_include_pad: bool = True,
    strict: bool | None = None,
    ceil_mode: bool = False,
    dilation: SizeArg = 1,
) -> Layer:
    """The mean of each window. Stride defaults to the window.

    The default follows PyTorch's ``AvgPool1d/2d/3d``: ``count_include_pad=True`` counts the
    padded zeros in the mean. ``count_include_pad=False`` averages each window over its real
    inputs only: ONNX ``AveragePool``'s default, and with ``padding='SAME'`` the convention of
    TensorFlow's ``tf.nn.avg_pool`` and Keras' ``AveragePooling2D(padding='same')``.
    ``ceil_mode=True`` rounds the output size up as `MaxPool` does; the part of a last window
    that runs past the (padded) input never counts, as in PyTorch and ONNX. ``dilation`` D
    spaces the taps D apart (ONNX ``AveragePool``'s ``dilations``; PyTorch has none).

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """

    def reduce(x, geo, given):
        sums = reduce_window(x, 0.0, lax.add, geo.size, geo.stride, geo.padding, geo.dilation)
        padded = any(p for pair in geo.padding for p in pair)
        if not padded or (count_include_pad and geo.padding == given):
            return sums / np.prod(geo.size)
        ones = np.ones((1, *x.shape[1:-1], 1), x.dtype)  # what counts in a window; folded by XLA
        pads = geo.padding
        if count_include_pad:  # the given padding counts, ceil_mode's growth does not
            ones = np.pad(ones, ((0, 0), *given, (0, 0)), constant_values=1)
            pads = tuple((lo - a, hi - b) for (lo, hi), (a, b) in zip(geo.padding, given, strict=True))
        counts = reduce_window(ones, 0.0, lax.add, geo.size, geo.stride, pads, geo.dilation)
        return sums / counts

    spec = {"count_include_pad": count_include_pad, "ceil_mode": ceil_mode, "dilation": dilation}
    return _pool("AvgPool", reduce, window, stride, padding, strict, **spec)


def LpPool(
    window: SizeArg,
    stride: SizeArg | None = None,
    padding: sizing.PaddingLike = 0,
    p: float = 2.0,
    strict: bool | None = None,
) -> Layer:
    """The Lp norm of each window, ``(sum |x|^p)^(1/p)``; p=2 is the notes' L2-norm pooling.

    The norm is not differentiable at zero: an all-zero window, and for
    ``p <= 1`` an entry at zero, gets a zero gradient rather than NaN or inf.

    Shapes: (N, *spatial, C) -> (N, *out_spatial, C).
    """
    positive("LpPool", p=p)

    def reduce(x, geo, given):
        x = floating(x)  # integer pixels would overflow when squared
        if p == 2:
            powered = x * x
        else:  # |x|^p, with a zero (not infinite or NaN) gradient at x = 0
            nonzero = x != 0
            powered = jnp.where(nonzero, jnp.abs(jnp.where(nonzero, x, 1)) ** p, 0)
        sums = reduce_window(powered, 0.0, lax.add, geo.size, geo.stride, geo.padding)
        positive_sums = sums > 0
        safe = jnp.where(positive_sums, sums, 1.0)
        return jnp.where(positive_sums, safe ** (1.0 / p), 0.0)

    traits = Traits(window="window", field="window", saved=(1, 1))
    return _pool("LpPool", reduce, window, stride, padding, strict, traits, p=p)


def AdaptiveAvgPool(output_size: SizeArg) -> Layer:
    """Average pooling to a fixed output size, as PyTorch's ``AdaptiveAvgPool1d/2d/3d``.

    Along an axis of size W, output ``i`` of ``W_out`` averages inputs ``floor(i W / W_out)`` up to
    ``ceil((i + 1) W / W_out)`` (exclusive): windows that tile the input when ``W_out`` divides W
    and overlap by one otherwise. Torchvision's AlexNet and VGG pool to 6x6 and 7x7 before their
    FC layers, so that other input sizes reach them with the same number of inputs.

    Shapes: (N, *spatial, C) -> (N, *output_size, C); the spatial sizes must be known.
    """
    positive("AdaptiveAvgPool", output_size=output_size)

    def output_sizes(input_shape: Shape) -> tuple[int, ...]:
        rank = spatial_rank("AdaptiveAvgPool", input_shape, output_size)
        if UNKNOWN in input_shape[1:-1]:
            raise ShapeError(
                f"AdaptiveAvgPool({output_size}) needs known spatial sizes, got {tuple(input_shape)}; "
                "give the input's H and W at init"
            )
        return per_axis(output_size, rank, "AdaptiveAvgPool", "output_size")

    def init(key, input_shape):
        return (input_shape[0], *output_sizes(input_shape), input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        for axis, out in enumerate(output_sizes(x.shape), start=1):
            x = _adaptive_mean(floating(x), axis, out)
        return x, {}

    return layer("AdaptiveAvgPool", init, apply, traits=Traits(), output_size=output_size)


def _adaptive_mean(x: jax.Array, axis: int, out: int) -> jax.Array:
    """Mean of ``x`` along ``axis`` over `AdaptiveAvgPool`'s ``out`` windows."""
    size = x.shape[axis]
    if size % out == 0:
        return x.reshape(*x.shape[:axis], out, size // out, *x.shape[axis + 1 :]).mean(axis + 1)
    cells = [
        lax.slice_in_dim(x, (i * size) // out, -(-(i + 1) * size // out), axis=axis).mean(axis, keepdims=True)
        for i in range(out)
    ]
    return jnp.concatenate(cells, axis)


def _global(kind: str, reduce: Callable[..., jax.Array], saved: tuple[int, int]) -> Layer:
    def init(key, input_shape):
        spatial_rank(kind, input_shape)
        return (input_shape[0], input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        spatial_rank(kind, x.shape)
        return reduce(x, axis=tuple(range(1, x.ndim - 1))), {}

    return layer(kind, init, apply, traits=Traits(field="whole", saved=saved))


GlobalAvgPool = _global("GlobalAvgPool", jnp.mean, saved=(0, 1))
"""The mean over all spatial positions: (N, *spatial, C) -> (N, C)."""

GlobalMaxPool = _global("GlobalMaxPool", jnp.max, saved=(1, 1))
"""The maximum over all spatial positions: (N, *spatial, C) -> (N, C)."""
