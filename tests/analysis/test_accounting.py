"""`jc.summary` against the notes' VGG-16 table, published counts and XLA's own cost analysis."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxconv as jc
from jaxconv.analysis import summary

VGG16_STAGES = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def vgg16(num_classes: int = 1000) -> jc.Layer:
    layers = []
    for width, convs in VGG16_STAGES:
        layers += [jc.Conv(width, 3, padding=1), jc.Relu] * convs + [jc.MaxPool(2)]
    return jc.serial(
        *layers, jc.Flatten, jc.Dense(4096), jc.Relu, jc.Dense(4096), jc.Relu, jc.Dense(num_classes)
    )


# The notes' VGG-16 table, (volume, weights) per row, with the weights column corrected: the copy
# prints e.g. "(3*3*64)*64 = 368,640" where (3*3*64)*64 is 36,864 (wrong in 12 of the 13 conv rows).
VGG16_TABLE = [
    ((224, 224, 3), 0),
    ((224, 224, 64), 3 * 3 * 3 * 64),
    ((224, 224, 64), 3 * 3 * 64 * 64),
    ((112, 112, 64), 0),
    ((112, 112, 128), 3 * 3 * 64 * 128),
    ((112, 112, 128), 3 * 3 * 128 * 128),
    ((56, 56, 128), 0),
    ((56, 56, 256), 3 * 3 * 128 * 256),
    ((56, 56, 256), 3 * 3 * 256 * 256),
    ((56, 56, 256), 3 * 3 * 256 * 256),
    ((28, 28, 256), 0),
    ((28, 28, 512), 3 * 3 * 256 * 512),
    ((28, 28, 512), 3 * 3 * 512 * 512),
    ((28, 28, 512), 3 * 3 * 512 * 512),
    ((14, 14, 512), 0),
    ((14, 14, 512), 3 * 3 * 512 * 512),
    ((14, 14, 512), 3 * 3 * 512 * 512),
    ((14, 14, 512), 3 * 3 * 512 * 512),
    ((7, 7, 512), 0),
    ((4096,), 7 * 7 * 512 * 4096),
    ((4096,), 4096 * 4096),
    ((1000,), 4096 * 1000),
]


@pytest.fixture(scope="module")
def vgg_summary():
    return summary(vgg16(), (-1, 224, 224, 3))


def test_vgg16_layer_by_layer_matches_the_notes_table(vgg_summary):
    stored = [row for row in vgg_summary.rows if row.stored]  # the notes fold each ReLU into its CONV
    assert [row.output_shape for row in stored] == [volume for volume, _ in VGG16_TABLE]
    assert [row.activations for row in stored] == [
        h * w * c for (h, w, c) in (v if len(v) == 3 else (1, 1, v[0]) for v, _ in VGG16_TABLE)
    ]
    biases = [row.output_shape[-1] if row.params else 0 for row in stored]
    assert [row.params - bias for row, bias in zip(stored, biases, strict=True)] == [
        w for _, w in VGG16_TABLE
    ]
    assert stored[1].params - 64 == 1_728 and stored[2].params - 64 == 36_864  # printed: 368,640


def test_vgg16_totals_and_the_notes_misprinted_memory(vgg_summary):
    assert vgg_summary.params == 138_357_544
    # The notes print "TOTAL memory: 24M * 4 bytes ~= 93MB"; their own rows sum to 15.2M values, 61 MB.
    assert vgg_summary.activations == 15_237_608
    assert vgg_summary.activations * 4 == pytest.approx(61e6, rel=0.01)
    # 15.5 billion multiply-adds (Simonyan & Zisserman), exactly: sum of H*W*K * F*F*C_in plus the FCs
    convs = sum(v[0] * v[1] * v[2] * w // v[2] for v, w in VGG16_TABLE[:19] if w)
    assert vgg_summary.macs == convs + 102_760_448 + 16_777_216 + 4_096_000 == 15_470_264_320


def test_vgg16_fields_and_no_warnings(vgg_summary):
    pool5 = [row for row in vgg_summary.rows if row.kind == "MaxPool"][-1]
    assert (pool5.field, pool5.jump) == ((212, 212), (32, 32))
    assert vgg_summary.warnings == []


def test_alexnet_first_layer_with_and_without_parameter_sharing():
    shared = summary(jc.Conv(96, 11, stride=4), (-1, 227, 227, 3)).rows[1]
    assert (shared.output_shape, shared.activations, shared.params) == ((55, 55, 96), 290_400, 34_944)
    assert shared.im2col == 363 * 3025  # the notes' X_col of [363 x 3025]
    # 105,705,600 parameters are never allocated: the summary reads shapes only
    unshared = summary(jc.LocallyConnected(96, 11, stride=4), (-1, 227, 227, 3))
    assert unshared.params == 290_400 * 364 == 105_705_600


def test_googlenet_inception_3a_matches_szegedy_table_1():
    """Inception (3a) on 28x28x192: the paper's 159K params and 128M ops (K = 1024, M = 10^6)."""
    branches = jc.parallel(
        jc.Conv(64, 1, use_bias=False),
        jc.serial(jc.Conv(96, 1, use_bias=False), jc.Relu, jc.Conv(128, 3, padding=1, use_bias=False)),
        jc.serial(jc.Conv(16, 1, use_bias=False), jc.Relu, jc.Conv(32, 5, padding=2, use_bias=False)),
        jc.serial(jc.MaxPool(3, stride=1, padding=1), jc.Conv(32, 1, use_bias=False)),
    )
    module = jc.serial(jc.fan_out(4), branches, jc.fan_in_concat())
    s = summary(module, (-1, 28, 28, 192))
    assert s.output_shape == (-1, 28, 28, 256)
    assert s.params == 163_328 and s.params // 1024 == 159
    assert s.macs == 28 * 28 * 163_328 and round(s.macs / 1e6) == 128


