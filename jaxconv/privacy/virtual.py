"""Virtual batches: a logical Poisson batch of any size computed in physical chunks of fixed size.

De et al. (2022) train with Poisson batches of 4096 examples and more, each example in K
augmented copies: far more than one device holds at once. `in_chunks` runs a per-chunk function
over a padded logical batch of ``C * physical_batch_size`` rows in a `lax.scan`, one chunk of
``physical_batch_size`` rows at a time, and adds up the chunks' clipped sums; chunks with no
real row (the padding at the end of a batch smaller than its bound) are skipped by `lax.cond`.
The shapes never depend on the realised batch size, so a varying Poisson batch never recompiles,
memory is bounded by one chunk, and the noise is added once to the whole sum afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.core import Key, Params, PyTree, State

# fn(params, state, x, y, key, mask) -> (clipped_sum, norms (rows,)): a chunk's clipped sum
ChunkFn = Callable[[Params, State, PyTree, PyTree, Key | None, jax.Array], tuple[Params, jax.Array]]


def chunked_batch_size(max_batch_size: int, physical_batch_size: int) -> int:
    """The padded logical batch: ``max_batch_size`` rounded up to whole chunks."""
    if not isinstance(physical_batch_size, int) or physical_batch_size < 1:
        raise ValueError(
            f"physical_batch_size={physical_batch_size!r} must be a positive int: the rows computed at once"
        )
    return math.ceil(max_batch_size / physical_batch_size) * physical_batch_size


def in_chunks(fn: ChunkFn, physical_batch_size: int) -> ChunkFn:
    """``fn`` over a logical batch in chunks of ``physical_batch_size`` rows, summed.

    The returned function takes x (B, ...), y (B, ...) and mask (B,) with B a
    multiple of ``physical_batch_size`` (`chunked_batch_size`) and returns the
    sum of the chunks' first outputs and their second outputs (B,) in order
    (zeros for skipped chunks). Chunk c gets ``fold_in(key, c)``.
    """
    chunked_batch_size(physical_batch_size, physical_batch_size)  # refuses a non-positive size

    def run(params: Params, state: State, x: PyTree, y: PyTree, key: Key | None, mask: jax.Array):
        rows = mask.shape[0]
        if rows % physical_batch_size:
            raise ValueError(
                f"a logical batch of {rows} rows does not split into chunks of physical_batch_size="
                f"{physical_batch_size}; pad it to {chunked_batch_size(rows, physical_batch_size)} rows"
            )
        chunks = jax.tree.map(
            lambda leaf: leaf.reshape(-1, physical_batch_size, *leaf.shape[1:]), (x, y, mask)
        )
        count = rows // physical_batch_size
        keys = None if key is None else jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(count))
        first = jax.tree.map(lambda leaf: leaf[0], chunks)
        shapes = jax.eval_shape(lambda c: fn(params, state, c[0], c[1], key, c[2]), first)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def chunk(total, inputs):
            (x_c, y_c, mask_c), key_c = inputs
            summed, outputs = lax.cond(
                mask_c.any(), lambda: fn(params, state, x_c, y_c, key_c, mask_c), lambda: zeros
            )
            return jax.tree.map(jnp.add, total, summed), outputs

        total, outputs = lax.scan(chunk, zeros[0], (chunks, keys))
        return total, jax.tree.map(lambda leaf: leaf.reshape(rows, *leaf.shape[2:]), outputs)

    return run
