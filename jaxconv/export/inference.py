"""The function an export writes: a net in inference mode with its weights inside.

`inference_function` closes over ``params`` and ``state`` and runs ``net.apply(..., train=False)``
after an optional ``preprocess`` (a run's normalisation), so the exported program maps images to
logits and needs nothing else. `batch_free_shape` checks the input shape an export is asked for:
(N, H, W, C) where N, the batch, is left free in the exported file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxconv.core import Layer, Params, ShapeTree, State, check_layer
from jaxconv.errors import ShapeError

Preprocess = Callable[[jax.Array], jax.Array]  # (N, H, W, C) input -> (N, H, W, C) float32 net input


def batch_free_shape(input_shape: ShapeTree, where: str) -> tuple[int, int, int]:
    """(H, W, C) of ``input_shape`` = (N, H, W, C); N may be anything (-1, None or a size): the
    exported batch is symbolic. Raises `ShapeError` for another rank or an unknown H, W or C."""
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else ()
    if len(shape) != 4 or any(not isinstance(size, int) or size <= 0 for size in shape[1:]):
        raise ShapeError(
            f"{where}: input_shape must be (N, H, W, C) with known H, W and C, e.g. (-1, 32, 32, 3), "
            f"got {input_shape!r}; the batch N is exported as a free size whatever it is given as"
        )
    return shape[1], shape[2], shape[3]


def inference_function(
    net: Layer, params: Params, state: State, preprocess: Preprocess | None = None
) -> Callable[[jax.Array], jax.Array]:
    """``forward(x) -> logits``: ``net`` in inference mode (``train=False``) with ``params`` and
    ``state`` as constants, after ``preprocess`` if given."""
    check_layer(net, "export: net")

    def forward(x: jax.Array) -> jax.Array:
        if preprocess is not None:
            x = preprocess(x)
        return net.apply(params, state, x, train=False)[0]

    return forward


def check_applies(
    forward: Callable[[jax.Array], Any], size: tuple[int, int, int], dtype: Any, where: str
) -> None:
    """Run ``forward`` shape-only at batch 1, so a net that does not take (H, W, C) inputs, or
    ``params`` that are not its own, fail here with the net's own error and a note saying where."""
    try:
        jax.eval_shape(forward, jax.ShapeDtypeStruct((1, *size), dtype))
    except ValueError as error:
        error.add_note(f"while exporting ({where}) for inputs of shape (N, {', '.join(map(str, size))})")
        raise


def write(path: str | os.PathLike[str] | None, data: bytes) -> None:
    """Write ``data`` to ``path`` (when one is given) through a temporary file renamed over it."""
    if path is None:
        return
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
