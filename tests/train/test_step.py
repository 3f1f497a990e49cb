"""The loss, the metrics and the train and evaluation steps, against NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv as jc
from jaxconv.losses import correct, cross_entropy
from jaxconv.train import (
    TrainState,
    init_train_state,
    make_eval_step,
    make_optimizer,
    make_preprocess,
    make_train_step,
)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 7)).astype(np.float32)
LABELS = np.array([0, 3, 6, 2, 2, 5], np.int32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_a_numpy_reference(smoothing):
    targets = np.full(LOGITS.shape, smoothing / 7)
    targets[np.arange(6), LABELS] += 1 - smoothing
    expected = -(targets * log_softmax(LOGITS.astype(np.float64))).sum(axis=1).mean()
    np.testing.assert_allclose(
        cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS), smoothing), expected, rtol=1e-5
    )


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_top_k_correct_matches_argsort(k):
    ranks = np.argsort(-LOGITS, axis=1)[:, :k]
    expected = [label in row for label, row in zip(LABELS, ranks, strict=True)]
    np.testing.assert_array_equal(correct(jnp.asarray(LOGITS), jnp.asarray(LABELS), k), expected)


def linear_net():
    return jc.serial(jc.Flatten, jc.Dense(3))


def test_one_sgd_step_equals_the_hand_derived_softmax_gradient():
    net, optimizer = linear_net(), make_optimizer("sgd", 0.5, momentum=0.0)
    x = RNG.normal(size=(4, 2, 2, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 1], np.int32)
    state = init_train_state(net, optimizer, (-1, 2, 2, 1), jax.random.key(0))
    w = np.asarray(state.params["dense_1"]["kernel"], np.float64)
    b = np.asarray(state.params["dense_1"]["bias"], np.float64)
    flat = x.reshape(4, 4).astype(np.float64)
    probabilities = np.exp(log_softmax(flat @ w + b))
    delta = (probabilities - np.eye(3)[y]) / 4  # d(mean loss)/d(logits)
    with jax.default_matmul_precision("highest"):
        new_state, metrics = make_train_step(net, optimizer)(state, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(
        new_state.params["dense_1"]["kernel"], w - 0.5 * flat.T @ delta, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        new_state.params["dense_1"]["bias"], b - 0.5 * delta.sum(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(metrics["loss"], -log_softmax(flat @ w + b)[np.arange(4), y].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["top1"], np.mean(np.argmax(flat @ w + b, 1) == y))
    assert int(new_state.step) == 1


def test_the_step_donates_the_old_state_and_keeps_its_key():
    net, optimizer = linear_net(), make_optimizer("adam", 1e-2)
    state = init_train_state(net, optimizer, (-1, 2, 2, 1), jax.random.key(0))
    key_data = np.asarray(jax.random.key_data(state.key))
    new_state, _ = make_train_step(net, optimizer)(state, jnp.ones((2, 2, 2, 1)), jnp.array([0, 1]))
    assert state.params["dense_1"]["kernel"].is_deleted()  # the buffer was reused for the output
    np.testing.assert_array_equal(jax.random.key_data(new_state.key), key_data)


def test_steps_draw_dropout_from_the_step_number():
    """The same state at the same step gives the same update; another step number another one."""
    net = jc.serial(jc.Flatten, jc.Dropout(0.5), jc.Dense(3))
    optimizer = make_optimizer("sgd", 0.1)
    step = make_train_step(net, optimizer, donate=False)
    state = init_train_state(net, optimizer, (-1, 2, 2, 1), jax.random.key(0))
    x, y = jnp.asarray(RNG.normal(size=(8, 2, 2, 1)), jnp.float32), jnp.arange(8) % 3
    first, _ = step(state, x, y)
    again, _ = step(state, x, y)
    later, _ = step(state._replace(step=jnp.asarray(5, jnp.int32)), x, y)
    kernel = lambda s: np.asarray(s.params["dense_2"]["kernel"])  # noqa: E731
    np.testing.assert_array_equal(kernel(first), kernel(again))
    assert not np.array_equal(kernel(first), kernel(later))


def test_eval_step_sums_over_the_batch_and_preprocess_normalises():
    net = linear_net()
    _, params, state = net.init(jax.random.key(0), (-1, 2, 2, 1))
    images = RNG.integers(0, 256, (5, 2, 2, 1), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1], np.int32)
    preprocess = make_preprocess((0.5,), (0.25,))
    with jax.default_matmul_precision("highest"):
        metrics = make_eval_step(net, preprocess=preprocess)(
            params, state, jnp.asarray(images), jnp.asarray(labels)
        )
    x = (images.reshape(5, 4) / 255.0 - 0.5) / 0.25
    logits = x @ np.asarray(params["dense_1"]["kernel"], np.float64) + np.asarray(params["dense_1"]["bias"])
    np.testing.assert_allclose(metrics["loss"], -log_softmax(logits)[np.arange(5), labels].sum(), rtol=1e-5)
    np.testing.assert_array_equal(metrics["predictions"], logits.argmax(1))
    assert float(metrics["top1"]) == (logits.argmax(1) == labels).sum()
    assert float(metrics["top5"]) == 5  # three classes: every label is in the top 5


def test_train_state_is_a_named_tuple_pytree():
    state = init_train_state(linear_net(), optax.sgd(0.1), (-1, 2, 2, 1), jax.random.key(0))
    assert isinstance(state, TrainState) and state._fields == ("params", "state", "opt_state", "step", "key")
    assert state.step.dtype == jnp.int32 and int(state.step) == 0
