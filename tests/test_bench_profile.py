"""benchmarks/profile_steps.py's parts that decide the table: how overlapping thunks share time,
and how the HLO instructions of a train step are classed."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import optax
import pytest

import jaxconv as jc
import jaxconv.train as jt

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def profile_steps():
    sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "peers")]
    try:
        import profile_steps

        yield profile_steps
    finally:
        del sys.path[:2]


def test_overlapping_thunks_share_each_instant(profile_steps):
    spans = [(0, 10, "a"), (5, 15, "b"), (20, 30, "c")]  # a and b overlap for 5 ns
    assert profile_steps.shared_durations(spans) == pytest.approx([7.5e-9, 7.5e-9, 10e-9])


def test_a_train_step_has_each_convolution_direction_and_batchnorm(profile_steps):
    net = jc.serial(
        jc.Conv(4, 3, padding=1), jc.BatchNorm(), jc.Relu, jc.Conv(4, 3, padding=1), jc.GlobalAvgPool
    )
    optimizer = optax.sgd(0.1, momentum=0.9)
    state = jt.init_train_state(net, optimizer, (-1, 8, 8, 3), jax.random.key(0))
    images, labels = jax.numpy.ones((2, 8, 8, 3)), jax.numpy.zeros(2, jax.numpy.int32)
    hlo = jt.make_train_step(net, optimizer).lower(state, images, labels).compile().as_text()
    classes, _ = profile_steps.instruction_classes(hlo)
    found = set(classes.values())
    assert {"conv forward", "conv input grad", "conv weight grad", "normalisation"} <= found
    assert "pooling" not in found  # a global average pool is a plain reduction
    plain = jax.jit(lambda p, s, x: net.apply(p, s, x)[0]).lower(state.params, state.state, images)
    inference = set(profile_steps.instruction_classes(plain.compile().as_text())[0].values())
    assert "conv forward" in inference and not inference & {
        "conv input grad",
        "conv weight grad",
        "optimiser",
    }


def test_pooling_and_matrix_products_have_their_own_classes(profile_steps):
    net = jc.serial(jc.Conv(4, 3, padding=1), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(3))
    optimizer = optax.sgd(0.1)
    state = jt.init_train_state(net, optimizer, (-1, 8, 8, 1), jax.random.key(0))
    images, labels = jax.numpy.ones((2, 8, 8, 1)), jax.numpy.zeros(2, jax.numpy.int32)
    hlo = jt.make_train_step(net, optimizer).lower(state, images, labels).compile().as_text()
    found = set(profile_steps.instruction_classes(hlo)[0].values())
    assert {"pooling", "matrix products"} <= found
    assert profile_steps._rank("f32[128,14,2,14,2,32]{5,4,3,2,1,0}") == 6
    assert profile_steps._rank("f32[]") == 0
