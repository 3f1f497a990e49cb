"""`jc.inspect.activations`: every layer's output by its path, checked against running the
layers one by one, and covering every layer of every zoo family (shapes only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import family_representatives, random_params

import jaxconv as jc
from jaxconv import core, models
from jaxconv.errors import LayerPathError
from jaxconv.inspect import activations, last_conv_path, layer_paths


def small_net() -> jc.Layer:
    block = jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.BatchNorm(), jc.Relu))
    branches = jc.serial(
        jc.fan_out(2), jc.parallel(jc.Conv(2, 1), jc.MaxPool(3, 1, padding=1)), jc.fan_in_concat()
    )
    return jc.serial(jc.Conv(4, 3, padding=1), jc.Relu, block, branches, jc.Flatten, jc.Dense(5))


@pytest.fixture(scope="module")
def net_and_weights():
    net = small_net()
    params, state = random_params(net, (-1, 8, 8, 3))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    return net, params, state, x


def one_by_one(layer: jc.Layer, params, state, x, path=()) -> dict:
    """Each child of a serial net applied by hand, in order, recursing into serial, residual and
    parallel blocks by their structure (body(x) + x; the i-th child on the i-th input)."""
    outputs, description = {}, jc.info(layer)
    if description.kind == "Serial":
        y = x
        for name, child in description.children:
            outputs |= one_by_one(child, params.get(name, {}), state.get(name, {}), y, (*path, name))
            y = outputs[(*path, name)]
    elif description.kind == "Residual":
        ((name, body),) = description.children
        outputs |= one_by_one(body, params.get(name, {}), state.get(name, {}), x, (*path, name))
        y = outputs[(*path, name)] + x
    elif description.kind == "Parallel":
        ys = []
        for (name, child), x_i in zip(description.children, x, strict=True):
            outputs |= one_by_one(child, params.get(name, {}), state.get(name, {}), x_i, (*path, name))
            ys.append(outputs[(*path, name)])
        y = tuple(ys)
    else:
        y = layer.apply(params, state, x)[0]
    outputs[path] = y
    return outputs


def test_every_output_equals_running_the_layers_one_by_one(net_and_weights):
    net, params, state, x = net_and_weights
    got = activations(net, params, state, x)
    expected = one_by_one(net, params, state, x)
    assert set(got) == set(expected) == set(layer_paths(net))
    for path, value in expected.items():
        got_leaves, leaves = jax.tree_util.tree_leaves(got[path]), jax.tree_util.tree_leaves(value)
        assert len(got_leaves) == len(leaves)
        for got_leaf, leaf in zip(got_leaves, leaves, strict=True):
            np.testing.assert_allclose(got_leaf, leaf, rtol=1e-5, atol=1e-5, err_msg="/".join(path))
    np.testing.assert_allclose(got[()], net.apply(params, state, x)[0], rtol=1e-6)


def test_train_mode_uses_the_batch_statistics(net_and_weights):
    net, params, state, x = net_and_weights
    got = activations(net, params, state, x, train=True)
    np.testing.assert_allclose(got[()], net.apply(params, state, x, train=True)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[()], activations(net, params, state, x)[()], atol=1e-3)


def test_only_the_paths_asked_for_and_a_clear_error_for_a_wrong_one(net_and_weights):
    net, params, state, x = net_and_weights
    got = activations(net, params, state, x, paths=["residual_2/body/conv_0", ("conv_0",)])
    assert set(got) == {(), ("residual_2", "body", "conv_0"), ("conv_0",)}
    with pytest.raises(LayerPathError, match=r"no layer at 'residual_2/conv_0'.*residual_2/body/conv_0"):
        activations(net, params, state, x, paths=["residual_2/conv_0"])


@pytest.mark.parametrize("name", family_representatives())
def test_every_layer_of_every_zoo_family_is_kept(name):
    net = models.get(name)
    shape = models.input_shape(name, batch=1)
    params, state = jax.eval_shape(lambda key: net.init(key, shape)[1:], jax.random.key(0))
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    got = jax.eval_shape(lambda p, s, x: activations(net, p, s, x), params, state, x)
    assert set(got) == set(layer_paths(net))
    assert got[()].shape == (1, models.spec(name).num_classes)
    for keys, _ in jax.tree_util.tree_leaves_with_path(params):  # every layer with weights, or the
        path = core.leaf_path(keys)[:-1]  # opaque layer (remat) that holds it, has its volume
        assert any(path[: len(kept)] == kept for kept in got if kept), "/".join(path)
    convs = [path for path, info in core.walk(net) if info.kind == "Conv"]
    assert convs and all(len(got[path].shape) == 4 for path in convs if path in got)


def test_an_opaque_layer_is_one_volume(net_and_weights):
    """A `remat` block runs its children inside a JAX transformation: its output is kept, its
    insides are not, and the values are the same as without it."""
    inner = jc.serial(jc.Conv(3, 3, padding=1), jc.Relu)
    plain, wrapped = (
        jc.serial(jc.Conv(4, 3), block, jc.Flatten, jc.Dense(2)) for block in (inner, jc.remat(inner))
    )
    params, state = random_params(plain, (-1, 6, 6, 2))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 2)), jnp.float32)
    got, expected = activations(wrapped, params, state, x), activations(plain, params, state, x)
    assert set(expected) - set(got) == {("serial_1", "conv_0"), ("serial_1", "relu_1")}
    assert set(got) == set(layer_paths(wrapped))
    for path in got:
        np.testing.assert_allclose(got[path], expected[path], rtol=1e-6)


def test_the_last_convolution_is_found():
    assert last_conv_path(small_net()) == ("serial_3", "parallel_1", "conv_0")
    assert last_conv_path(models.get("convnet")) == ("conv_4",)
    assert last_conv_path(models.get("convnet"), through_elementwise=True) == ("relu_6",)  # after BN, ReLU
    with pytest.raises(LayerPathError, match="no Conv layer"):
        last_conv_path(jc.serial(jc.Flatten, jc.Dense(2)))
