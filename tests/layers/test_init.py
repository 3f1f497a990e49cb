"""Initialisers: the variance of He, Glorot and LeCun, from the fan-in and fan-out of HWIO kernels."""

import jax
import numpy as np
import pytest

import jaxconv as jc

# name -> expected variance from fan_in and fan_out (He et al. 2015, Glorot & Bengio 2010, LeCun 1998)
VARIANCE = {
    "he_normal": lambda fan_in, fan_out: 2.0 / fan_in,
    "he_uniform": lambda fan_in, fan_out: 2.0 / fan_in,
    "glorot_normal": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
    "glorot_uniform": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
    "lecun_normal": lambda fan_in, fan_out: 1.0 / fan_in,
    "lecun_uniform": lambda fan_in, fan_out: 1.0 / fan_in,
}


@pytest.mark.parametrize("name", sorted(VARIANCE))
def test_conv_kernel_variance(name):
    # (F, F, C_in, K) = (5, 5, 32, 64): fan_in = 5*5*32, fan_out = 5*5*64
    conv = jc.Conv(64, 5, kernel_init=name)
    _, params, _ = conv.init(jax.random.key(0), (-1, 8, 8, 32))
    kernel = np.asarray(params["kernel"])
    expected = VARIANCE[name](5 * 5 * 32, 5 * 5 * 64)
    assert kernel.var() == pytest.approx(expected, rel=0.05)
    assert abs(kernel.mean()) < 0.05 * np.sqrt(expected)


def test_grouped_conv_fan_in_counts_one_group():
    conv = jc.Conv(64, 3, groups=4)
    _, params, _ = conv.init(jax.random.key(0), (-1, 8, 8, 64))
    assert params["kernel"].shape == (3, 3, 16, 64)
    assert np.asarray(params["kernel"]).var() == pytest.approx(2.0 / (3 * 3 * 16), rel=0.05)


def test_nchw_kernel_fan_in_reads_the_layout():
    conv = jc.Conv(64, 5, dimension_numbers=("NCHW", "OIHW", "NCHW"))
    _, params, _ = conv.init(jax.random.key(0), (-1, 32, 8, 8))
    assert params["kernel"].shape == (64, 32, 5, 5)
    assert np.asarray(params["kernel"]).var() == pytest.approx(2.0 / (5 * 5 * 32), rel=0.05)


def test_dense_and_aliases():
    _, params, _ = jc.Dense(512, kernel_init="glorot").init(jax.random.key(0), (-1, 1024))
    assert np.asarray(params["kernel"]).var() == pytest.approx(2.0 / (1024 + 512), rel=0.05)
    assert np.all(np.asarray(params["bias"]) == 0)


def test_custom_and_unknown_initialisers():
    ones = jax.nn.initializers.ones
    _, params, _ = jc.Conv(2, 1, kernel_init=ones).init(jax.random.key(0), (-1, 3, 3, 1))
    assert np.all(np.asarray(params["kernel"]) == 1)
    with pytest.raises(ValueError, match=r"unknown initialiser 'xavier'; choose one of \['he_normal'"):
        jc.Conv(2, 1, kernel_init="xavier").init(jax.random.key(0), (-1, 3, 3, 1))
