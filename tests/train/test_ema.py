"""The EMA of the weights (`with_ema`) against its NumPy definition (a bias-corrected weighted sum), and in `fit`; Lookahead
(`with_lookahead`) against a NumPy loop."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv as jc
from jaxconv.errors import ConfigError
from jaxconv.train import (
    ema_params,
    init_train_state,
    make_optimizer,
    make_train_step,
    with_ema,
    with_lookahead,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "runs"))
from synthetic import dataset, tiny_net


def test_the_average_follows_the_numpy_recurrence():
    decay, net = 0.8, jc.serial(jc.Flatten, jc.Dense(3))
    optimizer = with_ema(make_optimizer("sgd", 0.5, momentum=0.9, weight_decay=1e-2), decay)
    train_state = init_train_state(net, optimizer, (-1, 4, 4, 1), jax.random.key(0))
    step = make_train_step(net, optimizer, donate=False)
    rng = np.random.default_rng(0)
    steps = []  # the params after each step: the average is their weighted sum, bias corrected
    for t in range(1, 7):
        images = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
        train_state, _ = step(train_state, images, rng.integers(0, 3, 8))
        steps.append([np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(train_state.params)])
        if t == 1:  # the initial params weigh nothing: the average of one step is its params
            first = jax.tree_util.tree_leaves(ema_params(train_state.opt_state))
            for mine, reference in zip(first, steps[0], strict=True):
                np.testing.assert_allclose(np.asarray(mine), reference, rtol=1e-6)
    weights = [(1 - decay) * decay ** (len(steps) - k) for k in range(1, len(steps) + 1)]
    average = [
        sum(w * leaves[i] for w, leaves in zip(weights, steps, strict=True)) / (1 - decay ** len(steps))
        for i in range(len(steps[0]))
    ]
    kept = jax.tree_util.tree_leaves(ema_params(train_state.opt_state))
    for mine, reference in zip(kept, average, strict=True):
        np.testing.assert_allclose(np.asarray(mine), reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(kept[0], jax.tree_util.tree_leaves(train_state.params)[0])  # it lags
    assert ema_params(make_optimizer("sgd", 0.1).init(train_state.params)) is None


def test_fit_evaluates_the_average_beside_the_weights():
    train, test = dataset(64), dataset(40, "test", seed=1)
    config = jc.runs.TrainConfig(
        model="tiny", epochs=1, batch_size=16, lr=3e-2, eval_batch_size=40, ema_decay=0.5
    )
    result = jc.runs.fit(tiny_net(), train, test, config, progress=False)
    record, state = result.history[-1], result.train_state
    eval_step = jc.train.make_eval_step(
        tiny_net(), preprocess=jc.train.make_preprocess(train.mean, train.std)
    )
    averaged = jc.train.evaluate(eval_step, ema_params(state.opt_state), state.state, test, 40)
    assert (record["test_ema_top1"], record["test_ema_loss"]) == (averaged.top1, averaged.loss)
    assert record["test_ema_loss"] != record["test_loss"]
    with pytest.raises(ConfigError, match=r"ema_decay=1.0: must be in \[0, 1\)"):
        jc.runs.TrainConfig(ema_decay=1.0).validate()
    with pytest.raises(ConfigError, match=r"ema decay=-0.5: must be in \[0, 1\)"):
        with_ema(make_optimizer("sgd", 0.1), -0.5)


def test_lookahead_follows_the_numpy_reference():
    """Plain SGD on ||p - target||^2 / 2 (gradient p - target) with Lookahead(k=3, alpha=0.4)."""
    lr, k, alpha, target = 0.3, 3, 0.4, np.array([1.0, -2.0, 0.5])
    optimizer = with_lookahead(optax.sgd(lr), k, alpha)
    params = {"p": jnp.zeros(3)}
    state = optimizer.init(params)
    fast = slow = np.zeros(3)
    for step in range(1, 11):
        updates, state = optimizer.update({"p": params["p"] - target}, state, params)
        params = optax.apply_updates(params, updates)
        fast = fast - lr * (fast - target)
        if step % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow
        np.testing.assert_allclose(np.asarray(params["p"]), fast, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.slow["p"]), slow, rtol=1e-6)
    with pytest.raises(ConfigError, match=r"lookahead steps=0, alpha=0.5: use steps >= 1"):
        with_lookahead(optax.sgd(lr), 0)
