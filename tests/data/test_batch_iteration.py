import jax
import numpy as np
import pytest

from jaxconv.data import (
    Dataset,
    batches,
    epoch_batches,
    epoch_order,
    num_batches,
    prefetch_to_device,
)


def arrays(n=10):
    """Image i is filled with the value i, and its label is i."""
    images = np.repeat(np.arange(n, dtype=np.uint8), 4).reshape(n, 2, 2, 1)
    return images, np.arange(n, dtype=np.int32)


def labels_of(iterator):
    return [np.asarray(labels).tolist() for _, labels in iterator]


def order_of(iterator):
    """The labels of all batches, in the order they came."""
    return [label for batch in labels_of(iterator) for label in batch]


def test_no_key_keeps_the_order():
    assert labels_of(batches(arrays(), 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert labels_of(batches(arrays(), 4, drop_remainder=False)) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert (num_batches(10, 4), num_batches(10, 4, drop_remainder=False)) == (2, 3)
    assert num_batches(8, 4, drop_remainder=False) == 2


@pytest.mark.parametrize("key", [jax.random.key(0), jax.random.PRNGKey(0)], ids=["typed", "raw"])
def test_each_example_once_per_epoch_and_images_follow_labels(key):
    for epoch in range(3):
        seen = []
        for images, labels in batches(arrays(), 3, key=key, epoch=epoch, drop_remainder=False):
            assert isinstance(images, jax.Array) and images.dtype == np.uint8
            assert labels.dtype == np.int32 and images.shape[1:] == (2, 2, 1)
            np.testing.assert_array_equal(images[:, 0, 0, 0], labels)
            seen += np.asarray(labels).tolist()
        assert sorted(seen) == list(range(10))
        kept = order_of(batches(arrays(), 3, key=key, epoch=epoch))
        assert len(kept) == len(set(kept)) == 9


def test_order_is_a_function_of_key_and_epoch():
    data = arrays(100)
    key = jax.random.key(7)
    orders = [order_of(batches(data, 10, key=key, epoch=e)) for e in range(3)]
    assert orders[0] != list(range(100))
    assert len({tuple(o) for o in orders}) == 3  # a new order each epoch
    assert order_of(batches(data, 10, key=key, epoch=2)) == orders[2]  # resumable
    other = order_of(batches(data, 10, key=jax.random.key(8), epoch=0))
    assert other != orders[0]
    np.testing.assert_array_equal(epoch_order(100, key, 1), orders[1])


@pytest.mark.parametrize("prefetch", [1, 2, 5])
def test_prefetch_gives_the_same_batches(prefetch):
    key = jax.random.key(0)
    reference = [tuple(map(np.asarray, b)) for b in batches(arrays(), 3, key=key, epoch=4, prefetch=0)]
    prefetched = list(batches(arrays(), 3, key=key, epoch=4, prefetch=prefetch))
    host = list(epoch_batches(arrays(), 3, key, 4))
    assert len(reference) == len(prefetched) == len(host) == 3
    for a, b, c in zip(reference, prefetched, host, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(x, z)


def test_prefetch_runs_ahead_by_its_size():
    pulled = []

    def source():
        for i in range(10):
            pulled.append(i)
            yield np.array([i])

    iterator = prefetch_to_device(source(), 3)
    assert pulled == []  # lazy until the first batch is asked for
    assert int(next(iterator)[0]) == 0 and pulled == [0, 1, 2, 3]
    assert [int(x[0]) for x in iterator] == list(range(1, 10))


def test_dataset_and_sharding():
    images, labels = arrays()
    dataset = Dataset("toy", "train", images, labels, ("a",) * 10, (0.5,), (0.5,))
    device = jax.devices()[0]
    first = next(batches(dataset, 5, sharding=device))
    assert first[0].devices() == {device}
    np.testing.assert_array_equal(first[1], [0, 1, 2, 3, 4])
    (only,) = next(batches(labels, 5))  # a single array gives 1-tuples
    np.testing.assert_array_equal(only, [0, 1, 2, 3, 4])


def test_errors():
    with pytest.raises(ValueError, match=r"batch_size=11 is larger than the dataset \(10 examples\); "
                       "use batch_size <= 10"):  # fmt: skip
        batches(arrays(), 11)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        batches(arrays(), 0)
    with pytest.raises(ValueError, match=r"needs the epoch.*key=key, epoch=epoch"):
        batches(arrays(), 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"sharing a leading \(example\) axis, got shapes "
                       r"\[\(10, 2, 2, 1\), \(9,\)\]"):  # fmt: skip
        batches((arrays()[0], np.arange(9)), 2)
    with pytest.raises(ValueError, match="prefetch size must be >= 0, got -1"):
        batches(arrays(), 2, prefetch=-1)
