"""`jaxconv.analysis.surgery`: FC -> CONV conversion, against evaluating the original net crop by crop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv.analysis import surgery
from jaxconv.core import trace


def unpadded_net() -> jc.Layer:
    """22x22 -> 20 -> 10 -> 8 -> 4x4x8, every size fits; total stride 4."""
    return jc.serial(
        jc.named(
            "features",
            jc.serial(jc.Conv(4, 3), jc.Relu, jc.MaxPool(2), jc.Conv(8, 3), jc.Relu, jc.MaxPool(2)),
        ),
        jc.named("classifier", jc.serial(jc.Flatten, jc.Dense(16), jc.Relu, jc.Dropout(0.5), jc.Dense(5))),
    )


def padded_net() -> jc.Layer:
    return jc.serial(
        jc.Conv(4, 3, padding=1),
        jc.Relu,
        jc.MaxPool(2),
        jc.Conv(8, 3, padding=1),
        jc.Relu,
        jc.MaxPool(2),
        jc.Flatten,
        jc.Dense(16),
        jc.Relu,
        jc.Dense(5),
    )


def relative_difference(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_same_scores_on_the_original_size_with_the_same_keys():
    net = unpadded_net()
    params, state = random_params(net, (-1, 22, 22, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 22, 22, 3))
    assert jax.tree_util.tree_structure(conv_params) == jax.tree_util.tree_structure(params)
    assert conv_params["classifier"]["dense_1"]["kernel"].shape == (4, 4, 8, 16)
    assert conv_params["classifier"]["dense_4"]["kernel"].shape == (1, 1, 16, 5)
    x = jax.random.normal(jax.random.key(1), (2, 22, 22, 3))
    with jax.default_matmul_precision("highest"):
        expected, _ = net.apply(params, state, x)
        scores, _ = conv_net.apply(conv_params, state, x)
    assert scores.shape == (2, 1, 1, 5)
    np.testing.assert_allclose(scores[:, 0, 0], expected, rtol=1e-5, atol=1e-6)


def test_score_map_equals_every_crop_at_the_total_stride_without_padding():
    net = unpadded_net()
    params, state = random_params(net, (-1, 22, 22, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 22, 22, 3))
    images = jax.random.normal(jax.random.key(2), (2, 34, 38, 3))
    assert surgery.total_stride(conv_net, (-1, 34, 38, 3)) == (4, 4)
    crops_at = jax.jit(
        lambda x, stride: surgery.crop_scores(net, params, state, x, (22, 22), stride), static_argnums=1
    )
    map_at = jax.jit(
        lambda x, stride: surgery.sliding_scores(conv_net, conv_params, state, x, stride), static_argnums=1
    )
    with jax.default_matmul_precision("highest"):
        crops, scores = crops_at(images, 4), map_at(images, None)
        half_crops, half_scores = crops_at(images, 2), map_at(images, 2)
    assert scores.shape == crops.shape == (2, 4, 5, 5)
    assert relative_difference(scores, crops) < 1e-5
    # half the stride: four forward passes over the image shifted by 0 or 2 pixels, interleaved
    assert half_scores.shape == half_crops.shape == (2, 7, 9, 5)
    assert relative_difference(half_scores, half_crops) < 1e-5


def test_with_zero_padding_the_map_only_approximates_the_crops():
    """Inside a crop the padded convolutions see zeros where the converted net sees neighbours."""
    net = padded_net()
    params, state = random_params(net, (-1, 16, 16, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 16, 16, 3))
    images = jax.random.normal(jax.random.key(3), (1, 32, 32, 3))
    with jax.default_matmul_precision("highest"):
        crops = surgery.crop_scores(net, params, state, images, (16, 16), stride=4)
        scores = surgery.sliding_scores(conv_net, conv_params, state, images)
        crop = images[:, :16, :16]
        np.testing.assert_allclose(
            conv_net.apply(conv_params, state, crop)[0][:, 0, 0],
            net.apply(params, state, crop)[0],
            rtol=1e-5,
            atol=1e-6,
        )
    assert scores.shape == crops.shape == (1, 5, 5, 5)
    difference = relative_difference(scores, crops)
    print(f"padded net: score map vs 25 crops, max relative difference {difference:.3f}")
    assert difference > 1e-3


def test_global_average_pooling_becomes_an_average_pool():
    net = jc.serial(jc.Conv(4, 3), jc.Relu, jc.Conv(8, 3, stride=2), jc.GlobalAvgPool, jc.Dense(5))
    params, state = random_params(net, (-1, 13, 13, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 13, 13, 3))
    images = jax.random.normal(jax.random.key(4), (1, 21, 21, 3))
    with jax.default_matmul_precision("highest"):
        crops = surgery.crop_scores(net, params, state, images, (13, 13), stride=2)
        scores = surgery.sliding_scores(conv_net, conv_params, state, images)
    assert scores.shape == (1, 5, 5, 5)
    assert relative_difference(scores, crops) < 1e-5


def test_vgg16_turns_384_into_a_6x6_score_map():
    layers = []
    for width, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        layers += [jc.Conv(width, 3, padding=1), jc.Relu] * convs + [jc.MaxPool(2)]
    vgg = jc.serial(*layers, jc.Flatten, jc.Dense(4096), jc.Relu, jc.Dense(4096), jc.Relu, jc.Dense(1000))
    params = trace(vgg, (-1, 224, 224, 3)).params  # shapes only
    conv_net, conv_params = surgery.fc_to_conv(vgg, params, (-1, 224, 224, 3))
    kernels = [conv_params[name]["kernel"].shape for name in ("dense_32", "dense_34", "dense_36")]
    assert kernels == [(7, 7, 512, 4096), (1, 1, 4096, 4096), (1, 1, 4096, 1000)]
    image = jax.ShapeDtypeStruct((1, 384, 384, 3), jnp.float32)
    scores = jax.eval_shape(lambda p, x: conv_net.apply(p, {}, x)[0], conv_params, image)
    assert scores.shape == (1, 6, 6, 1000)


def test_errors():
    net = jc.serial(jc.Conv(4, 3), jc.Relu)
    params, _ = random_params(net, (-1, 8, 8, 1))
    with pytest.raises(
        ValueError, match=r"fc_to_conv: found no Flatten \(or global pool\) followed by Dense"
    ):
        surgery.fc_to_conv(net, params, (-1, 8, 8, 1))
    conv_net = jc.serial(jc.Conv(2, 2, stride=4))
    with pytest.raises(
        ValueError, match=r"sliding_scores\(stride=3\): the stride must divide the net's total stride 4"
    ):
        surgery.sliding_scores(conv_net, {}, {}, jnp.ones((1, 8, 8, 1)), stride=3)
    with pytest.raises(ValueError, match=r"total_stride: the net's output has no spatial grid"):
        surgery.total_stride(jc.serial(jc.Flatten, jc.Dense(2)), (-1, 4, 4, 1))


@pytest.mark.slow
def test_vgg16_shaped_net_score_map_against_36_crops():
    """VGG-16's layout (widths / 16) on 384x384: the 6x6 map against the 36 crops at stride 32."""
    layers = []
    for width, convs in [(4, 2), (8, 2), (16, 3), (32, 3), (32, 3)]:
        layers += [jc.Conv(width, 3, padding=1), jc.Relu] * convs + [jc.MaxPool(2)]
    net = jc.serial(*layers, jc.Flatten, jc.Dense(64), jc.Relu, jc.Dense(64), jc.Relu, jc.Dense(10))
    params, state = random_params(net, (-1, 224, 224, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 224, 224, 3))
    images = jax.random.normal(jax.random.key(5), (1, 384, 384, 3))
    with jax.default_matmul_precision("highest"):
        crops = jax.jit(lambda p, x: surgery.crop_scores(net, p, state, x, (224, 224), 32))(params, images)
        scores = jax.jit(lambda p, x: surgery.sliding_scores(conv_net, p, state, x))(conv_params, images)
    assert scores.shape == crops.shape == (1, 6, 6, 10)
    difference = relative_difference(scores, crops)
    print(f"VGG-16 layout, widths / 16: score map vs 36 crops, max relative difference {difference:.3f}")
    assert 1e-4 < difference < 1.0
