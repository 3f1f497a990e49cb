"""Weight-standardised convolutions against torch.nn.functional.conv2d of filters standardised in
NumPy (Qiao et al. 2019: each filter minus its mean, over its standard deviation), their gradient
against finite differences, and the per-example strategies on a net of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv as jc
from jaxconv.per_example import net_loss, per_example_grads


def numpy_standardized(kernel: np.ndarray) -> np.ndarray:
    """(F, F, C_in, K) -> each of the K filters standardised over its F * F * C_in weights."""
    flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    mean, var = flat.mean(0), flat.var(0)
    return ((flat - mean) / np.sqrt(var + 1e-5)).reshape(kernel.shape)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_matches_torch_on_standardized_filters(stride, padding, dilation):
    conv = jc.Conv(5, 3, stride, padding, dilation, weight_standardization=True)
    _, params, _ = conv.init(jax.random.key(0), (2, 9, 9, 3))
    params = {**params, "bias": jnp.linspace(-1, 1, 5)}
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 9, 9, 3)))
    got, _ = conv.apply(params, {}, x)
    weight = torch.tensor(numpy_standardized(np.asarray(params["kernel"]))).permute(3, 2, 0, 1)
    expected = torch.nn.functional.conv2d(
        torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2),
        weight,
        torch.tensor(np.asarray(params["bias"]), dtype=torch.float64),
        stride,
        padding,
        dilation,
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_scale_of_the_kernel_does_not_matter():
    conv = jc.Conv(4, 3, weight_standardization=True)
    _, params, _ = conv.init(jax.random.key(0), (1, 5, 5, 2))
    x = jax.random.normal(jax.random.key(1), (1, 5, 5, 2))
    scaled = {**params, "kernel": 7.0 * params["kernel"] + 0.0}
    np.testing.assert_allclose(
        conv.apply(params, {}, x)[0], conv.apply(scaled, {}, x)[0], rtol=1e-3, atol=1e-4
    )


def test_gradient_matches_finite_differences():
    conv = jc.Conv(2, 2, weight_standardization=True)
    _, params, _ = conv.init(jax.random.key(0), (1, 3, 3, 2))
    x = jax.random.normal(jax.random.key(1), (1, 3, 3, 2))
    probe = jax.random.normal(jax.random.key(2), (1, 2, 2, 2))

    def loss(kernel):
        return jnp.sum(conv.apply({**params, "kernel": kernel}, {}, x)[0] * probe)

    kernel = params["kernel"]
    grad = np.asarray(jax.grad(loss)(kernel)).ravel()
    step, numeric = 1e-2, []
    for index in range(kernel.size):
        bump = jnp.zeros(kernel.size).at[index].set(step).reshape(kernel.shape)
        numeric.append((loss(kernel + bump) - loss(kernel - bump)) / (2 * step))
    np.testing.assert_allclose(grad, np.asarray(numeric), rtol=5e-2, atol=5e-3)


def test_tapped_and_per_example_grads_exact():
    """The taps' patch-times-gradient einsum gives the standardised kernel's gradient, which the
    taps pull back through the standardisation (`Traits.tap_kernel`): 'einsum' equals 'vmap'."""
    conv = jc.Conv(3, 3, weight_standardization=True)
    assert jc.info(conv).traits.tap and jc.info(conv).traits.tap_kernel is not None
    assert jc.info(jc.Conv(3, 3)).traits.tap_kernel is None
    net = jc.serial(conv, jc.Relu, jc.Flatten, jc.Dense(2))
    _, params, state = net.init(jax.random.key(0), (-1, 5, 5, 1))
    x, y = jax.random.normal(jax.random.key(1), (3, 5, 5, 1)), jnp.array([0, 1, 1])
    einsum = jax.jit(per_example_grads(net_loss(net), strategy="einsum"))(params, state, x, y)
    vmap = jax.jit(per_example_grads(net_loss(net), strategy="vmap"))(params, state, x, y)
    for a, b in zip(jax.tree.leaves(einsum), jax.tree.leaves(vmap), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
