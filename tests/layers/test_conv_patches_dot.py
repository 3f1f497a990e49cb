"""`Conv`'s CPU path for outputs smaller than the kernel (`patches_dot`): the same values and
gradients as ``lax.conv_general_dilated``, and taken only where `uses_patches_dot` says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv as jc
from jaxconv.layers import conv as conv_module

CASES = [  # input (N, H, W, C), kernel size, stride, padding, features
    ((2, 2, 2, 8), 3, 1, 1, 4),  # ResNet's last stage at 64x64: 3x3 on 2x2
    ((2, 4, 4, 8), 3, 2, 1, 4),  # its stride-2 entry: 4x4 -> 2x2
    ((1, 8, 8, 3), 7, 2, 3, 5),  # the 7x7/2 stem on a tiny image: 4x4 out
    ((2, 3, 2, 4), (3, 2), (1, 2), ((1, 0), (0, 1)), 3),  # uneven everything
]


def lax_conv(x, kernel, window):
    return lax.conv_general_dilated(
        x, kernel, window.stride, window.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize(("shape", "size", "stride", "padding", "features"), CASES)
def test_patches_dot_gives_the_convolution_and_its_gradients(shape, size, stride, padding, features):
    net = jc.Conv(features, size, stride=stride, padding=padding, use_bias=False)
    _, params, _ = net.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), shape)
    geometry = conv_module._conv_geometry(jc.info(net).spec, None, shape)
    assert conv_module.uses_patches_dot(geometry, jc.info(net).spec) == (jax.default_backend() == "cpu")

    def loss(apply, kernel, x):
        return jnp.sum(jnp.sin(apply(kernel, x)))

    def ours(kernel, x):
        return conv_module.patches_dot(x, kernel, geometry.window)

    def reference(kernel, x):
        return lax_conv(x, kernel, geometry.window)

    np.testing.assert_allclose(
        ours(params["kernel"], x), reference(params["kernel"], x), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        net.apply(params, {}, x)[0], reference(params["kernel"], x), rtol=1e-5, atol=1e-5
    )
    for got, want in zip(
        jax.grad(lambda k, x: loss(ours, k, x), argnums=(0, 1))(params["kernel"], x),
        jax.grad(lambda k, x: loss(reference, k, x), argnums=(0, 1))(params["kernel"], x),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "options", "expected"),
    [
        ((1, 8, 8, 4), {}, False),  # 8x8 out: the plain convolution
        ((1, 2, 2, 4), {"groups": 2}, False),
        ((1, 2, 2, 4), {"dilation": 2, "padding": 2}, False),
        ((1, 4, 2, 2, 4), {}, False),  # 3-D
        ((1, 2, 4, 4), {}, False),  # 2 < 3 but 4 >= 3: not along every axis
        ((1, 2, 2, 4), {}, True),
    ],
)
def test_which_convolutions_take_patches_dot(shape, options, expected, monkeypatch):
    monkeypatch.setattr(conv_module, "PATCHES_DOT_BACKENDS", frozenset({jax.default_backend()}))
    net = jc.Conv(4, 3, **({"padding": 1} | options))
    spec = jc.info(net).spec
    assert conv_module.uses_patches_dot(conv_module._conv_geometry(spec, None, shape), spec) is expected
    monkeypatch.setattr(conv_module, "PATCHES_DOT_BACKENDS", frozenset())
    assert conv_module.uses_patches_dot(conv_module._conv_geometry(spec, None, shape), spec) is False