def test_training_memory_of_the_notes_three_conv_example():
    """Three 3x3x64 convs on 224x224x3: "about 10 million activations, or 72MB ... (activations and gradients)"."""
    s = summary(jc.serial(*[jc.Conv(64, 3, padding=1), jc.Relu] * 3), (-1, 224, 224, 3))
    memory = s.memory(1)
    assert memory.activations == memory.activation_gradients == 3 * 224 * 224 * 64 * 4
    assert (memory.activations + memory.activation_gradients) / 2**20 == pytest.approx(73.5, abs=0.1)
    assert memory.input == 224 * 224 * 3 * 4
    assert s.memory(8).activations == 8 * memory.activations


@pytest.mark.parametrize(
    ("optimizer", "copies", "extra_bytes"),
    [(None, 0, 0), (optax.sgd(0.1), 0, 0), (optax.sgd(0.1, momentum=0.9), 1, 0), (optax.adam(1e-3), 2, 4)],
)
def test_parameter_memory_counts_the_optimizer_copies(optimizer, copies, extra_bytes):
    net = jc.serial(jc.Conv(8, 3), jc.Flatten, jc.Dense(10))
    s = summary(net, (-1, 12, 12, 3), optimizer=optimizer)
    params = (3 * 3 * 3 * 8 + 8) + (10 * 10 * 8 * 10 + 10)
    memory = s.memory(1)
    assert s.params == params
    assert (memory.params, memory.param_gradients) == (4 * params, 4 * params)
    assert memory.optimizer == 4 * params * copies + extra_bytes  # adam's step count is one int32


def test_dtype_sets_the_bytes_per_value():
    net = jc.serial(jc.Conv(8, 3), jc.BatchNorm())
    single, half = summary(net, (-1, 12, 12, 3)), summary(net, (-1, 12, 12, 3), dtype=jnp.bfloat16)
    assert half.dtype == "bfloat16" and 2 * half.memory(4).total == single.memory(4).total
    assert single.state == 16 and single.memory(1).state == 64  # BatchNorm's running mean and variance


def test_max_batch_fits_the_budget():
    s = summary(jc.serial(jc.Conv(8, 3), jc.Relu, jc.Flatten, jc.Dense(10)), (-1, 12, 12, 3))
    fixed, per_example = s.memory(0).total, s.memory(1).total - s.memory(0).total
    assert per_example == 4 * (12 * 12 * 3 + 2 * (10 * 10 * 8 + 10))
    assert s.max_batch(fixed + 5 * per_example - 1) == 4
    assert s.max_batch(fixed + 5 * per_example) == 5
    assert s.max_batch(fixed - 1) == 0
    assert summary(jc.Conv(8, 3), (-1, 12, 12, 3), budget_bytes=10**6).max_batch() > 0
    with pytest.raises(ValueError, match=r"max_batch needs a budget"):
        s.max_batch()


