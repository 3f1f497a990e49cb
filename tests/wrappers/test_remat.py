"""Rematerialisation (`jaxconv.wrappers.remat`): the same values and gradients, less memory, recomputed convolutions."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv import models
from jaxconv.wrappers import block_paths, mixed_precision, remat, remat_blocks

SHAPE = (-1, 8, 8, 3)


def block_net() -> jc.Layer:
    """A small net with a residual block, BatchNorm and Dropout (random, so it needs the same key twice)."""
    body = jc.serial(
        jc.Conv(4, 3, padding=1), jc.BatchNorm(), jc.Relu, jc.Dropout(0.5), jc.Conv(4, 3, padding=1)
    )
    return jc.serial(
        jc.Conv(4, 3, padding=1), jc.named("block", jc.residual(body)), jc.Relu, jc.Flatten, jc.Dense(5)
    )


@pytest.fixture(scope="module")
def inputs():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 8, 8, 3)), jnp.float32)
    return x, jnp.arange(6) % 5


def loss_and_grads(net, params, state, x, labels, key):
    def loss(params):
        logits, new_state = net.apply(params, state, x, key=key, train=True)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels]), new_state

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def assert_trees_equal(a, b, tolerance=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(left, right, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "wrap", [remat, remat_blocks, lambda net: remat(net, jax.checkpoint_policies.dots_saveable)]
)
def test_values_state_and_gradients_equal_the_plain_nets(wrap, inputs):
    x, labels = inputs
    net = block_net()
    params, state = random_params(net, SHAPE)
    key = jax.random.key(3)
    expected = loss_and_grads(net, params, state, x, labels, key)
    assert_trees_equal(loss_and_grads(wrap(net), params, state, x, labels, key), expected, 1e-6)


def test_blocks_are_wrapped_and_params_keep_their_keys():
    net = models.get("resnet20")
    wrapped = models.get("resnet20", remat=True)
    assert block_paths(net) == [f"net/stage{s}/block{b}" for s in (1, 2, 3) for b in range(3)]
    stage = dict(jc.info(wrapped).children)["stage2"]
    block = dict(jc.info(stage).children)["block0"]
    assert jc.info(block).kind == "Residual" and jc.info(block).spec == {"remat": True}
    plain_tree = jax.eval_shape(lambda k: net.init(k, (-1, 32, 32, 3))[1:], jax.random.key(0))
    wrapped_tree = jax.eval_shape(lambda k: wrapped.init(k, (-1, 32, 32, 3))[1:], jax.random.key(0))
    assert plain_tree == wrapped_tree


def test_branching_blocks_are_found():
    paths = block_paths(models.get("googlenet"))
    assert paths[:2] == ["net/inception3a", "net/inception3b"] and len(paths) == 9
    assert len(block_paths(models.get("densenet40_12"))) == 36  # 3 dense blocks of 12 layers


def compiled_train_step(net, params, state, x, labels):
    def loss(params, state, x, labels):
        logits, new_state = net.apply(params, state, x, train=True)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels]), new_state

    return jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params, state, x, labels).compile()


def test_a_resnet_train_step_needs_less_memory_and_recomputes_its_convolutions():
    x = jax.ShapeDtypeStruct((16, 32, 32, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((16,), jnp.int32)
    compiled = {}
    for name, remat_option in (("plain", False), ("remat", True)):
        net = models.get("resnet20", remat=remat_option)
        _, params, state = jax.eval_shape(lambda k, net=net: net.init(k, (-1, 32, 32, 3)), jax.random.key(0))
        compiled[name] = compiled_train_step(net, params, state, x, labels)
    temp = {name: c.memory_analysis().temp_size_in_bytes for name, c in compiled.items()}
    assert temp["remat"] < 0.5 * temp["plain"]  # measured: 0.32 on CPU
    convolutions = {name: c.as_text().count(" convolution(") for name, c in compiled.items()}
    # 19 forward convolutions, 18 of them in blocks; backward: 19 for the kernels, 18 for the inputs
    # (none for the image); remat runs the 18 block convolutions again
    assert convolutions == {"plain": 19 + 37, "remat": 19 + 37 + 18}


def test_per_example_gradients_through_remat(inputs):
    x, _ = inputs
    net = jc.serial(
        jc.Conv(4, 3, padding=1), jc.named("block", jc.residual(jc.Conv(4, 3, padding=1))), jc.Flatten
    )
    params, state = random_params(net, SHAPE)

    def per_example(net):
        def loss(params, example):
            return jnp.sum(net.apply(params, state, example[None])[0] ** 2)

        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, x)

    # vmap batches the recomputed convolution's backward differently: equal to float32 rounding
    assert_trees_equal(per_example(remat_blocks(net)), per_example(net), 1e-5)


def test_forward_mode_is_not_supported_without_a_policy():
    net = remat(jc.Conv(2, 1))
    _, params, state = net.init(jax.random.key(0), (-1, 2, 2, 1))
    x = jnp.ones((1, 2, 2, 1))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: net.apply(params, state, x)[0], (x,), (x,))
    with_policy = remat(jc.Conv(2, 1), jax.checkpoint_policies.nothing_saveable)
    jax.jvp(lambda x: with_policy.apply(params, state, x)[0], (x,), (x,))  # jax.checkpoint: both modes


def test_a_net_without_blocks_is_refused():
    with pytest.raises(ValueError, match=r"remat_blocks: found no block in a Serial of .*use remat\(net\)"):
        models.get("vgg11", remat=True)
    with pytest.raises(ValueError, match=r"remat='sometimes': use True \(recompute every block\) or False"):
        models.get("resnet20", remat="sometimes")


def test_summary_reads_a_rematerialised_net():
    plain = jc.summary(models.get("resnet20"), (-1, 32, 32, 3))
    wrapped = jc.summary(models.get("resnet20", remat=True), (-1, 32, 32, 3))
    assert wrapped.params == plain.params == 269_722  # He et al.'s ResNet-20, 0.27M (option A shortcuts)


def test_remat_under_mixed_precision(inputs):
    x, labels = inputs
    net = block_net()
    params, state = random_params(net, SHAPE)
    key = jax.random.key(3)
    expected = loss_and_grads(mixed_precision(net), params, state, x, labels, key)
    ours = loss_and_grads(mixed_precision(remat_blocks(net)), params, state, x, labels, key)
    assert {leaf.dtype for leaf in jax.tree.leaves(ours)} == {jnp.dtype(jnp.float32)}
    assert_trees_equal(ours, expected, 1e-6)


def test_serial_with_remat_recomputes_the_chain_with_equal_values_and_gradients(key):
    layers = (jc.Conv(4, 3, padding=1), jc.Relu, jc.Conv(4, 3, padding=1), jc.Flatten, jc.Dense(3))
    plain, rematted = jc.serial(*layers), jc.remat(jc.serial(*layers))
    assert jc.info(rematted).spec.get("remat") is True
    _, params, state = plain.init(key, (-1, 6, 6, 2))
    x = jax.random.normal(key, (2, 6, 6, 2))

    def loss(net, params):
        return jnp.sum(net.apply(params, state, x)[0] ** 2)

    np.testing.assert_array_equal(loss(plain, params), loss(rematted, params))
    for a, b in zip(
        jax.tree.leaves(jax.grad(partial(loss, plain))(params)),
        jax.tree.leaves(jax.grad(partial(loss, rematted))(params)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
