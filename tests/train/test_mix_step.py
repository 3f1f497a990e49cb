"""The train step with Mixup: its loss is the lam-weighted pair of label-smoothed cross-entropies,
computed here by hand from the same draws."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import jaxconv as jc
from jaxconv.data import parse_mix


def test_the_step_loss_is_the_lam_weighted_pair_of_losses():
    net = jc.serial(jc.Flatten, jc.Dense(3))
    images = np.random.default_rng(1).integers(0, 255, (6, 8, 10, 2)).astype(np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    optimizer = optax.sgd(0.1)
    state = jc.train.init_train_state(net, optimizer, (-1, 8, 10, 2), jax.random.key(0))
    mix = parse_mix("mixup=0.5")
    step = jc.train.make_train_step(net, optimizer, mix=mix, label_smoothing=0.1, donate=False)
    _, metrics = step(state, images, labels)
    x, partner, lam = mix(jax.random.fold_in(jc.train.step_key(state), 2), images)
    logits, _ = net.apply(state.params, state.state, x)
    probabilities = np.asarray(jax.nn.log_softmax(logits), np.float64)

    def smoothed(targets):  # cross-entropy with label smoothing 0.1, by hand
        one_hot = np.eye(3)[targets] * 0.9 + 0.1 / 3
        return -(one_hot * probabilities).sum(-1).mean()

    expected = float(lam) * smoothed(labels) + (1 - float(lam)) * smoothed(labels[np.asarray(partner)])
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