def test_rows_whose_sizes_do_not_fit_get_a_warning():
    s = summary(jc.serial(jc.Conv(4, 3, stride=2), jc.Conv(4, 2, stride=2)), (-1, 10, 10, 1))
    assert s.rows[1].warning == (
        "F=3, S=2, P=0 on W=10: (W - F + 2P)/S + 1 = 4.5 is not an integer; the last 1 rows/columns are never seen"
    )
    assert s.rows[2].warning is None  # F=2, S=2 on the W=4 left: (4 - 2)/2 + 1 = 2
    assert "!" in str(s)


def test_residual_sums_are_stored_and_views_are_not():
    net = jc.serial(
        jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.Relu)), jc.fan_out(2), jc.fan_in_concat()
    )
    rows = {row.path: row for row in summary(net, (-1, 8, 8, 4)).rows}
    assert rows["residual_0"].stored and rows["residual_0"].activations == 8 * 8 * 4
    assert not rows["residual_0/body/relu_1"].stored and not rows["fanout_1"].stored
    assert rows["fanout_1"].output_shape == ((8, 8, 4), (8, 8, 4))
    assert rows["faninconcat_2"].output_shape == (8, 8, 8) and rows["faninconcat_2"].stored


def test_prints_a_table_and_converts_to_json(vgg_summary):
    text = str(vgg_summary)
    assert "conv_0" in text and "224x224x64" in text and "138,357,544" in text and "212x212" in text
    data = json.loads(vgg_summary.to_json())
    assert data["params"] == 138_357_544 and len(data["rows"]) == len(vgg_summary.rows)
    assert data["rows"][1]["output_shape"] == [224, 224, 64]
    assert data["memory_per_batch_of_one"]["total"] == vgg_summary.memory(1).total


SMALL_NETS = {
    "lenet": (
        jc.serial(
            jc.Conv(6, 5),
            jc.Relu,
            jc.AvgPool(2),
            jc.Conv(16, 5),
            jc.Relu,
            jc.AvgPool(2),
            jc.Flatten,
            jc.Dense(120),
            jc.Relu,
            jc.Dense(84),
            jc.Relu,
            jc.Dense(10),
        ),
        (-1, 32, 32, 1),
    ),
    "strided_dilated": (
        jc.serial(
            jc.Conv(16, 7, stride=2, padding=3),
            jc.Conv(32, 3, dilation=2, padding=2),
            jc.GlobalAvgPool,
            jc.Dense(10),
        ),
        (-1, 128, 128, 3),
    ),
    "grouped": (
        jc.serial(jc.Conv(32, 3, padding=1), jc.Conv(64, 3, padding=1, groups=4), jc.Conv(64, 1)),
        (-1, 32, 32, 8),
    ),
    "branches": (
        jc.serial(
            jc.Conv(8, 3, padding=1),
            jc.fan_out(2),
            jc.parallel(jc.Conv(8, 1), jc.Conv(8, 5, padding=2)),
            jc.fan_in_concat(),
            jc.residual(jc.Conv(16, 3, padding=1)),
        ),
        (-1, 32, 32, 3),
    ),
    "transposed": (jc.serial(jc.ConvTranspose(8, 4, stride=2, padding=1), jc.Conv(8, 3)), (-1, 32, 32, 16)),
}


# (LocallyConnected is left out: XLA also counts the identity convolution that extracts its patches.)
@pytest.mark.parametrize("name", SMALL_NETS)
def test_multiply_adds_agree_with_xla_cost_analysis(name):
    net, shape = SMALL_NETS[name]
    params, state = jax.eval_shape(lambda key: net.init(key, shape)[1:], jax.random.key(0))  # abstract
    forward = jax.jit(lambda p, s, x: net.apply(p, s, x)[0])
    x = jax.ShapeDtypeStruct((1, *shape[1:]), jnp.float32)
    cost = forward.lower(params, state, x).compile().cost_analysis()
    # XLA counts a multiply and an add per MAC, skips taps on zero padding and adds the biases
    assert summary(net, shape).macs * 2 == pytest.approx(cost["flops"], rel=0.05)


def test_a_150_layer_net_at_224_is_summarised_from_shapes_in_seconds():
    net = jc.serial(
        jc.Conv(64, 7, stride=2, padding=3), *[jc.Conv(64, 3, padding=1), jc.BatchNorm(), jc.Relu] * 50
    )
    start = time.perf_counter()
    s = summary(net, (-1, 224, 224, 3))
    assert time.perf_counter() - start < 30
    assert len(s.rows) == 152 and s.params == 3 * 7 * 7 * 64 + 64 + 50 * (3 * 3 * 64 * 64 + 64 + 128)
