"""DP-SGD training (`jaxconv.runs.private`, ``jaxconv train --dp-epsilon``): the plan meets its
epsilon, a step equals a NumPy DP-SGD step of loop-computed gradients, the batches are Poisson
samples, BatchNorm nets are refused, and `fit` trains privately and reports epsilon."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from synthetic import dataset, write_idx_dataset

import jaxconv as jc
from jaxconv.cli import main
from jaxconv.errors import ConfigError
from jaxconv.models.small import convnet, dp_cnn
from jaxconv.privacy import epsilon
from jaxconv.runs import TrainConfig, fit
from jaxconv.runs.private import (
    PrivacyPlan,
    check_private,
    make_private_train_step,
    privacy_plan,
    private_batches,
)
from jaxconv.train import count_params, init_train_state


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("data"))


PRIVATE = TrainConfig(
    model="dp_cnn", epochs=2, batch_size=16, lr=0.5, optimizer="sgd", schedule="constant",
    weight_decay=0.0, label_smoothing=0.0, dp_epsilon=3.0, dp_clip=0.5, eval_batch_size=40,
)  # fmt: skip


def test_dp_cnn_has_the_papers_26010_parameters(key):
    _, params, _ = dp_cnn().init(key, (-1, 28, 28, 1))
    assert count_params(params) == 26_010  # Papernot et al. 2021, Table 1 (MNIST/Fashion-MNIST)


def test_the_plan_spends_at_most_the_target_epsilon_and_nearly_all_of_it():
    plan = privacy_plan(TrainConfig(dp_epsilon=3.0, batch_size=256, epochs=5), num_examples=60_000)
    assert plan.steps == 5 * (60_000 // 256) and plan.sampling_rate == 256 / 60_000
    spent = epsilon(plan.sampling_rate, plan.noise_multiplier, plan.steps, 1e-5)
    assert 2.97 <= spent <= 3.0
    assert plan.epsilon() == pytest.approx(spent) and plan.epsilon(0) == 0.0
    assert plan.max_batch_size == int(np.ceil(256 + 6 * np.sqrt(256 * (1 - 256 / 60_000)))) + 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dp_epsilon": 0.0}, "dp_epsilon=0.0: must be positive"),
        ({"dp_delta": 1.0}, r"dp_delta=1.0: must be in \(0, 1\)"),
        ({"dp_clip": -1.0}, "dp_clip=-1.0: the clip norm must be positive"),
        ({"devices": 2, "batch_size": 16}, "DP-SGD training runs on one device"),
        ({"augmult": 0}, "augmult=0: the copies of each example, at least 1"),
        ({"physical_batch_size": 0}, "physical_batch_size=0: the examples computed at once"),
        (
            {"dp_epsilon": None, "augmult": 4},
            r"augmult \(--augmult\) applies to DP-SGD only: add --dp-epsilon",
        ),
        (
            {"dp_epsilon": None, "physical_batch_size": 8},
            r"physical_batch_size \(--physical-batch-size\) applies",
        ),
    ],
)
def test_bad_privacy_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(PRIVATE, **change).validate()


def test_batchnorm_nets_are_refused_with_the_fix():
    check_private(dp_cnn(), "dp_cnn")
    with pytest.raises(ConfigError, match=r"'convnet' has BatchNorm.*--model dp_cnn.*norm='group'"):
        check_private(convnet(), "convnet")
    nested = jc.serial(jc.Conv(4, 3), jc.residual(jc.serial(jc.BatchNorm(), jc.Relu)))
    with pytest.raises(ConfigError, match="has BatchNorm"):
        check_private(nested, "custom")


def test_a_private_step_is_the_numpy_dp_sgd_step_of_loop_gradients(key):
    """Noise off (multiplier 0): the update is -lr * sum_i clip(g_i) / (q N) over the real rows,
    with g_i from one `jax.grad` per example and the clipping done in NumPy."""
    net = jc.serial(jc.Conv(3, 3), jc.Tanh, jc.Flatten, jc.Dense(4))
    images = jax.random.uniform(key, (6, 6, 6, 1))
    labels = jnp.array([0, 1, 2, 3, 1, 2])
    mask = jnp.array([True, True, False, True, True, False])
    plan = PrivacyPlan(
        sampling_rate=0.5, steps=1, noise_multiplier=0.0, l2_norm_clip=0.3, delta=1e-5, num_examples=8
    )
    optimizer = optax.sgd(0.1)
    state0 = init_train_state(net, optimizer, (-1, 6, 6, 1), key)
    step = make_private_train_step(net, optimizer, plan, donate=False)
    new_state, metrics = step(state0, images, labels, mask)

    def loss(params, x, y):
        logits, _ = net.apply(params, {}, x[None], train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[None]).mean()

    total = jax.tree.map(np.zeros_like, state0.params)
    for i in np.flatnonzero(np.asarray(mask)):
        grads = jax.tree.map(np.asarray, jax.grad(loss)(state0.params, images[i], labels[i]))
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in jax.tree.leaves(grads)))
        total = jax.tree.map(lambda t, g, n=norm: t + g * min(1.0, 0.3 / n), total, grads)
    expected = jax.tree.map(lambda p, t: np.asarray(p) - 0.1 * t / 4.0, state0.params, total)
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    assert new_state.step == 1 and 0 <= float(metrics["top1"]) <= 1


@pytest.mark.parametrize("augmult, physical", [(1, 2), (3, 4), (2, None)])
def test_chunks_and_identical_copies_give_the_one_shot_step(key, augmult, physical):
    """Without augmentation the K copies of an example are equal, so their mean gradient is the
    example's; chunks of a padded batch add up to the whole: the step equals the plain one."""
    net = jc.serial(jc.Conv(3, 3), jc.Tanh, jc.Flatten, jc.Dense(4))
    images = jax.random.uniform(key, (8, 6, 6, 1))
    labels, mask = jnp.array([0, 1, 2, 3, 1, 2, 0, 0]), jnp.arange(8) < 5
    plan = PrivacyPlan(0.5, 1, noise_multiplier=0.0, l2_norm_clip=0.3, delta=1e-5, num_examples=8)
    optimizer = optax.sgd(0.1)
    state0 = init_train_state(net, optimizer, (-1, 6, 6, 1), key)
    plain, plain_metrics = make_private_train_step(net, optimizer, plan, donate=False)(
        state0, images, labels, mask
    )
    other_plan = dataclasses.replace(plan, augmult=augmult, physical_batch_size=physical)
    step = make_private_train_step(net, optimizer, other_plan, donate=False)
    other, metrics = step(state0, images, labels, mask)
    for got, want in zip(jax.tree.leaves(other.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(plain_metrics["loss"]), rel=1e-5)


def test_the_padded_batch_holds_whole_chunks():
    plan = PrivacyPlan(256 / 60_000, 1, 1.0, 1.0, 1e-5, 60_000, augmult=4, physical_batch_size=64)
    assert (
        plan.max_batch_size % 64 == 0
        and plan.max_batch_size >= PrivacyPlan(256 / 60_000, 1, 1.0, 1.0, 1e-5, 60_000).max_batch_size
    )


def test_the_noise_has_the_planned_spread(key):
    """With zero gradients (a constant net) the update is pure noise: std sigma * C / (q N)."""
    net = jc.serial(
        jc.Flatten, jc.Dense(50, kernel_init=jax.nn.initializers.zeros), jc.Lambda(lambda x: 0 * x)
    )
    plan = PrivacyPlan(0.25, 1, noise_multiplier=2.0, l2_norm_clip=0.5, delta=1e-5, num_examples=40)
    optimizer = optax.sgd(1.0)
    state0 = init_train_state(net, optimizer, (-1, 4, 4, 1), key)
    step = make_private_train_step(net, optimizer, plan, donate=False)
    new_state, _ = step(state0, jnp.ones((3, 4, 4, 1)), jnp.zeros(3, int), jnp.ones(3, bool))
    noise = np.asarray(new_state.params["dense_1"]["kernel"])
    assert np.std(noise) == pytest.approx(2.0 * 0.5 / 10.0, rel=0.05)


def test_private_batches_are_padded_poisson_samples(key):
    data = dataset(200)
    plan = PrivacyPlan(0.1, 10, 1.0, 1.0, 1e-5, num_examples=200)
    epoch = list(private_batches(data, plan, key, epoch=0))
    assert len(epoch) == 200 // 20
    sizes = []
    for images, labels, mask in epoch:
        assert images.shape == (plan.max_batch_size, 28, 28, 1) and labels.shape == mask.shape
        assert images.dtype == jnp.uint8 and mask.dtype == jnp.bool_
        sizes.append(int(mask.sum()))
        assert np.all(np.asarray(mask)[: sizes[-1]]) and not np.any(np.asarray(mask)[sizes[-1] :])
    assert 10 <= np.mean(sizes) <= 30  # expected 20 (std 4.2 per batch)
    again = list(private_batches(data, plan, key, epoch=0))
    other = list(private_batches(data, plan, key, epoch=1))
    np.testing.assert_array_equal(np.asarray(epoch[0][1]), np.asarray(again[0][1]))
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(epoch, other, strict=True))


def test_fit_trains_privately_and_records_the_epsilon_spent(key):
    result = fit(dp_cnn(), dataset(96), dataset(40, "test", seed=1), PRIVATE, progress=False)
    assert result.privacy is not None and result.privacy.steps == 2 * (96 // 16)
    assert [record["epoch"] for record in result.history] == [1, 2]
    spent = [record["epsilon"] for record in result.history]
    assert 0 < spent[0] < spent[1] <= 3.0
    assert np.isfinite(result.history[-1]["train_loss"])


def test_the_command_refuses_a_batchnorm_model_before_writing(capsys, tmp_path, data_dir):
    run_dir = tmp_path / "run"
    status = main(
        [
            "train",
            "--dp-epsilon",
            "3",
            "--batch-size",
            "16",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(run_dir),
        ]
    )
    assert status == 2
    assert "has BatchNorm" in capsys.readouterr().err
    assert not (run_dir / "config.json").exists()


def test_the_command_trains_privately_and_prints_the_guarantee(capsys, tmp_path, data_dir):
    argv = [
        "train", "--model", "dp_cnn", "--dp-epsilon", "3", "--epochs", "1", "--batch-size", "16",
        "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run"), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "-DP by DP-SGD, noise multiplier" in out
