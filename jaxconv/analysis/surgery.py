"""Net surgery: the notes' FC -> CONV conversion and sliding evaluation.

An FC layer that looks at a whole [H x W x C] volume is a convolution with
filter size H x W and no padding; the FC layers after it are 1x1
convolutions. `fc_to_conv` rewrites a net that way, reshaping the trained
weights, so that on the original input size it gives the same scores (as a
1x1 map) and on a larger image a whole map of scores in one forward pass: a
VGG-16 that reduces 224x224 to 7x7x512 turns a 384x384 image into a 6x6 map.

Each score in that map is the original net evaluated on one crop, the crops
``total stride`` pixels apart (`crop_scores` computes them one by one). This is
exact only when no layer zero-pads: inside a crop, a padded convolution sees
zeros at the crop's border where the converted net sees the neighbouring
pixels. `sliding_scores` evaluates at a finer stride by forwarding shifted
copies of the image and interleaving the maps, as the notes describe.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxconv import core
from jaxconv.analysis import fields
from jaxconv.combinators import Identity
from jaxconv.core import Layer, LayerPath, Params, ShapeTree, State
from jaxconv.layers import AvgPool, Conv, MaxPool
from jaxconv.wrappers import rewrite

_SLIDING_COUNTERPART = {"GlobalAvgPool": AvgPool, "GlobalMaxPool": MaxPool}
"""The pool that slides a window of the whole volume's size: what each global pool becomes."""


class _Conversion:
    """What the rewrite has seen so far: the volume the first FC looks at, and the reshaped kernels."""

    def __init__(self, records: dict[LayerPath, core.Record]):
        self.records = records
        self.volume: tuple[int, ...] | None = None  # (N, H, W, C) that Flatten received
        self.kernels: dict[LayerPath, tuple[int, ...]] = {}  # Dense path -> its kernel's new shape

    def replace(self, path: LayerPath, net: Layer) -> Layer | None:
        """The layer in place of ``net``, or None to keep it (`jaxconv.wrappers.rewrite`); the FC head
        must run in a serial chain, so no `parallel` is looked into."""
        description, record = core.info(net), self.records.get(path)
        if description.kind == "Parallel":
            return net
        if record is None:
            return None
        if self.volume is None and description.kind == "Flatten" and len(record.input_shape) == 4:
            self.volume = record.input_shape
            return Identity
        if self.volume is None and description.kind in _SLIDING_COUNTERPART:
            self.volume = (*record.input_shape[:1], 1, 1, record.input_shape[-1])
            return _SLIDING_COUNTERPART[description.kind](tuple(record.input_shape[1:-1]), stride=1)
        if self.volume is not None and description.kind == "Dense":
            first = not self.kernels
            window = self.volume[1:3] if first else (1, 1)
            channels = self.volume[-1] if first else record.input_shape[-1]
            features = description.spec["features"]
            self.kernels[path] = (*window, channels, features)
            return Conv(features, window, use_bias=description.spec["use_bias"])
        return None


def fc_to_conv(net: Layer, params: Params, input_shape: ShapeTree) -> tuple[Layer, Params]:
    """Replace ``Flatten -> Dense -> ... -> Dense`` by convolutions with the same weights.

    The first Dense after the `Flatten` of an [H x W x C] volume becomes
    ``Conv(K, (H, W))``, the later ones ``Conv(K, 1)``; the layers between
    them (ReLU, Dropout) stay. A `GlobalAvgPool` (`GlobalMaxPool`) before the
    first Dense becomes ``AvgPool((H, W), stride=1)``. Layers keep their names,
    so the converted params (and the unchanged state) have the same keys, with
    the Dense kernels reshaped from (H*W*C, K) to (H, W, C, K).
    ``params`` may be arrays or `jax.ShapeDtypeStruct`.

    Shapes: the converted net maps (N, H', W', C_in) to (N, h, w, K); on the
    original ``input_shape`` h = w = 1.
    """
    conversion = _Conversion(core.trace(net, input_shape).by_path())
    conv_net = rewrite(net, conversion.replace)
    if conversion.volume is None or not conversion.kernels:
        kinds = sorted({r.info.kind for r in conversion.records.values()})
        raise ValueError(
            f"fc_to_conv: found no Flatten (or global pool) followed by Dense in the net's serial chain "
            f"(its layers: {', '.join(kinds)}); the FC layers must follow the volume in serial()"
        )
    return conv_net, _reshape_kernels(params, conversion.kernels)


