"""Schedules against their formulas, optimisers against hand-written updates, weight decay's mask."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv.errors import ConfigError
from jaxconv.train import make_optimizer, make_schedule

TOTAL, PEAK = 100, 0.4


def values(schedule, steps) -> np.ndarray:
    return np.array([float(schedule(step)) for step in steps])


def test_cosine_with_warmup_follows_the_formula():
    schedule = make_schedule("cosine", PEAK, TOTAL, warmup_steps=10)
    steps = [0, 5, 10, 55, 100]
    expected = [0.0, PEAK * 0.5] + [
        PEAK * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90)) for s in (10, 55, 100)
    ]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-6, atol=1e-7)


def test_step_schedule_drops_tenfold_at_half_and_three_quarters():
    schedule = make_schedule("step", PEAK, TOTAL)
    np.testing.assert_allclose(
        values(schedule, [0, 49, 50, 74, 75, 99]), [0.4, 0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-6
    )
    warmed = make_schedule("step", PEAK, TOTAL, warmup_steps=20)  # drops at 20 + 40 and 20 + 60
    np.testing.assert_allclose(
        values(warmed, [0, 10, 20, 59, 60, 80]), [0, 0.2, 0.4, 0.4, 0.04, 0.004], rtol=1e-6
    )


def test_constant_schedule_with_warmup():
    schedule = make_schedule("constant", PEAK, TOTAL, warmup_steps=4)
    np.testing.assert_allclose(values(schedule, [0, 1, 4, 99]), [0.0, 0.1, 0.4, 0.4], rtol=1e-6)


def test_onecycle_rises_from_peak_over_25_to_peak_then_falls_to_peak_over_25e4():
    schedule = make_schedule("onecycle", PEAK, TOTAL)
    np.testing.assert_allclose(values(schedule, [0, 30, 100]), [PEAK / 25, PEAK, PEAK / 25e4], rtol=1e-5)
    assert np.all(np.diff(values(schedule, range(0, 31))) > 0)
    assert np.all(np.diff(values(schedule, range(30, 101))) < 0)
    np.testing.assert_allclose(
        float(make_schedule("onecycle", PEAK, TOTAL, warmup_steps=10)(10)), PEAK, rtol=1e-6
    )


def kernel_and_bias():
    return {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([3.0])}


def step_updates(optimizer, params, grads_list):
    state = optimizer.init(params)
    out = []
    for grads in grads_list:
        updates, state = optimizer.update(grads, state, params)
        out.append({k: np.asarray(v) for k, v in updates.items()})
    return out


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw"])
def test_weight_decay_reaches_kernels_but_not_biases(name):
    params = kernel_and_bias()
    zero = {k: jnp.zeros_like(v) for k, v in params.items()}
    (update,) = step_updates(make_optimizer(name, 0.1, weight_decay=0.5), params, [zero])
    np.testing.assert_array_equal(update["bias"], [0.0])
    # with zero gradients only the decay moves the kernel: -lr * wd * w for SGD (L2 term) and AdamW
    # (decoupled); Adam normalises the L2 term, m / sqrt(v) = sign(w)
    # (and Nesterov's first step looks ahead: (1 + momentum) times the gradient)
    kernel = np.array([[1.0, -2.0]])
    expected = {"adam": -0.1 * np.sign(kernel), "nesterov": -0.1 * 1.9 * 0.5 * kernel}.get(
        name, -0.1 * 0.5 * kernel
    )
    np.testing.assert_allclose(update["kernel"], expected, rtol=1e-4)


def test_sgd_and_nesterov_momentum_match_the_recurrences():
    params = {"w": jnp.array([0.0])}
    grads = [{"w": jnp.array([g])} for g in (1.0, 2.0, -1.0)]
    lr, beta = 0.1, 0.9
    velocity, heavy, nesterov = 0.0, [], []
    for g in (1.0, 2.0, -1.0):
        velocity = beta * velocity + g
        heavy.append(-lr * velocity)
        nesterov.append(-lr * (g + beta * velocity))
    got_heavy = [u["w"][0] for u in step_updates(make_optimizer("sgd", lr, momentum=beta), params, grads)]
    got_nesterov = [
        u["w"][0] for u in step_updates(make_optimizer("nesterov", lr, momentum=beta), params, grads)
    ]
    np.testing.assert_allclose(got_heavy, heavy, rtol=1e-6)
    np.testing.assert_allclose(got_nesterov, nesterov, rtol=1e-6)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown optimizer 'rmsprop'; valid optimizers: \('sgd', 'nesterov', 'adam', 'adamw'\)",
    ):
        make_optimizer("rmsprop", 0.1)
    with pytest.raises(ConfigError, match=r"unknown schedule 'linear'; valid schedules: .*'onecycle'"):
        make_schedule("linear", 0.1, 10)
