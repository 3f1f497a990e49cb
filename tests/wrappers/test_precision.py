"""Mixed precision (`jaxconv.wrappers.mixed_precision`): bfloat16 compute, float32 master weights, statistics and logits."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv import models
from jaxconv.wrappers import cast, mixed_precision

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
SHAPE = (-1, 8, 8, 3)


def small_net() -> jc.Layer:
    return jc.serial(
        jc.Conv(8, 3, padding=1), jc.BatchNorm(), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(10)
    )


@pytest.fixture(scope="module")
def setup():
    net = small_net()
    params, state = random_params(net, SHAPE)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 8, 8, 3)), jnp.float32)
    return net, params, state, x


def compute_dtypes(fn, *args) -> dict[str, set[str]]:
    """The dtypes of every convolution's and matrix multiply's operands in the traced ``fn``."""
    found: dict[str, set[str]] = {"conv_general_dilated": set(), "dot_general": set()}

    def visit(jaxpr):
        for equation in jaxpr.eqns:
            if equation.primitive.name in found:
                found[equation.primitive.name].update(str(v.aval.dtype) for v in equation.invars)
            for sub in jax.extend.core.jaxprs_in_params(equation.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def dtypes(tree) -> set:
    return {leaf.dtype for leaf in jax.tree.leaves(tree)}


def test_convolutions_and_matrix_multiplies_run_in_bfloat16(setup):
    net, params, state, x = setup
    half = mixed_precision(net)
    found = compute_dtypes(lambda p, x: half.apply(p, state, x, train=True), params, x)
    assert found == {"conv_general_dilated": {"bfloat16"}, "dot_general": {"bfloat16"}}


def test_params_grads_state_and_logits_are_float32(setup):
    net, params, state, x = setup
    half = mixed_precision(net)
    labels = jnp.arange(16) % 10

    def loss(params):
        logits, new_state = half.apply(params, state, x, train=True)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), labels]), (logits, new_state)

    grads, (logits, new_state) = jax.grad(loss, has_aux=True)(params)
    assert dtypes(params) == dtypes(grads) == dtypes(new_state) == {F32}
    assert logits.dtype == F32 and logits.shape == (16, 10)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_outputs_are_close_to_float32(setup):
    net, params, state, x = setup
    with jax.default_matmul_precision("highest"):
        reference, reference_state = net.apply(params, state, x, train=True)
    logits, new_state = jax.jit(lambda p, x: mixed_precision(net).apply(p, state, x, train=True))(params, x)
    relative = float(jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference))
    assert 0.0 < relative < 0.03  # bfloat16: 8 bits of mantissa, ~0.4% per rounding
    for ours, theirs in zip(jax.tree.leaves(new_state), jax.tree.leaves(reference_state), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0.02, atol=0.02)


def test_batchnorm_statistics_are_accumulated_in_float32():
    # 4096 values near 3: summed in bfloat16 the mean would be off by ~1%; in float32 by ~1e-7
    x = jnp.asarray(3 + np.random.default_rng(0).normal(size=(256, 4, 4, 1)), jnp.bfloat16)
    net = mixed_precision(jc.BatchNorm(momentum=0.0))
    _, params, state = net.init(None, (-1, 4, 4, 1))
    y, new_state = net.apply(params, state, x, train=True)
    exact = np.asarray(x, np.float64)  # the bfloat16 values the layer sees
    assert new_state["mean"].dtype == new_state["var"].dtype == F32
    np.testing.assert_allclose(new_state["mean"], [exact.mean()], rtol=1e-6)
    np.testing.assert_allclose(new_state["var"], [exact.var(ddof=1)], rtol=1e-5)
    normalised = (exact - exact.mean()) / np.sqrt(exact.var() + 1e-5)
    np.testing.assert_allclose(y, normalised, atol=0.02)


def test_one_sub_layer_in_bfloat16_the_rest_in_float32(setup):
    _, params, state, x = setup
    conv, dense = jc.named("conv", jc.Conv(8, 3, padding=1)), jc.named("fc", jc.Dense(10))
    net = jc.serial(mixed_precision(conv), jc.Relu, jc.Flatten, dense)
    _, params, state = net.init(jax.random.key(0), SHAPE)
    found = compute_dtypes(lambda p, x: net.apply(p, state, x), params, x)
    assert found == {"conv_general_dilated": {"bfloat16"}, "dot_general": {"float32"}}
    assert sorted(params) == ["conv", "fc"]  # the wrapper keeps the layer's name


def test_output_dtype_none_stays_in_the_compute_dtype(setup):
    net, params, state, x = setup
    logits, new_state = mixed_precision(net, "bfloat16", output_dtype=None).apply(params, state, x)
    assert logits.dtype == BF16 and dtypes(new_state) == {F32}


def test_float16_compute(setup):
    net, params, state, x = setup
    found = compute_dtypes(lambda p, x: mixed_precision(net, jnp.float16).apply(p, state, x), params, x)
    assert found["conv_general_dilated"] == {"float16"}


def test_state_comes_back_at_least_float32():
    def init(key, input_shape):
        return input_shape, {}, {"peak": jnp.zeros(())}

    def apply(params, state, x, *, key=None, train=False):
        return x, {"peak": jnp.maximum(state["peak"], x.max())}  # in the input's dtype

    net = mixed_precision(jc.Layer(init, apply))
    _, new_state = net.apply({}, {"peak": jnp.zeros(())}, jnp.full((2, 3), 2.5))
    assert new_state["peak"].dtype == F32 and float(new_state["peak"]) == 2.5


def test_jit_equals_eager_and_vmap_equals_a_loop(setup):
    net, params, state, x = setup
    half = mixed_precision(net)
    eager, _ = half.apply(params, state, x)
    jitted, _ = jax.jit(lambda p, x: half.apply(p, state, x))(params, x)
    # XLA fuses the elementwise ops after each convolution and keeps their intermediates in
    # float32, so jit rounds to bfloat16 less often than eager: equal to bfloat16's precision
    np.testing.assert_allclose(eager, jitted, rtol=0.02, atol=0.02)
    groups = x.reshape(2, 8, 8, 8, 3)
    mapped, _ = jax.vmap(lambda x: half.apply(params, state, x), out_axes=(0, None))(groups)
    looped = jnp.stack([half.apply(params, state, g)[0] for g in groups])
    np.testing.assert_allclose(mapped, looped, rtol=0.02, atol=0.02)


def test_integer_pixels_are_computed_in_the_compute_dtype(setup):
    net, params, state, _ = setup
    pixels = jnp.asarray(np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3)), jnp.uint8)
    half = mixed_precision(net)
    found = compute_dtypes(lambda p, x: half.apply(p, state, x), params, pixels)
    assert found["conv_general_dilated"] == {"bfloat16"}
    from_uint8, _ = half.apply(params, state, pixels)
    from_float, _ = half.apply(params, state, pixels.astype(jnp.float32))  # 0..255 are exact in bfloat16
    np.testing.assert_array_equal(from_uint8, from_float)


def test_description_and_init_are_the_nets():
    net = small_net()
    half = mixed_precision(net)
    assert jc.info(half).kind == "Serial" and jc.info(half).spec["dtype"] == "bfloat16"
    assert jc.info(half).children == jc.info(net).children
    shape, params, state = half.init(jax.random.key(0), SHAPE)
    assert shape == (-1, 10) and dtypes(params) == dtypes(state) == {F32}


def test_cast_leaves_integers_alone():
    tree = {"w": jnp.ones(2), "count": jnp.array(3), "mask": jnp.array([True])}
    assert {k: v.dtype for k, v in cast(tree, jnp.bfloat16).items()} == {
        "w": BF16,
        "count": jnp.dtype(jnp.int32),
        "mask": jnp.dtype(bool),
    }


def test_zoo_dtype_option_takes_a_name():
    net = models.get("lenet5", dtype="bfloat16")
    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 1))
    logits, _ = net.apply(params, state, jnp.ones((2, 32, 32, 1)))
    assert logits.dtype == F32 and jc.info(net).spec["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("compute_dtype", jnp.int32, r"compute_dtype=int32 is not a floating-point dtype; use jnp.bfloat16"),
        ("compute_dtype", "half-ish", r"compute_dtype='half-ish' is not a dtype; use jnp.bfloat16"),
        ("output_dtype", jnp.uint8, r"output_dtype=uint8 is not a floating-point dtype"),
    ],
)
def test_a_non_floating_dtype_is_refused(argument, value, message):
    with pytest.raises(ValueError, match=message):
        mixed_precision(small_net(), **{argument: value})
