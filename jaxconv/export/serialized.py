"""StableHLO: a net as a serialised `jax.export` program with a free batch size.

    data = jc.export.stablehlo(net, params, state, (-1, 32, 32, 3), path="net.stablehlo")

    # elsewhere, with JAX and without jaxconv:
    exported = jax.export.deserialize(Path("net.stablehlo").read_bytes())
    logits = exported.call(images)          # images (N, 32, 32, 3), any N

The file holds the weights as constants and the program for the platform it was exported on
(the CPU unless given ``platforms``); its batch is the symbolic size ``N``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.core import Layer, Params, ShapeTree, State
from jaxconv.export.inference import (
    Preprocess,
    batch_free_shape,
    check_applies,
    inference_function,
    write,
)


def stablehlo(
    net: Layer,
    params: Params,
    state: State,
    input_shape: ShapeTree,
    *,
    path: str | os.PathLike[str] | None = None,
    dtype: Any = jnp.float32,
    preprocess: Preprocess | None = None,
    platforms: Sequence[str] | None = None,
) -> bytes:
    """Serialise ``net`` in inference mode (``train=False``) with its ``params`` and ``state``.

    Args:
      input_shape: (N, H, W, C); the batch N is exported as the symbolic size ``N``.
      path: also write the bytes there (atomically).
      dtype: the input's dtype (float32; uint8 for raw images with a ``preprocess``).
      preprocess: applied to the (N, H, W, C) input before the net, e.g. a run's normalisation.
      platforms: the lowering platforms (default: JAX's default backend, e.g. ``("cpu",)``).

    Returns:
      The bytes of `jax.export.Exported.serialize`: ``jax.export.deserialize(data).call(x)``
      maps x (N, H, W, C) to the net's output (N, classes).
    """
    size = batch_free_shape(input_shape, "export.stablehlo")
    forward = inference_function(net, params, state, preprocess)
    check_applies(forward, size, dtype, "export.stablehlo")
    (batch,) = jax.export.symbolic_shape("N")
    spec = jax.ShapeDtypeStruct((batch, *size), dtype)
    exported = jax.export.export(jax.jit(forward), platforms=platforms)(spec)
    data = bytes(exported.serialize())
    write(path, data)
    return data
