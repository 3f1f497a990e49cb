"""Dropout and StochasticDepth: frequencies, scaling, keys and errors.

``rate`` is the probability of dropping. Frequencies are checked on large arrays
against the binomial standard deviation; the bounds are six sigma, so a correct
layer fails with probability below 1e-8 and a wrong ``rate`` direction always fails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc


def within_sigmas(count: int, trials: int, probability: float, sigmas: float = 6.0) -> bool:
    return abs(count - trials * probability) <= sigmas * np.sqrt(trials * probability * (1 - probability))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.75])
def test_dropout_drops_with_probability_rate_and_scales_survivors(rate):
    x = jax.random.uniform(jax.random.key(0), (500, 400), minval=0.5, maxval=1.5)  # never zero
    y, state = jc.Dropout(rate).apply({}, {}, x, key=jax.random.key(1), train=True)
    y, x = np.asarray(y), np.asarray(x)
    dropped = y == 0
    assert state == {}
    assert within_sigmas(int(dropped.sum()), x.size, rate), dropped.mean()
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)
    # inverted dropout keeps the expectation: the mean of y is close to the mean of x
    np.testing.assert_allclose(y.mean(), x.mean(), rtol=0.01)


@pytest.mark.parametrize("net", [jc.Dropout(0.5), jc.StochasticDepth(0.5)])
def test_evaluation_is_the_identity_and_needs_no_key(net):
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    assert net.init(None, x.shape)[0] == x.shape
    y, _ = net.apply({}, {}, x)
    np.testing.assert_array_equal(y, x)
    y, _ = net.apply({}, {}, x, key=jax.random.key(1), train=False)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("net", [jc.Dropout(0.0), jc.StochasticDepth(0.0)])
def test_rate_zero_trains_as_the_identity(net):
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    np.testing.assert_array_equal(net.apply({}, {}, x, train=True)[0], x)


@pytest.mark.parametrize("net", [jc.Dropout(0.5), jc.StochasticDepth(0.5)])
def test_same_key_same_mask_different_key_different_mask(net):
    x = jnp.ones((64, 4, 4, 3))
    first, _ = net.apply({}, {}, x, key=jax.random.key(7), train=True)
    again, _ = net.apply({}, {}, x, key=jax.random.key(7), train=True)
    other, _ = net.apply({}, {}, x, key=jax.random.key(8), train=True)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("make", [jc.Dropout, jc.StochasticDepth])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_outside_unit_interval_raises(make, rate):
    with pytest.raises(ValueError, match=r"rate is the probability of dropping and must be in \[0, 1\)"):
        make(rate)


@pytest.mark.parametrize("net", [jc.Dropout(0.5), jc.StochasticDepth(0.5)])
def test_training_without_a_key_shows_the_call(net):
    with pytest.raises(
        jc.MissingKeyError, match=r"needs a key: call .*key=jax\.random\.key\(seed\), train=True"
    ):
        net.apply({}, {}, jnp.ones((4, 3)), train=True)
    with pytest.raises(jc.MissingKeyError, match=r"or train=False for evaluation"):
        jc.serial(jc.Relu, net).apply({}, {}, jnp.ones((4, 3)), train=True)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_stochastic_depth_drops_whole_examples(rate):
    x = jax.random.uniform(jax.random.key(0), (4000, 3, 3, 2), minval=0.5, maxval=1.5)
    y, _ = jc.StochasticDepth(rate).apply({}, {}, x, key=jax.random.key(2), train=True)
    y, x = np.asarray(y), np.asarray(x)
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = np.all(np.isclose(y, x / (1 - rate), rtol=1e-6), axis=(1, 2, 3))
    assert np.all(dropped ^ kept)  # each example is either all zero or all scaled
    assert within_sigmas(int(dropped.sum()), len(x), rate), dropped.mean()


def test_dropout_gradient_is_the_scaled_mask():
    rate = 0.4
    x = jnp.linspace(0.5, 1.5, 1000).reshape(10, 100)
    key = jax.random.key(3)
    y, _ = jc.Dropout(rate).apply({}, {}, x, key=key, train=True)
    grad = jax.grad(lambda x: jnp.sum(jc.Dropout(rate).apply({}, {}, x, key=key, train=True)[0]))(x)
    np.testing.assert_allclose(grad, np.where(np.asarray(y) == 0, 0.0, 1 / (1 - rate)), rtol=1e-6)


def test_dropout_in_a_net_gets_its_own_key_per_layer():
    net = jc.serial(jc.Dropout(0.5), jc.Dropout(0.5))
    y, _ = net.apply({}, {}, jnp.ones((200, 50)), key=jax.random.key(0), train=True)
    # two independent masks keep a quarter of the entries, scaled by 2 twice
    assert set(np.unique(np.asarray(y))) <= {0.0, 4.0}
    assert within_sigmas(int((np.asarray(y) == 4.0).sum()), y.size, 0.25)


def test_dropout_keeps_bfloat16():
    y, _ = jc.Dropout(0.5).apply({}, {}, jnp.ones((4, 8), jnp.bfloat16), key=jax.random.key(0), train=True)
    assert y.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(y, np.float32))) <= {0.0, 2.0}


@pytest.mark.parametrize(
    ("make", "mask_shape"),
    [(jc.Dropout, (24, 3, 5)), (jc.StochasticDepth, (24, 1, 1))],
)
def test_with_axis_name_the_mapped_masks_put_together_are_the_global_batch_mask(make, mask_shape):
    """Four members of a vmapped axis, six rows each, same key: their masks side by side are the
    mask drawn for the 24 rows at once (the single-device mask), and the members' masks differ."""
    rate, key = 0.5, jax.random.key(5)
    x = jnp.ones((24, 3, 5))

    def member(rows: jax.Array) -> jax.Array:
        return make(rate, axis_name="shards").apply({}, {}, rows, key=key, train=True)[0]

    mapped = jax.vmap(member, axis_name="shards")(x.reshape(4, 6, 3, 5))  # (4, 6, 3, 5)
    keep = np.asarray(jax.random.bernoulli(key, 1 - rate, mask_shape))
    expected = np.broadcast_to(np.where(keep, 1 / (1 - rate), 0.0), x.shape)
    np.testing.assert_array_equal(np.asarray(mapped).reshape(x.shape), expected)
    assert not np.array_equal(mapped[0], mapped[1])
    assert jc.info(make(rate, axis_name="shards")).spec == {"rate": rate, "axis_name": "shards"}


def test_with_axis_name_outside_a_mapped_axis_jax_names_the_axis():
    with pytest.raises(NameError, match="shards"):
        jc.Dropout(0.5, axis_name="shards").apply({}, {}, jnp.ones((4, 3)), key=jax.random.key(0), train=True)
