"""`fit` computes a fixed first layer (the scattering transform) once per image where training
changes no image: the weights equal those of computing it at every step, with and without DP-SGD."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.runs import TrainConfig, fit, fixed_front
from tests.runs.synthetic import dataset


def scattering_net() -> jc.Layer:
    """A fixed front, then a normalisation, Dropout (its keys must follow the child's place) and a
    classifier: (N, 28, 28, 1) -> (N, 14, 14, 5) -> (N, 10)."""
    return jc.serial(
        jc.Scattering(scales=1, angles=4), jc.GroupNorm(5), jc.Flatten, jc.Dropout(0.3), jc.Dense(10)
    )


BASE = {"epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": "sgd", "schedule": "constant"}
PRIVATE = BASE | {"dp_epsilon": 3.0, "dp_clip": 0.5, "ema_decay": 0.9, "label_smoothing": 0.0}


@pytest.mark.parametrize("options", [BASE, PRIVATE], ids=["plain", "dp_sgd"])
def test_once_gives_the_weights_and_records_of_every_step(options):
    train, test = dataset(48), dataset(24, "test", seed=1)
    config = TrainConfig(**options)
    each_step = fit(scattering_net(), train, test, config, progress=False, fixed_front_once=False)
    once = fit(scattering_net(), train, test, config, progress=False)
    assert jax.tree.structure(once.train_state.params) == jax.tree.structure(each_step.train_state.params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        once.train_state.params,
        each_step.train_state.params,
    )
    for first, second in zip(once.history, each_step.history, strict=True):
        assert first.keys() == second.keys()
        for key in {"train_loss", "test_loss", "test_top1", "epsilon", "test_ema_top1"} & second.keys():
            assert first[key] == pytest.approx(second[key], rel=1e-5), key


def test_the_front_is_computed_once_and_the_rest_keeps_the_names():
    net = scattering_net()
    train, test = dataset(20), dataset(10, "test", seed=1)
    rest, train_out, test_out = fixed_front.compute_once(net, train, test, TrainConfig())
    assert rest is not net and jc.info(jc.info(rest).children[0][1]).kind == "Identity"
    assert train_out.images.shape == (20, 14, 14, 5) and train_out.images.dtype == np.float32
    assert test_out.images.shape == (10, 14, 14, 5) and np.array_equal(test_out.labels, test.labels)
    full = net.init(jax.random.key(0), (-1, 28, 28, 1))[1]
    assert jax.tree.structure(rest.init(jax.random.key(0), (-1, 14, 14, 5))[1]) == jax.tree.structure(full)
    # the outputs are the front's on the normalised images
    expected, _ = jc.Scattering(scales=1, angles=4).apply(
        {}, {}, jc.data.normalize(test.images, test.mean, test.std)
    )
    np.testing.assert_allclose(test_out.images, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "change", [{"augment": "flip"}, {"augment": "crop=2"}, {"tta": "flip"}, {"mix": "mixup"}]
)
def test_training_that_changes_images_computes_the_front_at_every_step(change):
    net, train, test = scattering_net(), dataset(20), dataset(10, "test")
    assert fixed_front.compute_once(net, train, test, TrainConfig(**change))[0] is net


def test_a_net_without_a_fixed_front_or_too_large_outputs_is_left_alone(monkeypatch):
    train, test = dataset(20), dataset(10, "test")
    plain = jc.models.get("dp_cnn")
    assert fixed_front.split(plain) is None
    assert fixed_front.compute_once(plain, train, test, TrainConfig())[0] is plain
    assert fixed_front.split(jc.Scattering()) is None  # a bare layer: nothing after it to train
    monkeypatch.setattr(fixed_front, "MAX_BYTES", 30 * 14 * 14 * 5 * 4 - 1)
    net = scattering_net()
    assert fixed_front.compute_once(net, train, test, TrainConfig())[0] is net
    smaller = dataclasses.replace(test, images=test.images[:9], labels=test.labels[:9])
    assert fixed_front.compute_once(net, train, smaller, TrainConfig())[0] is not net
