"""One harness over every layer: the protocol's promises, checked the same way for all.

For each layer: the shape `init` predicts is the shape `apply` returns (in both
modes); `jit` equals eager; `vmap` over single examples equals the batched
call (in evaluation mode); `apply` keeps the state's structure;
every parameter gets a finite, non-zero gradient; the same key gives the same
output; float16/bfloat16 inputs keep their dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc

IMAGE = (2, 9, 9, 4)  # (N, H, W, C); odd sizes so strides do not divide evenly


def skip_connection() -> jc.Layer:
    """``relu(conv(x)) + x`` as a `wired` graph."""
    conv = jc.Conv(4, 3, padding=1)

    def run(step, x):  # x is a shape at init and an array at apply
        return step("sum", jc.fan_in_sum, (step("act", jc.Relu, step("conv", conv, x)), x))

    return jc.wired("Skip", [("conv", conv), ("act", jc.Relu), ("sum", jc.fan_in_sum)], run)


# name -> (layer, input shape)
LAYERS: dict[str, tuple[jc.Layer, tuple[int, ...]]] = {
    "conv": (jc.Conv(6, 3, stride=2, padding=1), IMAGE),
    "conv_dilated_grouped": (jc.Conv(4, 3, dilation=2, groups=2, padding="SAME"), IMAGE),
    "conv_depthwise_nobias": (jc.Conv(8, (3, 1), groups=4, use_bias=False), IMAGE),
    "conv1d": (jc.Conv(5, 3, stride=2), (2, 11, 3)),
    "conv3d": (jc.Conv(3, 2, padding=((0, 1), (1, 0), (0, 0))), (2, 4, 5, 6, 2)),
    "conv_nchw": (jc.Conv(5, 3, dimension_numbers=("NCHW", "OIHW", "NCHW")), (2, 4, 9, 9)),
    "conv_transpose": (jc.ConvTranspose(3, 3, stride=2, padding=1, output_padding=1), IMAGE),
    "locally_connected": (jc.LocallyConnected(3, 3, stride=2), IMAGE),
    "max_pool": (jc.MaxPool(3, stride=2), IMAGE),
    "max_pool_same": (jc.MaxPool(2, padding="SAME"), IMAGE),
    "max_pool_ceil": (jc.MaxPool(3, 2, ceil_mode=True), IMAGE),
    "adaptive_avg_pool": (jc.AdaptiveAvgPool((2, 3)), IMAGE),
    "relu6": (jc.Relu6, IMAGE),
    "avg_pool": (jc.AvgPool(3, stride=2, padding=1), IMAGE),
    "avg_pool_exclude_pad": (jc.AvgPool(3, stride=2, padding=1, count_include_pad=False), IMAGE),
    "lp_pool": (jc.LpPool(2), IMAGE),
    "global_avg_pool": (jc.GlobalAvgPool, IMAGE),
    "global_max_pool": (jc.GlobalMaxPool, IMAGE),
    "batch_norm": (jc.BatchNorm(), IMAGE),
    "local_response_norm": (jc.LocalResponseNorm(size=3), IMAGE),
    "layer_norm": (jc.LayerNorm(), IMAGE),
    "layer_norm_volume": (jc.LayerNorm(axis=(1, 2, 3)), IMAGE),
    "group_norm": (jc.GroupNorm(2), IMAGE),
    "scattering": (jc.Scattering(scales=1, angles=4), (2, 8, 6, 3)),
    "dense": (jc.Dense(7), (2, 5)),
    "flatten": (jc.Flatten, IMAGE),
    "relu": (jc.Relu, IMAGE),
    "leaky_relu": (jc.LeakyRelu(0.1), IMAGE),
    "elu": (jc.Elu(), IMAGE),
    "gelu": (jc.Gelu, IMAGE),
    "sigmoid": (jc.Sigmoid, IMAGE),
    "tanh": (jc.Tanh, IMAGE),
    "softmax": (jc.Softmax, (2, 5)),
    "log_softmax": (jc.LogSoftmax, (2, 5)),
    "dropout": (jc.Dropout(0.3), IMAGE),
    "stochastic_depth": (jc.StochasticDepth(0.3), IMAGE),
    "identity": (jc.Identity, IMAGE),
    "lambda": (jc.Lambda(lambda x: x[:, ::2]), IMAGE),
    "serial": (jc.serial(jc.Conv(4, 3), jc.BatchNorm(), jc.Relu, jc.Dropout(0.2)), IMAGE),
    "residual": (jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.Relu)), IMAGE),
    "residual_projection": (
        jc.residual(jc.Conv(8, 3, stride=2, padding=1), shortcut=jc.Conv(8, 1, stride=2)),
        IMAGE,
    ),
    "inception_like": (
        jc.serial(jc.fan_out(2), jc.parallel(jc.Conv(3, 1), jc.MaxPool(3, 1, 1)), jc.fan_in_concat()),
        IMAGE,
    ),
    "fan_in_sum": (jc.serial(jc.fan_out(3), jc.fan_in_sum), IMAGE),
    "shape_dependent": (jc.shape_dependent(lambda shape: jc.Conv(shape[-1] // 2, 1)), IMAGE),
    "named": (jc.named("stem", jc.Conv(3, 3)), IMAGE),
    "wired": (skip_connection(), IMAGE),
    "concat_with_input": (jc.concat_with_input(jc.Conv(2, 3, padding=1)), IMAGE),
    "with_aux_heads": (
        jc.serial(
            jc.with_aux_heads(
                [("stem", jc.Conv(3, 3)), ("top", jc.GlobalAvgPool)], [("stem", "aux", jc.Flatten)]
            ),
            jc.Lambda(lambda outputs: outputs[0]),
        ),
        IMAGE,
    ),
    "remat": (jc.remat(jc.serial(jc.Conv(4, 3), jc.Dropout(0.5))), IMAGE),
    "mixed_precision": (jc.mixed_precision(jc.serial(jc.Conv(4, 3), jc.BatchNorm())), IMAGE),
}

CASES = pytest.mark.parametrize("name", sorted(LAYERS))


def setup(name: str):
    net, shape = LAYERS[name]
    key = jax.random.key(1)
    out_shape, params, state = net.init(key, (-1, *shape[1:]))
    x = jax.random.normal(jax.random.key(2), shape)
    return net, out_shape, params, state, x


@CASES
@pytest.mark.parametrize("train", [False, True])
def test_init_shape_is_apply_shape(name, train):
    net, out_shape, params, state, x = setup(name)
    y, _ = net.apply(params, state, x, key=jax.random.key(3), train=train)
    assert out_shape == (-1, *y.shape[1:])
    assert net.init(jax.random.key(1), x.shape)[0] == y.shape


@CASES
def test_jit_equals_eager(name):
    net, _, params, state, x = setup(name)
    key = jax.random.key(3)

    def run(params, state, x, key):
        return net.apply(params, state, x, key=key, train=True)

    eager, jitted = run(params, state, x, key), jax.jit(run)(params, state, x, key)
    np.testing.assert_allclose(eager[0], jitted[0], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager[1], jitted[1])


@CASES
def test_vmap_over_examples_equals_batch(name):
    net, _, params, state, x = setup(name)
    batched, _ = net.apply(params, state, x)

    def one(example):  # each example keeps a batch axis of one: (1, H, W, C)
        return net.apply(params, state, example)[0]

    mapped = jax.vmap(one)(x[:, None])
    np.testing.assert_allclose(mapped[:, 0], batched, rtol=1e-5, atol=1e-5)


@CASES
def test_apply_keeps_state_structure(name):
    net, _, params, state, x = setup(name)
    for train in (False, True):
        _, new_state = net.apply(params, state, x, key=jax.random.key(3), train=train)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        jax.tree.map(
            lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail(name), state, new_state
        )


@CASES
def test_every_parameter_gets_a_finite_gradient(name):
    net, _, params, state, x = setup(name)
    if not jax.tree.leaves(params):
        pytest.skip("no parameters")
    # A fixed random projection of the output, so no gradient cancels by symmetry
    # (a plain sum of a normalised output has zero gradient by construction).
    y, _ = net.apply(params, state, x, key=jax.random.key(3), train=True)
    projection = jax.random.normal(jax.random.key(4), y.shape)

    def loss(params):
        y, _ = net.apply(params, state, x, key=jax.random.key(3), train=True)
        return jnp.sum(y * projection)

    for path, grad in jax.tree_util.tree_leaves_with_path(jax.grad(loss)(params)):
        assert bool(jnp.all(jnp.isfinite(grad))), path
        assert float(jnp.max(jnp.abs(grad))) > 0, path


@CASES
def test_same_key_same_output(name):
    net, _, params, state, x = setup(name)
    first, _ = net.apply(params, state, x, key=jax.random.key(5), train=True)
    again, _ = net.apply(params, state, x, key=jax.random.key(5), train=True)
    np.testing.assert_array_equal(first, again)
    _, params_again, _ = net.init(jax.random.key(1), (-1, *x.shape[1:]))
    jax.tree.map(np.testing.assert_array_equal, params, params_again)


@CASES
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_keep_their_dtype(name, dtype):
    if name == "mixed_precision":
        pytest.skip("casts to its own dtypes by design (tests/test_precision.py)")
    net, _, params, state, x = setup(name)
    y, _ = net.apply(params, state, x.astype(dtype), key=jax.random.key(3), train=True)
    assert y.dtype == dtype
    reference, _ = net.apply(params, state, x, key=jax.random.key(3), train=True)
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=0.1, atol=0.15)
