"""Minibatches of a host dataset, shuffled per epoch and prefetched to the device.

The host does as little as possible: it indexes the uint8 arrays with one
permutation per epoch and hands the batches to `jax.device_put`, keeping a few
transfers in flight; scaling and augmentation happen on the device (see
`jaxconv.data.augmentation`). The order of epoch `e` is a pure function of
`(key, e)`, so a run resumed at epoch `e` sees the batches it would have seen::

    for epoch in range(num_epochs):
        for images, labels in batches(train, 128, key=data_key, epoch=epoch):
            params, opt_state = step(params, opt_state, images, labels)

An epoch's batches say where they stand (`EpochBatches.position`, after the k-th batch), and
``batches(..., position=...)`` continues the same epoch from there: a run saves it in its
checkpoint to resume in the middle of an epoch.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from jaxconv.data.datasets import Dataset
from jaxconv.data.folder import ImageFolder

__all__ = ["EpochBatches", "batches", "epoch_batches", "epoch_order", "num_batches", "prefetch_to_device"]

Data = Dataset | ImageFolder | np.ndarray | Sequence[Any]
T = TypeVar("T")
Position = dict[str, Any]  # JSON-ready: {"batches": k, ...}


class EpochBatches:
    """One epoch's batches (an iterator) and ``position(k)``: where the epoch stands after its
    k-th batch (JSON-ready; for an `ImageFolder`, one of the last few batches read ahead)."""

    def __init__(self, batches: Iterator[Any], position: Callable[[int], Position]):
        self._batches, self.position = batches, position

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Any:
        return next(self._batches)


def batches(
    data: Data,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    epoch: int | None = None,
    drop_remainder: bool = True,
    prefetch: int = 2,
    sharding: jax.sharding.Sharding | jax.Device | None = None,
    position: Position | None = None,
) -> EpochBatches:
    """One epoch of device batches.

    Args:
      data: a `Dataset` or `ImageFolder` (yields (images, labels)) or a sequence of
        arrays with a common leading axis N, e.g. (images, labels).
      batch_size: B, at most N.
      key: the shuffling key; None keeps the stored order.
      epoch: which epoch; with a key, required, and the order is a permutation
        drawn from `jax.random.fold_in(key, epoch)`.
      drop_remainder: drop the last N mod B examples rather than yield a short batch.
      prefetch: how many batches to keep in flight to the device ahead of the
        consumer (0: transfer each batch when it is requested).
      sharding: where to put the batches (`jax.device_put`'s second argument,
        e.g. a `NamedSharding` that splits the batch axis); default device if None.
      position: continue the epoch after the batches an earlier `EpochBatches.position` counted.

    Yields:
      Tuples of device arrays, one per array of `data`, each (B, ...) and of
      the data's dtype (images stay uint8).
    """
    host = epoch_batches(data, batch_size, key, epoch, drop_remainder=drop_remainder, position=position)
    return EpochBatches(prefetch_to_device(host, prefetch, sharding), host.position)


def epoch_batches(
    data: Data,
    batch_size: int,
    key: jax.Array | None = None,
    epoch: int | None = None,
    *,
    drop_remainder: bool = True,
    position: Position | None = None,
) -> EpochBatches:
    """The host (NumPy) batches of `batches`, in the same order; arguments as there. An
    `ImageFolder` reads its own (`ImageFolder.epoch_batches`)."""
    if isinstance(data, ImageFolder):
        num_batches(len(data), batch_size, drop_remainder=drop_remainder)  # its checks
        folder = data.epoch_batches(batch_size, key, epoch, drop_remainder=drop_remainder, position=position)
        return EpochBatches(folder, folder.position)
    arrays = _as_arrays(data)
    n = len(arrays[0])
    count = num_batches(n, batch_size, drop_remainder=drop_remainder)
    order = epoch_order(n, key, epoch)

    def generate() -> Iterator[tuple[np.ndarray, ...]]:
        skipped = 0 if position is None else position["batches"] * batch_size
        for start in range(skipped, count * batch_size, batch_size):
            index = order[start : start + batch_size]
            yield tuple(array[index] for array in arrays)

    return EpochBatches(generate(), lambda batches: {"batches": batches})


def epoch_order(num_examples: int, key: jax.Array | None, epoch: int | None) -> np.ndarray:
    """The (num_examples,) order of one epoch: a permutation of
    `jax.random.fold_in(key, epoch)`, or `arange` when key is None."""
    if key is None:
        return np.arange(num_examples)
    if epoch is None:
        raise ValueError(
            "shuffling with a key needs the epoch, so that each epoch gets a new order: "
            "batches(data, batch_size, key=key, epoch=epoch)"
        )
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """How many batches one epoch has: floor(N / B), or ceil(N / B) keeping the remainder."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({num_examples} examples); "
            f"use batch_size <= {num_examples}"
        )
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def prefetch_to_device(
    iterable: Iterable[T],
    size: int = 2,
    sharding: jax.sharding.Sharding | jax.Device | None = None,
) -> Iterator[T]:
    """Yield the items of `iterable` (pytrees of host arrays) as device arrays,
    keeping `size` items in flight ahead of the consumer.

    `jax.device_put` returns before the copy ends, so the transfers of the next
    `size` batches overlap the computation on the current one.
    """
    if size < 0:
        raise ValueError(f"prefetch size must be >= 0, got {size}")

    def generate() -> Iterator[T]:
        queue: collections.deque[T] = collections.deque()
        for item in iterable:
            queue.append(jax.device_put(item, sharding))
            if len(queue) > size:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

    return generate()


def _as_arrays(data: Data) -> tuple[np.ndarray, ...]:
    if isinstance(data, Dataset):
        return data.arrays
    if isinstance(data, np.ndarray | jax.Array):
        data = (data,)
    arrays = tuple(np.asarray(array) for array in data)
    lengths = [len(array) if array.ndim else None for array in arrays]
    if not arrays or None in lengths or len(set(lengths)) != 1:
        shapes = ", ".join(str(array.shape) for array in arrays)
        raise ValueError(
            f"batches: expected a Dataset or arrays sharing a leading (example) axis, got shapes [{shapes}]"
        )
    return arrays
