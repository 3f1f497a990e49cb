"""`jc.summary` on the model zoo: published multiply-add and parameter tables, and XLA's own accounting.

Multiply-adds follow the papers' convention (every kernel tap, biases not counted); G = 10^9,
M = 10^6 and, for GoogLeNet's parameter column, K = 1024.
"""

from __future__ import annotations

import collections
import math

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxconv as jc
from jaxconv import models
from jaxconv.analysis import summary


def zoo_summary(name: str, **options) -> jc.Summary:
    return summary(models.get(name, **options), models.input_shape(name))


# --- ResNet: He et al. 2016, Table 1's FLOPs row, and torchvision's v1.5 --------------------------

# name -> (exact multiply-adds, the figure to which they round). The paper prints 1.8, 3.6, 3.8, 7.6
# and 11.3 billion: 3.66 and 3.86 are truncated to 3.6 and 3.8, not rounded, so the published row
# is approximate; the exact values at two decimals are 1.81/3.66/3.86/7.57/11.28. The paper's v1
# strides the first 1x1 of a bottleneck; torchvision's v1.5 strides the 3x3, which then runs at the
# larger resolution: 4.09/7.80/11.51 G for 50/101/152 with the same parameters.
RESNET_MACS = {
    "resnet18": (1_814_073_344, 1.81),
    "resnet34": (3_663_761_408, 3.66),
    "resnet50": (3_857_973_248, 3.86),
    "resnet101": (7_570_194_432, 7.57),
    "resnet152": (11_282_415_616, 11.28),
    "resnet50_tv": (4_089_184_256, 4.09),
    "resnet101_tv": (7_801_405_440, 7.80),
    "resnet152_tv": (11_513_626_624, 11.51),
}
HE_ET_AL_PRINTED = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