def _reshape_kernels(params: Params, kernels: dict[LayerPath, tuple[int, ...]]) -> Params:
    def visit(tree: Any, path: LayerPath) -> Any:
        if path in kernels:
            return {**tree, "kernel": _reshape(tree["kernel"], kernels[path])}
        if isinstance(tree, dict):
            return {name: visit(value, (*path, name)) for name, value in tree.items()}
        return tree

    return visit(params, ())


def _reshape(kernel: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(kernel, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(shape, kernel.dtype)
    return jnp.reshape(kernel, shape)  # (H*W*C, K) flattened row-major over (H, W, C), like Flatten


def total_stride(net: Layer, input_shape: ShapeTree) -> tuple[int, ...]:
    """The distance in input pixels between neighbouring outputs of ``net`` (per spatial axis)."""
    field = fields.widest(fields.receptive_field(net, input_shape))
    if field is None or field.jump is None:
        raise ValueError(
            "total_stride: the net's output has no spatial grid; convert it with fc_to_conv first"
        )
    return field.jump


def crop_scores(
    net: Layer, params: Params, state: State, images: jax.Array, crop_size: tuple[int, int], stride: int
) -> jax.Array:
    """The original net evaluated on every ``crop_size`` crop, ``stride`` pixels apart (the slow reference).

    Shapes: images (N, H, W, C) -> (N, rows, cols, K) with rows = (H - crop_H) // stride + 1.
    """
    n, height, width, channels = images.shape
    crop_h, crop_w = crop_size
    rows, cols = (height - crop_h) // stride + 1, (width - crop_w) // stride + 1
    crops = [
        images[:, r * stride : r * stride + crop_h, c * stride : c * stride + crop_w]
        for r in range(rows)
        for c in range(cols)
    ]
    batch = jnp.stack(crops, axis=1).reshape(-1, crop_h, crop_w, channels)  # (N * rows * cols, h, w, C)
    scores, _ = net.apply(params, state, batch)
    return scores.reshape(n, rows, cols, -1)


def sliding_scores(
    conv_net: Layer, params: Params, state: State, images: jax.Array, stride: int | None = None
) -> jax.Array:
    """The converted net's score map at ``stride`` (default: its total stride T).

    A stride T/k takes k*k forward passes over the image shifted by multiples
    of T/k, interleaved into one map, equal to the original net on every crop
    ``stride`` pixels apart (for nets without padding).

    Shapes: images (N, H, W, C) -> (N, rows, cols, K).
    """
    jump = total_stride(conv_net, (-1, *images.shape[1:]))
    if len(set(jump)) != 1:
        raise ValueError(
            f"sliding_scores: the net's strides {jump} differ per axis; it handles square strides"
        )
    full = jump[0]
    stride = full if stride is None else stride
    if stride < 1 or full % stride:
        raise ValueError(
            f"sliding_scores(stride={stride}): the stride must divide the net's total stride {full}"
        )
    passes = full // stride
    maps = {
        (i, j): conv_net.apply(params, state, images[:, i * stride :, j * stride :])[0]
        for i in range(passes)
        for j in range(passes)
    }
    rows = sum(maps[i, 0].shape[1] for i in range(passes))
    cols = sum(maps[0, j].shape[2] for j in range(passes))
    first = maps[0, 0]
    out = jnp.zeros((first.shape[0], rows, cols, first.shape[-1]), first.dtype)
    for (i, j), scores in maps.items():
        out = out.at[:, i::passes, j::passes].set(scores)
    return out


__all__ = ["crop_scores", "fc_to_conv", "sliding_scores", "total_stride"]
