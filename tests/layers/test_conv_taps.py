"""`Conv` on inputs smaller than its kernel runs as taps and one matrix product on CPU
(`jaxconv.layers.conv_taps`): its outputs and both gradients equal ``lax.conv_general_dilated``'s
(and torch's), and the path is taken only where it should be."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv as jc

torch = pytest.importorskip("torch", reason="./scripts/setup --dev installs torch")

CASES = [  # (input spatial, kernel, stride, padding, dilation)
    ((2, 2), 3, 1, 1, 1),
    ((1, 1), 3, 1, 1, 1),
    ((2, 3), (3, 5), (1, 2), ((1, 2), (2, 2)), 1),
    ((3, 3), 3, 2, "SAME", 2),
    ((2,), 3, 1, 1, 1),
    ((2, 2, 1), 3, 1, 1, 1),
    ((4, 2), (3, 3), 1, "SAME", 1),
]


def _reference(x, params, case):
    """The same convolution by ``lax.conv_general_dilated`` directly, with the bias."""
    _, _, stride, padding, dilation = case
    rank = x.ndim - 2
    as_tuple = lambda value: (value,) * rank if isinstance(value, int) else tuple(value)  # noqa: E731
    pads = [(padding, padding)] * rank if isinstance(padding, int) else padding
    y = lax.conv_general_dilated(
        x,
        params["kernel"],
        window_strides=as_tuple(stride),
        padding=pads,
        rhs_dilation=as_tuple(dilation),
        dimension_numbers=jc.sizing.channel_last(rank),
    )
    return y + params["bias"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outputs_and_gradients_equal_lax(case):
    spatial, kernel, stride, padding, dilation = case
    conv = jc.Conv(6, kernel, stride=stride, padding=padding, dilation=dilation)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, *spatial, 5)), jnp.float32)
    _, params, state = conv.init(jax.random.key(1), x.shape)
    params = {**params, "bias": jnp.arange(6, dtype=jnp.float32) / 7}

    def ours(params, x):
        return conv.apply(params, state, x)[0]

    np.testing.assert_allclose(ours(params, x), _reference(x, params, case), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=ours(params, x).shape), jnp.float32)
    got = jax.grad(lambda p, x: (ours(p, x) * weights).sum(), argnums=(0, 1))(params, x)
    want = jax.grad(lambda p, x: (_reference(x, p, case) * weights).sum(), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_resnet_tail_equals_torch():
    """512 -> 64 channels, 3x3, padding 1, on a 2x2 map: torch.nn.functional.conv2d."""
    rng = np.random.default_rng(3)
    x, kernel = rng.normal(size=(4, 2, 2, 32)), rng.normal(size=(3, 3, 32, 16)) / 17
    conv = jc.Conv(16, 3, padding=1, use_bias=False)
    got = conv.apply({"kernel": jnp.asarray(kernel, jnp.float32)}, {}, jnp.asarray(x, jnp.float32))[0]
    want = torch.nn.functional.conv2d(
        torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(kernel).permute(3, 2, 0, 1), padding=1
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("conv", "spatial", "taps"),
    [
        (jc.Conv(4, 3, padding=1), (2, 2), True),
        (jc.Conv(4, 3, padding=1), (8, 8), False),  # XLA's own convolution is fast there
        (jc.Conv(4, 3, padding=1, groups=2), (2, 2), False),
        (jc.Conv(4, 3, padding=1, dimension_numbers=("NCHW", "OIHW", "NCHW")), (2, 2), False),
    ],
    ids=["small", "large", "grouped", "channels-first"],
)
def test_the_taps_are_taken_only_for_small_channels_last_inputs(conv, spatial, taps):
    channels_first = jc.core.info(conv).spec["dimension_numbers"] is not None
    shape = (2, 4, *spatial) if channels_first else (2, *spatial, 4)
    _, params, state = conv.init(jax.random.key(0), shape)
    program = str(jax.make_jaxpr(lambda x: conv.apply(params, state, x)[0])(jnp.ones(shape)))
    assert ("conv_general_dilated" not in program) == (taps and jax.default_backend() == "cpu")
