"""Per-example gradients work from day one: vmap of grad over single examples."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv as jc

NET = jc.serial(
    jc.Conv(4, 3, padding=1), jc.GroupNorm(2), jc.Relu, jc.MaxPool(2),
    jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.Relu)),
    jc.Flatten, jc.Dense(10),
)  # fmt: skip


def loss(params, state, x, y):
    logits, _ = NET.apply(params, state, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_vmap_of_grad_equals_a_loop_of_grads():
    _, params, state = NET.init(jax.random.key(0), (-1, 8, 8, 1))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
    y = jnp.arange(5) % 10
    # each example keeps a batch axis of one: (1, H, W, C) and (1,)
    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, None, 0, 0)))
    grads = per_example(params, state, x[:, None], y[:, None])
    with jax.default_matmul_precision("highest"):
        one_grad = jax.jit(jax.grad(loss))  # traced, at this precision, once for the five examples
        for i in range(5):
            expected = one_grad(params, state, x[i : i + 1], y[i : i + 1])
            jax.tree.map(
                lambda g, e, i=i: np.testing.assert_allclose(g[i], e, rtol=2e-4, atol=1e-6), grads, expected
            )
    # the mean of per-example gradients is the batch gradient
    batch = jax.jit(jax.grad(loss))(params, state, x, y)
    jax.tree.map(lambda g, b: np.testing.assert_allclose(g.mean(0), b, rtol=2e-4, atol=1e-6), grads, batch)


def test_batch_norm_refuses_per_example_gradients_in_training():
    net = jc.serial(jc.Conv(2, 3), jc.BatchNorm(), jc.Flatten, jc.Dense(3))
    _, params, state = net.init(jax.random.key(0), (-1, 5, 5, 1))

    def bn_loss(params, x):
        return net.apply(params, state, x, train=True)[0].sum()

    x = jnp.ones((4, 1, 5, 5, 1))
    with pytest.raises(jc.ShapeError, match=r"batch of one.*GroupNorm.*train=False"):
        jax.vmap(jax.grad(bn_loss), in_axes=(None, 0))(params, x)
