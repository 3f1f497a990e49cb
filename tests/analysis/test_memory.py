"""The training-memory models read each layer's `jaxconv.traits.Traits`: layers that behave alike count
alike, and a hand-written layer is counted conservatively."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import pytest

import jaxconv as jc
from jaxconv import core
from jaxconv.analysis import summary
from jaxconv.analysis.accounting import HAND_WRITTEN

SHAPE = (-1, 32, 32, 3)


def conv_then(activation: jc.Layer) -> jc.Layer:
    return jc.serial(jc.Conv(8, 3, padding=1), activation)


def test_relu_keeps_its_stored_values_and_xla_bytes():
    s = summary(conv_then(jc.Relu), SHAPE)
    assert s.activations == 11_264  # the input and the conv's output; the ReLU runs in place
    assert s.memory(1, "xla").total == 112_384


@pytest.mark.parametrize("model", ["notes", "xla"])
def test_relu6_counts_as_relu(model):
    relu, relu6 = summary(conv_then(jc.Relu), SHAPE), summary(conv_then(jc.Relu6), SHAPE)
    anonymous = [dataclasses.replace(row, path="", kind="") for row in relu.rows]
    assert anonymous == [dataclasses.replace(row, path="", kind="") for row in relu6.rows]
    assert relu6.activations == relu.activations == 11_264
    assert relu6.memory(1, model) == relu.memory(1, model)


def square(describe: bool) -> jc.Layer:
    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return jnp.square(x), {}

    return core.layer("Square", init, apply, traits=None) if describe else jc.Layer(init, apply)


def test_a_layer_described_without_traits_is_counted_conservatively():
    s = summary(jc.serial(jc.Conv(8, 3, padding=1), square(describe=True), jc.Conv(4, 3)), SHAPE)
    conv, squared, after = s.rows[1:]
    assert squared.kind == "Square" and squared.stored and squared.macs == 0
    assert (
        squared.saved
        == HAND_WRITTEN.saved[0] * conv.activations + HAND_WRITTEN.saved[1] * squared.activations
    )
    assert squared.workspace == conv.activations + squared.activations  # not taken as elementwise
    assert squared.field is None and after.field is None  # nothing is known of its insides


def test_a_hand_written_layer_is_named_in_the_warnings():
    s = summary(jc.serial(jc.Conv(8, 3, padding=1), square(describe=False), jc.Conv(4, 3)), SHAPE)
    assert [row.kind for row in s.rows] == ["Input", "Conv", "Conv"]
    assert s.warnings == [
        "layer_1: a hand-written Layer(init, apply): its volumes and multiply-adds are not counted"
    ]
    assert s.rows[-1].field is None
    assert jc.receptive_field(jc.serial(jc.Conv(8, 3), square(describe=False)), SHAPE) is None
