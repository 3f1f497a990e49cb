"""`per_example_grads` and `per_example_grad_norms` against a Python loop of single-example gradients.

The reference runs `jax.grad` of the loss on one example at a time, x[i:i+1] with
key fold_in(key, i), the documented per-example convention; every strategy must
give the same numbers under `jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import loop_of_grads

import jaxconv as jc
from jaxconv.per_example import net_loss, per_example_grad_norms, per_example_grads
from jaxconv.privacy import clipped_grad_sum, ghost_clipped_grad_sum

NUM = 5  # examples; odd, so chunks of 2 leave a remainder
NETS = {
    "conv": jc.serial(jc.Conv(3, 3, padding=1), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(4)),
    "residual": jc.serial(
        jc.Conv(4, 3, padding=1), jc.GroupNorm(2), jc.Relu,
        jc.residual(jc.serial(jc.Conv(4, 3, padding=1), jc.Relu), shortcut=jc.Conv(4, 1)),
        jc.GlobalAvgPool, jc.Dense(4),
    ),
    "dropout": jc.serial(jc.Conv(3, 3), jc.Relu, jc.Dropout(0.5), jc.Flatten, jc.Dense(4)),
}  # fmt: skip
KEY = jax.random.key(7)


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def setup(name):
    net = NETS[name]
    _, params, state = net.init(jax.random.key(0), (-1, 6, 6, 2))
    x = jax.random.normal(jax.random.key(1), (NUM, 6, 6, 2))
    y = jnp.arange(NUM) % 4
    return net_loss(net), params, state, x, y


def assert_trees_close(actual, expected, rtol=1e-4, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


@pytest.mark.parametrize("name", sorted(NETS))
def test_vmap_strategy_equals_a_loop_of_single_example_grads(name):
    loss_fn, params, state, x, y = setup(name)
    grads = jax.jit(per_example_grads(loss_fn, strategy="vmap"))(params, state, x, y, KEY)
    assert_trees_close(grads, loop_of_grads(loss_fn, params, state, x, y, KEY))


def test_every_strategy_gives_the_loop_gradients_with_dropout():
    loss_fn, params, state, x, y = setup("dropout")
    expected = loop_of_grads(loss_fn, params, state, x, y, KEY)
    for strategy, chunk_size in [("loop", None), ("chunked", 2), ("chunked", 8), ("auto", None)]:
        grads = jax.jit(per_example_grads(loss_fn, strategy=strategy, chunk_size=chunk_size))(
            params, state, x, y, KEY
        )
        assert_trees_close(grads, expected)


def test_dropout_masks_differ_between_examples_and_follow_the_key():
    loss_fn, params, state, x, _ = setup("dropout")
    same_x = jnp.broadcast_to(x[:1], x.shape)
    grads_fn = jax.jit(per_example_grads(loss_fn, strategy="vmap"))
    kernels = grads_fn(params, state, same_x, jnp.zeros(NUM, int), KEY)["dense_4"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])  # same example, different fold_in keys
    again = grads_fn(params, state, same_x, jnp.zeros(NUM, int), KEY)["dense_4"]["kernel"]
    np.testing.assert_array_equal(again, kernels)


def test_without_a_key_dropout_in_training_asks_for_one():
    loss_fn, params, state, x, y = setup("dropout")
    with pytest.raises(jc.MissingKeyError, match="needs a key"):
        per_example_grads(loss_fn, strategy="loop")(params, state, x, y)


def test_has_aux_stacks_the_aux_over_examples():
    net = NETS["conv"]
    _, params, state, x, y = setup("conv")

    def loss_with_logits(params, state, x, y, key):
        logits, _ = net.apply(params, state, x)
        return jc.losses.cross_entropy(logits, y), logits

    grads, logits = jax.jit(
        per_example_grads(loss_with_logits, strategy="chunked", chunk_size=2, has_aux=True)
    )(params, state, x, y)
    np.testing.assert_allclose(logits[:, 0], net.apply(params, state, x)[0], rtol=1e-5, atol=1e-6)
    assert grads["dense_4"]["kernel"].shape == (NUM, *params["dense_4"]["kernel"].shape)


@pytest.mark.parametrize("strategy, chunk_size", [("vmap", None), ("chunked", 2)])
def test_grad_norms_equal_numpy_norms_of_the_loop_gradients(strategy, chunk_size):
    loss_fn, params, state, x, y = setup("residual")
    expected = loop_of_grads(loss_fn, params, state, x, y, KEY)
    global_norms, layer_norms = jax.jit(
        per_example_grad_norms(loss_fn, strategy=strategy, chunk_size=chunk_size)
    )(params, state, x, y, KEY)
    flat = np.concatenate([leaf.reshape(NUM, -1) for leaf in jax.tree.leaves(expected)], axis=1)
    np.testing.assert_allclose(global_norms, np.linalg.norm(flat, axis=1), rtol=1e-5)
    conv = expected["residual_3"]["body"]["conv_0"]
    conv_norms = np.sqrt((conv["kernel"].reshape(NUM, -1) ** 2).sum(1) + (conv["bias"] ** 2).sum(1))
    np.testing.assert_allclose(layer_norms["residual_3/body/conv_0"], conv_norms, rtol=1e-5)
    assert sorted(layer_norms) == [
        "conv_0", "dense_5", "groupnorm_1", "residual_3/body/conv_0", "residual_3/shortcut",
    ]  # fmt: skip


# --- BatchNorm in training mode has no per-example gradient ---------------------------------------

BN_NET = jc.serial(jc.Conv(2, 3), jc.BatchNorm(), jc.Relu, jc.Flatten, jc.Dense(3))


@pytest.mark.parametrize(
    "make",
    [
        lambda loss_fn, net: per_example_grads(loss_fn, strategy="vmap"),
        lambda loss_fn, net: per_example_grads(loss_fn, strategy="loop"),
        lambda loss_fn, net: per_example_grad_norms(loss_fn, strategy="chunked", chunk_size=2),
        lambda loss_fn, net: clipped_grad_sum(loss_fn, 1.0, strategy="vmap"),
        lambda loss_fn, net: ghost_clipped_grad_sum(net, 1.0),
    ],
    ids=["vmap", "loop", "norms", "clipped", "ghost"],
)
def test_batch_norm_in_training_raises_a_shape_error_that_suggests_the_fixes(make):
    _, params, state = BN_NET.init(jax.random.key(0), (-1, 5, 5, 1))
    x, y = jnp.ones((4, 5, 5, 1)), jnp.arange(4) % 3
    with pytest.raises(jc.ShapeError, match=r"(?s)batch of one.*norm='group'.*train=False"):
        make(net_loss(BN_NET), BN_NET)(params, state, x, y)


def test_batch_norm_in_evaluation_mode_has_per_example_grads():
    _, params, state = BN_NET.init(jax.random.key(0), (-1, 5, 5, 1))
    loss_fn = net_loss(BN_NET, train=False)
    x, y = jax.random.normal(KEY, (NUM, 5, 5, 1)), jnp.arange(NUM) % 3
    grads = jax.jit(per_example_grads(loss_fn, strategy="vmap"))(params, state, x, y)
    assert_trees_close(grads, loop_of_grads(loss_fn, params, state, x, y, KEY))


# --- argument errors ------------------------------------------------------------------------------


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match=r"strategy='fast' is not a per-example strategy.*'chunked'"):
        per_example_grads(lambda *args: 0.0, strategy="fast")


def test_chunked_needs_a_positive_chunk_size():
    with pytest.raises(ValueError, match=r"strategy='chunked' needs chunk_size"):
        per_example_grads(lambda *args: 0.0, strategy="chunked")
    with pytest.raises(ValueError, match=r"chunk_size=0 must be a positive int"):
        per_example_grads(lambda *args: 0.0, strategy="chunked", chunk_size=0)


def test_x_and_y_must_agree_on_the_number_of_examples():
    loss_fn, params, state, x, y = setup("conv")
    with pytest.raises(ValueError, match=r"same leading example axis N.*\(5, 6, 6, 2\).*\(4,\)"):
        per_example_grads(loss_fn, strategy="vmap")(params, state, x, y[:4])


@pytest.mark.parametrize("strategy", ["auto", "loop"])
def test_out_is_written_into_and_gives_the_loop_gradients(strategy):
    """``out=`` (an earlier call's gradients) is donated: the call writes into its buffers, so
    the old arrays are gone afterwards, and the gradients are still the loop's."""
    loss_fn, params, state, x, y = setup("residual")
    grads_fn = per_example_grads(loss_fn, strategy=strategy)
    earlier = grads_fn(params, state, x, y, KEY)
    grads = grads_fn(params, state, 2 * x, y, KEY, out=earlier)
    assert_trees_close(grads, loop_of_grads(loss_fn, params, state, 2 * x, y, KEY))
    if jax.default_backend() == "cpu":
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves(earlier))
    again = jax.jit(lambda out: grads_fn(params, state, x, y, KEY, out=out), donate_argnums=0)(grads)
    assert_trees_close(again, loop_of_grads(loss_fn, params, state, x, y, KEY))


def test_an_out_of_another_shape_is_named():
    loss_fn, params, state, x, y = setup("conv")
    grads_fn = per_example_grads(loss_fn)
    earlier = grads_fn(params, state, x[:3], y[:3])
    with pytest.raises(
        ValueError,
        match=r"out\['conv_0'\]\['bias'\] is \(3, 3\) float32, this call's gradient is \(5, 3\) float32 \(N=5\)",
    ):
        grads_fn(params, state, x, y, out=earlier)
    with pytest.raises(ValueError, match="out is not a tree like params"):
        grads_fn(params, state, x, y, out={"conv_0": earlier["conv_0"]})