def bottleneck_macs(depths: tuple[int, ...], stride_on_3x3: bool) -> int:
    """An independent count of a bottleneck ResNet at 224: stem, blocks, projections, FC."""
    total = 112 * 112 * 7 * 7 * 3 * 64 + 2048 * 1000
    channels, size = 64, 56
    for stage, (blocks, width) in enumerate(zip(depths, (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            out_size = size // 2 if stage and not block else size
            first_size = size if stride_on_3x3 else out_size  # the 1x1 runs before or after the stride
            total += first_size**2 * channels * width + out_size**2 * (9 * width * width + width * 4 * width)
            if not block:
                total += out_size**2 * channels * 4 * width  # the projection shortcut
            channels, size = 4 * width, out_size
    return total


@pytest.mark.parametrize("name", RESNET_MACS)
def test_resnet_multiply_adds(name):
    exact, figure = RESNET_MACS[name]
    s = zoo_summary(name)
    assert s.macs == exact
    assert round(exact / 1e9, 2) == figure
    if name in HE_ET_AL_PRINTED:  # the paper's one-decimal row is within 0.06 G of the exact count
        assert abs(exact / 1e9 - HE_ET_AL_PRINTED[name]) < 0.07


@pytest.mark.parametrize(("depths", "name"), [((3, 4, 6, 3), "resnet50"), ((3, 8, 36, 3), "resnet152")])
def test_bottleneck_multiply_adds_match_an_independent_count(depths, name):
    assert RESNET_MACS[name][0] == bottleneck_macs(depths, stride_on_3x3=False)
    assert RESNET_MACS[f"{name}_tv"][0] == bottleneck_macs(depths, stride_on_3x3=True)


def test_resnet34_with_zero_padded_shortcuts():
    """He et al.'s option A (identity shortcuts, new channels zero-padded): no projection convs."""
    s = zoo_summary("resnet34", shortcut="A")
    # the three 1x1 projections of ResNet-34 (option B): out size^2 * C_in * C_out at stages 2-4
    projections = sum((56 // 2**stage) ** 2 * 32 * 2**stage * 64 * 2**stage for stage in (1, 2, 3))
    assert s.macs == RESNET_MACS["resnet34"][0] - projections == 3_644_493_824
    assert round(s.macs / 1e9, 2) == 3.64


# --- GoogLeNet: Szegedy et al. 2015, Table 1 ------------------------------------------------------

# The paper's rows: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), input (size, channels),
# and its printed params (K) and ops (M).
GOOGLENET_TABLE = {
    "inception3a": ((64, 96, 128, 16, 32, 32), (28, 192), 159, 128),
    "inception3b": ((128, 128, 192, 32, 96, 64), (28, 256), 380, 304),
    "inception4a": ((192, 96, 208, 16, 48, 64), (14, 480), 364, 73),
    "inception4b": ((160, 112, 224, 24, 64, 64), (14, 512), 437, 88),
    "inception4c": ((128, 128, 256, 24, 64, 64), (14, 512), 463, 100),
    "inception4d": ((112, 144, 288, 32, 64, 64), (14, 512), 580, 119),
    "inception4e": ((256, 160, 320, 32, 128, 128), (14, 528), 840, 170),
    "inception5a": ((256, 160, 320, 32, 128, 128), (7, 832), 1072, 54),
    "inception5b": ((384, 192, 384, 48, 128, 128), (7, 832), 1388, 71),
}
# The module's exact weights (biases left out) and multiply-adds.
GOOGLENET_EXACT = {
    "stem/conv1": (9_408, 118_013_952),  # printed 2.7K and 34M: no counting convention gives them
    "stem/conv2+conv3": (114_688, 359_661_568),  # the paper's "convolution 3x3/1, depth 2" row
    "inception3a": (163_328, 128_049_152),
    "inception3b": (388_096, 304_267_264),
    "inception4a": (375_552, 73_608_192),
    "inception4b": (448_512, 87_908_352),
    "inception4c": (509_440, 99_850_240),
    "inception4d": (604_672, 118_515_712),
    "inception4e": (867_328, 169_996_288),
    "inception5a": (1_042_432, 51_079_168),
    "inception5b": (1_442_816, 70_697_984),
    "head": (1_024_000, 1_024_000),  # the "linear" row
}
PRINTED = {"stem/conv1": (2.7, 34), "stem/conv2+conv3": (112, 360), "head": (1000, 1)} | {
    name: (params, ops) for name, (_, _, params, ops) in GOOGLENET_TABLE.items()
}


def inception_weights(row: tuple[int, ...], channels: int) -> int:
    ones, reduce3, threes, reduce5, fives, pool = row
    return channels * (ones + reduce3 + reduce5 + pool) + 9 * reduce3 * threes + 25 * reduce5 * fives


@pytest.fixture(scope="module")
def googlenet_modules() -> dict[str, tuple[int, int, int]]:
    """(weights, weights + biases, multiply-adds) of each GoogLeNet module, from the summary's rows."""
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for row in zoo_summary("googlenet").rows:
        module = row.path.split("/")[0]
        if module == "stem":
            module = "stem/conv1" if row.path.startswith("stem/conv1") else "stem/conv2+conv3"
        biases = row.output_shape[-1] if row.kind in ("Conv", "Dense") else 0
        totals[module][0] += row.params - biases
        totals[module][1] += row.params
        totals[module][2] += row.macs
    return {name: tuple(values) for name, values in totals.items()}


@pytest.mark.parametrize("name", GOOGLENET_EXACT)
def test_googlenet_modules_exact(googlenet_modules, name):
    weights, _, macs = googlenet_modules[name]
    assert (weights, macs) == GOOGLENET_EXACT[name]
    if name in GOOGLENET_TABLE:  # independently from the paper's columns
        row, (size, channels), _, _ = GOOGLENET_TABLE[name]
        assert weights == inception_weights(row, channels) and macs == size * size * weights


def matches_printed(value: float, printed: float) -> bool:
    """Whether rounding ``value`` down, to nearest or up, at the printed precision, gives ``printed``."""
    step = 0.1 if printed != int(printed) else 1
    return printed in {round(f(value / step) * step, 1) for f in (math.floor, round, math.ceil)}


def test_googlenet_table_matches_for_3a_3b_conv2_and_linear_only(googlenet_modules):
    """Params are printed in K = 1024 (with or without biases), ops in M = 10^6. The paper's params
    column agrees for conv2, 3a, 3b and linear, not for 4a-5b or the first conv; its ops column
    agrees everywhere but for the first conv (34M for 118M) and 5a (54M for 51.08M)."""
    params_match = {
        name
        for name, (weights, with_biases, _) in googlenet_modules.items()
        if name in PRINTED
        and any(matches_printed(v / 1024, PRINTED[name][0]) for v in (weights, with_biases))
    }
    ops_match = {
        name
        for name, (_, _, macs) in googlenet_modules.items()
        if name in PRINTED and matches_printed(macs / 1e6, PRINTED[name][1])
    }
    assert params_match == {"stem/conv2+conv3", "inception3a", "inception3b", "head"}
    assert set(PRINTED) - ops_match == {"stem/conv1", "inception5a"}


def test_alexnet_first_layer_from_the_zoo():
    conv1 = next(row for row in zoo_summary("alexnet").rows if row.kind == "Conv")
    assert (conv1.output_shape, conv1.activations, conv1.params) == ((55, 55, 96), 290_400, 34_944)
    assert conv1.activations * (11 * 11 * 3 + 1) == 105_705_600  # the notes' count without sharing


# --- multiply-adds against XLA's cost analysis -------------------------------------------------------


def xla_multiply_adds(net: jc.Layer, input_shape: tuple[int, ...]) -> float:
    params, state = jax.eval_shape(lambda key: net.init(key, input_shape)[1:], jax.random.key(0))
    forward = jax.jit(lambda p, s, x: net.apply(p, s, x)[0])
    x = jax.ShapeDtypeStruct((1, *input_shape[1:]), jnp.float32)
    return forward.lower(params, state, x).compile().cost_analysis()["flops"] / 2


# XLA counts a convolution's taps on the input only, not on its zero padding (`valid_macs`), and
# adds the elementwise work. (mobilenet_v2 is left out: its depthwise convolutions do so little
# that the ReLU6s and BatchNorms add 5.3%.)
@pytest.mark.parametrize(
    "name",
    [
        "lenet5",
        "alexnet_tv",
        "squeezenet1_1",
        "resnet18",
        "googlenet",
        pytest.param("vgg11", marks=pytest.mark.slow),
        pytest.param("resnet50", marks=pytest.mark.slow),
        pytest.param("densenet121", marks=pytest.mark.slow),
    ],
)
def test_multiply_adds_agree_with_xla_on_zoo_models(name):
    net, shape = models.get(name), models.input_shape(name)
    s = summary(net, shape)
    xla = xla_multiply_adds(net, shape)
    assert s.valid_macs == pytest.approx(xla, rel=0.05)
    assert s.valid_macs <= s.macs  # the papers' count includes the padding taps


def test_valid_multiply_adds_leave_out_the_padding_taps():
    """3x3, P=1 on 4x4: per axis the taps inside are 3 + 3 + 3 + 3 - 2 (one at each border) = 10."""
    s = summary(jc.Conv(5, 3, padding=1), (-1, 4, 4, 2))
    assert s.macs == 16 * 9 * 2 * 5 and s.valid_macs == 10 * 10 * 2 * 5
    strided = summary(jc.Conv(1, 3, stride=2, padding=1), (-1, 5, 1, 1))  # outputs at -1..1, 1..3, 3..5
    assert strided.valid_macs == (2 + 3 + 2) * 1  # the single column sees only its centre tap


# --- training memory against XLA's memory analysis ----------------------------------------------------


def xla_train_step_bytes(net, input_shape, batch_size, optimizer) -> int:
    params, state = jax.eval_shape(lambda key: net.init(key, input_shape)[1:], jax.random.key(0))
    opt_state = jax.eval_shape(optimizer.init, params)

    def step(params, opt_state, state, x, labels):
        def loss(params):
            logits, new_state = net.apply(params, state, x, key=jax.random.key(0), train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_state

        (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, new_state

    x = jax.ShapeDtypeStruct((batch_size, *input_shape[1:]), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    step = jax.jit(step, donate_argnums=(0, 1, 2))
    memory = step.lower(params, opt_state, state, x, labels).compile().memory_analysis()
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )


MEMORY_NETS = {
    "lenet5": lambda: (models.get("lenet5"), models.input_shape("lenet5")),
    "vgg_style": lambda: (
        jc.pattern("INPUT -> [[CONV -> RELU]*2 -> POOL]*3 -> [FC -> RELU]*2 -> FC", widths=16, fc_widths=64),
        (-1, 32, 32, 3),
    ),
    "resnet20": lambda: (models.get("resnet20"), models.input_shape("resnet20")),
    "resnet20_group_norm": lambda: (models.get("resnet20", norm="group"), models.input_shape("resnet20")),
    "all_cnn_c": lambda: (models.get("all_cnn_c"), models.input_shape("all_cnn_c")),
}


@pytest.mark.parametrize("name", MEMORY_NETS)
def test_training_memory_agrees_with_xla(name):
    net, shape = MEMORY_NETS[name]()
    optimizer = optax.sgd(0.1, momentum=0.9)
    s = summary(net, shape, optimizer=optimizer)
    assert s.memory(16, model="xla").total == pytest.approx(
        xla_train_step_bytes(net, shape, 16, optimizer), rel=0.25
    )


def test_memory_models_share_the_fixed_part_and_reject_unknown_names():
    s = summary(jc.serial(jc.Conv(8, 3), jc.Relu, jc.Flatten, jc.Dense(10)), (-1, 12, 12, 3))
    notes, xla = s.memory(4), s.memory(4, model="xla")
    assert (notes.params, notes.param_gradients, notes.input) == (xla.params, xla.param_gradients, xla.input)
    # 'xla': the conv's output (pre-activation) and the ReLU's, the Dense's output; its peak is the
    # Dense step beside everything saved: in 800 + out 10 (the ReLU's one volume is fused).
    assert xla.activations == 4 * 4 * (800 + 800 + 10)
    assert xla.activation_gradients == 4 * 4 * (800 + 10)
    with pytest.raises(ValueError, match=r"memory\(model='gpu'\): use 'notes' or 'xla'"):
        s.memory(1, model="gpu")
    assert s.max_batch(10**6, model="xla") < s.max_batch(10**6)  # XLA keeps the ReLU's output too
