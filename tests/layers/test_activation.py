"""Activations against `torch.nn.functional`, literal values and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jaxconv as jc

# name -> (our layer, torch's function)
ACTIVATIONS = {
    "relu": (jc.Relu, F.relu),
    "leaky_relu": (jc.LeakyRelu(), lambda x: F.leaky_relu(x, 0.01)),
    "leaky_relu_0.2": (jc.LeakyRelu(0.2), lambda x: F.leaky_relu(x, 0.2)),
    "elu": (jc.Elu(), F.elu),
    "elu_0.5": (jc.Elu(0.5), lambda x: F.elu(x, alpha=0.5)),
    "gelu": (jc.Gelu, lambda x: F.gelu(x, approximate="none")),
    "sigmoid": (jc.Sigmoid, torch.sigmoid),
    "tanh": (jc.Tanh, torch.tanh),
    "softmax": (jc.Softmax, lambda x: F.softmax(x, dim=-1)),
    "log_softmax": (jc.LogSoftmax, lambda x: F.log_softmax(x, dim=-1)),
}
CASES = pytest.mark.parametrize("name", sorted(ACTIVATIONS))


def inputs() -> np.ndarray:
    """(N, H, W, C) values spanning [-12, 12], with exact zeros and a few large logits."""
    x = np.random.default_rng(0).uniform(-12, 12, size=(2, 3, 4, 5)).astype(np.float32)
    x[0, 0, 0] = [0.0, -0.0, 1e-3, -1e-3, 0.5]
    x[1, 0, 0] = [1000.0, 999.0, -1000.0, 0.0, 50.0]  # softmax must not overflow
    return x


@CASES
def test_matches_torch(name):
    net, reference = ACTIVATIONS[name]
    x = inputs()
    out_shape, params, state = net.init(None, (-1, *x.shape[1:]))
    y, new_state = net.apply(params, state, jnp.asarray(x))
    assert out_shape == (-1, *y.shape[1:]) and y.shape == x.shape
    assert params == {} and new_state == {}
    expected = reference(torch.from_numpy(x)).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("net", "values", "expected"),
    [
        (jc.Relu, [-1.0, 0.0, 2.0], [0.0, 0.0, 2.0]),
        (jc.LeakyRelu(0.1), [-2.0, 0.0, 3.0], [-0.2, 0.0, 3.0]),
        (jc.Elu(2.0), [-np.log(2.0), 1.0], [-1.0, 1.0]),  # 2 * (exp(-ln 2) - 1) = -1
        (jc.Gelu, [-1.0, 0.0, 1.0], [-0.15865525, 0.0, 0.84134475]),  # x * Phi(x), Phi(1) = 0.8413447...
        (jc.Sigmoid, [0.0, np.log(3.0)], [0.5, 0.75]),
        (jc.Tanh, [0.0, np.log(2.0)], [0.0, 0.6]),  # (4 - 1) / (4 + 1)
        (jc.Softmax, [0.0, np.log(3.0)], [0.25, 0.75]),
        (jc.LogSoftmax, [0.0, np.log(3.0)], [np.log(0.25), np.log(0.75)]),
    ],
)
def test_literal_values(net, values, expected):
    y, _ = net.apply({}, {}, jnp.array([values], jnp.float32))
    np.testing.assert_allclose(y[0], expected, rtol=1e-6, atol=1e-7)


def test_softmax_is_over_the_last_axis():
    x = jnp.asarray(inputs())
    np.testing.assert_allclose(jnp.sum(jc.Softmax.apply({}, {}, x)[0], axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(jnp.exp(jc.LogSoftmax.apply({}, {}, x)[0]), axis=-1), 1.0, rtol=1e-6)


@CASES
def test_finite_difference_gradients(name):
    net, _ = ACTIVATIONS[name]
    with jax.enable_x64(True):
        x = np.random.default_rng(1).uniform(-3, 3, size=(3, 6))
        x = np.where(np.abs(x) < 0.05, 0.5, x)  # keep away from the kinks at zero
        check_grads(
            jax.jit(lambda x: net.apply({}, {}, x)[0]), (jnp.asarray(x),), 1, modes=("rev",), eps=1e-5
        )
