"""Receptive fields against published values and an independent measurement: the region of the
input on which the gradient of one output unit is non-zero. Weights are made positive so nothing
cancels; the measured nets pool by average or L2 norm, since a max pool passes the gradient to one
input only (all pools follow the same sliding rule)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv.analysis import Field, layer_fields, receptive_field
from jaxconv.core import trace


def measured_field(net: jc.Layer, size: int, channels: int = 2) -> tuple[int, int]:
    """Rows and columns of the input that the centre output unit depends on (all its channels)."""
    params, state = random_params(net, (-1, size, size, channels))
    params = jax.tree_util.tree_map(jnp.abs, params)  # positive weights: no cancellation
    x = jax.random.uniform(jax.random.key(1), (1, size, size, channels), minval=0.5, maxval=1.0)

    def centre(image):
        y, _ = net.apply(params, state, image)
        return y[0, y.shape[1] // 2, y.shape[2] // 2, :].sum()

    with jax.default_matmul_precision("highest"):
        seen = np.abs(np.asarray(jax.jit(jax.grad(centre))(x))).sum(axis=(0, 3)) > 0
    rows, cols = np.nonzero(seen.any(axis=1))[0], np.nonzero(seen.any(axis=0))[0]
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < size - 1, "the field touches the border"
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


SERIAL_LAYERS = [
    jc.Conv(3, 3, padding=1),
    jc.Relu,
    jc.Conv(3, 3, stride=2),
    jc.AvgPool(3, stride=2),
    jc.Conv(3, 3, dilation=2, padding=2),
    jc.LpPool(2),
    jc.Conv(3, (3, 5), padding=(1, 2)),
]


@pytest.mark.parametrize("depth", range(1, len(SERIAL_LAYERS) + 1))
def test_serial_prefixes_match_the_gradient_region(depth):
    net = jc.serial(*SERIAL_LAYERS[:depth])
    field = receptive_field(net, (-1, 96, 96, 2))
    assert field.size == measured_field(net, 96)


def test_every_layer_of_a_serial_net_gets_its_field_and_jump():
    net = jc.serial(*SERIAL_LAYERS)
    fields = layer_fields(net, trace(net, (-1, 96, 96, 2)), (-1, 96, 96, 2))
    by_layer = [fields[(name,)] for name, _ in jc.info(net).children]
    # hand-worked: field += (D*(F-1)) * jump, jump *= S
    assert by_layer == [
        Field((3, 3), (1, 1)),
        Field((3, 3), (1, 1)),
        Field((5, 5), (2, 2)),
        Field((9, 9), (4, 4)),
        Field((25, 25), (4, 4)),
        Field((29, 29), (8, 8)),
        Field((45, 61), (8, 8)),
    ]


def inception(width: int = 2) -> jc.Layer:
    """GoogLeNet-style branches of different fields, concatenated."""
    return jc.serial(
        jc.fan_out(4),
        jc.parallel(
            jc.Conv(width, 1),
            jc.serial(jc.Conv(width, 1), jc.Relu, jc.Conv(width, 3, padding=1)),
            jc.serial(jc.Conv(width, 1), jc.Conv(width, 5, padding=4, dilation=2)),
            jc.serial(jc.AvgPool(3, stride=1, padding=1), jc.Conv(width, 1)),
        ),
        jc.fan_in_concat(),
    )


BRANCHING = {
    "inception": (jc.serial(jc.Conv(2, 3, padding=1), inception()), 11),
    "residual": (
        jc.serial(jc.residual(jc.serial(jc.Conv(2, 3, padding=1), jc.Relu, jc.Conv(2, 3, padding=1)))),
        5,
    ),
    "residual_projection": (
        jc.serial(
            jc.Conv(2, 3, padding=1),
            jc.residual(jc.Conv(2, 3, stride=2, padding=1), shortcut=jc.Conv(2, 1, stride=2)),
            jc.Conv(2, 3, padding=1),
        ),
        9,
    ),
    "fan_in_sum": (
        jc.serial(
            jc.fan_out(2),
            jc.parallel(jc.Conv(2, 7, padding=3), jc.Conv(2, 3, padding=3, dilation=3)),
            jc.fan_in_sum,
            jc.AvgPool(2),
            jc.Conv(2, 3, padding=1),
        ),
        12,
    ),
}


@pytest.mark.parametrize("name", BRANCHING)
def test_branching_nets_take_the_widest_branch(name):
    net, expected = BRANCHING[name]
    field = receptive_field(net, (-1, 48, 48, 2))
    assert field.size == (expected, expected)
    assert field.size == measured_field(net, 48)


def test_three_stacked_3x3_convs_see_7x7_as_in_the_notes():
    net = jc.serial(*[jc.Conv(8, 3, padding=1), jc.Relu] * 3)
    assert receptive_field(net, (-1, 32, 32, 3)) == Field((7, 7), (1, 1))


def test_vgg16_and_alexnet_fields_match_published_values():
    # Araujo, Norris & Sim, "Computing receptive fields of CNNs" (Distill 2019): VGG-16 pool5 212,
    # AlexNet pool5 195.
    vgg = []
    for width, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        vgg += [jc.Conv(width, 3, padding=1), jc.Relu] * convs + [jc.MaxPool(2)]
    assert receptive_field(jc.serial(*vgg), (-1, 224, 224, 3)) == Field((212, 212), (32, 32))
    alexnet = jc.serial(
        jc.Conv(96, 11, stride=4),
        jc.MaxPool(3, 2),
        jc.Conv(256, 5, padding=2),
        jc.MaxPool(3, 2),
        jc.Conv(384, 3, padding=1),
        jc.Conv(384, 3, padding=1),
        jc.Conv(256, 3, padding=1),
        jc.MaxPool(3, 2),
    )
    assert receptive_field(alexnet, (-1, 227, 227, 3)) == Field((195, 195), (32, 32))


def test_flatten_and_global_pools_see_the_whole_volume():
    net = jc.serial(jc.Conv(4, 3), jc.MaxPool(2), jc.GlobalAvgPool, jc.Dense(3))
    # after the pool: field 4, jump 2 on a 7x7 map, so the whole map spans 4 + 6*2 = 16
    assert receptive_field(net, (-1, 16, 16, 1)) == Field((16, 16), None)


def test_layers_of_unknown_geometry_give_none():
    net = jc.serial(jc.ConvTranspose(4, 3, stride=2), jc.Conv(4, 3))
    assert receptive_field(net, (-1, 16, 16, 1)) is None
