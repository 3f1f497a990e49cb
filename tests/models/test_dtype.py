"""The ``dtype`` option of `models.get`: computation in bfloat16, float32 params and logits."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv as jc
from jaxconv import models


@pytest.fixture(scope="module")
def resnet20():
    """ResNet-20 in float32 and in bfloat16, with one set of params and state, and an input."""
    plain, half = models.get("resnet20"), models.get("resnet20", dtype=jnp.bfloat16)
    _, params, state = half.init(jax.random.key(0), (-1, 32, 32, 3))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
    return plain, half, params, state, x


def conv_dtypes(net, params, state, x):
    """The dtypes of every convolution's input and output in the traced forward pass."""
    jaxpr = jax.make_jaxpr(lambda p, x: net.apply(p, state, x))(params, x)
    dtypes = set()

    def visit(jaxpr):
        for equation in jaxpr.eqns:
            if equation.primitive.name == "conv_general_dilated":
                dtypes.update(str(var.aval.dtype) for var in [*equation.invars, *equation.outvars])
            for sub in jax.extend.core.jaxprs_in_params(equation.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return dtypes


def test_convolutions_run_in_bfloat16(resnet20):
    plain, half, params, state, x = resnet20
    assert conv_dtypes(half, params, state, x) == {"bfloat16"}
    assert conv_dtypes(plain, params, state, x) == {"float32"}


def test_params_and_state_stay_float32_and_logits_come_back_float32(resnet20):
    _, half, params, state, x = resnet20
    assert {leaf.dtype for leaf in jax.tree.leaves((params, state))} == {jnp.dtype(jnp.float32)}
    logits, new_state = half.apply(params, state, x, train=True)
    assert logits.dtype == jnp.float32 and logits.shape == (4, 10)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state
    )  # the train step's state keeps its dtype: no recompilation


def test_bfloat16_logits_are_close_to_float32(resnet20):
    plain, half, params, state, x = resnet20
    with jax.default_matmul_precision("highest"):
        reference, _ = jax.jit(lambda p, x: plain.apply(p, state, x))(params, x)
    logits, _ = jax.jit(lambda p, x: half.apply(p, state, x))(params, x)
    relative = float(jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference))
    assert 0.0 < relative < 0.05  # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding, 20 layers


def test_gradients_are_float32(resnet20):
    _, half, params, state, x = resnet20
    grads = jax.jit(jax.grad(lambda p: half.apply(p, state, x[:2])[0].sum()))(params)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_description_names_the_dtype():
    net = models.get("lenet5", dtype=jnp.float16)
    assert jc.info(net).kind == "Serial" and jc.info(net).spec["dtype"] == "float16"
    child_names = [name for name, _ in jc.info(net).children]
    assert child_names == [name for name, _ in jc.info(models.get("lenet5")).children]


def test_a_non_floating_dtype_is_refused():
    with pytest.raises(ValueError, match=r"dtype=int32 is not a floating-point dtype; use jnp.bfloat16"):
        models.get("resnet20", dtype=jnp.int32)
