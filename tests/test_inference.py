"""`jaxconv.inference`: BatchNorm folded into the convolution before it, and the jitted predict.

The folded nets are checked against the unfolded net applied with ``train=False`` (the reference
the folding must reproduce), and the folding formula against BatchNorm and a convolution written
in NumPy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

import jaxconv as jc
from jaxconv.core import layer
from jaxconv.inference import fold_batchnorm, folded_factors, make_predict


def with_running_stats(state, seed: int = 1):
    """``state`` with every BatchNorm's running mean in [-1, 1) and variance in [0.25, 2.25):
    the init's (0, 1) would hide a mean or a variance used in the wrong place."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        low, high = (0.25, 2.25) if path[-1].key == "var" else (-1.0, 1.0)
        return jnp.asarray(rng.uniform(low, high, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, state)


def numpy_conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A VALID, stride-1 convolution of (N, H, W, C) by an HWIO kernel, as a loop over its taps."""
    height, width = kernel.shape[:2]
    out_h, out_w = x.shape[1] - height + 1, x.shape[2] - width + 1
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            y += x[:, i : i + out_h, j : j + out_w, :] @ kernel[i, j]
    return y


def test_the_folding_formula_against_numpy():
    rng = np.random.default_rng(0)
    x, kernel, conv_bias = rng.normal(size=(2, 6, 5, 3)), rng.normal(size=(3, 2, 3, 4)), rng.normal(size=4)
    scale, shift, mean = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4)
    var, eps = rng.uniform(0.1, 2.0, size=4), 1e-3
    batchnorm_of_conv = (numpy_conv(x, kernel) + conv_bias - mean) / np.sqrt(var + eps) * scale + shift

    folded_kernel, folded_bias = folded_factors(
        {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(conv_bias, jnp.float32)},
        {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(shift, jnp.float32)},
        {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)},
        eps,
    )
    assert folded_kernel.shape == kernel.shape and folded_bias.shape == (4,)
    folded = numpy_conv(x, np.asarray(folded_kernel, np.float64)) + np.asarray(folded_bias, np.float64)
    np.testing.assert_allclose(folded, batchnorm_of_conv, rtol=1e-5, atol=1e-5)


ZOO = [  # name, input shape, BatchNorm states left after folding
    ("convnet", (3, 28, 28, 1), 0),
    ("resnet20", (2, 32, 32, 3), 0),
    ("resnet18", (2, 32, 32, 3), 0),
    ("mobilenet_v2", (2, 32, 32, 3), 0),
    ("densenet121", (1, 32, 32, 3), 120),  # pre-activation (norm -> relu -> conv): only the stem folds
]


@pytest.mark.parametrize(("name", "shape", "left"), ZOO, ids=[case[0] for case in ZOO])
def test_folded_zoo_nets_give_the_unfolded_logits(name, shape, left):
    net = jc.models.get(name, num_classes=10)
    params, state = random_params(net, shape)
    state = with_running_stats(state)
    x = jax.random.normal(jax.random.key(2), shape)
    expected = jax.jit(lambda p, s, x: net.apply(p, s, x, train=False)[0])(params, state, x)

    folded_net, folded_params, folded_state = fold_batchnorm(net, params, state)
    logits = jax.jit(lambda p, s, x: folded_net.apply(p, s, x, train=False)[0])(
        folded_params, folded_state, x
    )

    scale = float(jnp.abs(expected).max())
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * scale)
    assert len(jax.tree_util.tree_leaves(folded_state)) == 2 * left
    assert len(jax.tree_util.tree_leaves(folded_params)) < len(jax.tree_util.tree_leaves(params))


def test_a_folded_serial_keeps_its_names_and_a_conv_without_bias_gets_one():
    net = jc.serial(
        jc.named("conv", jc.Conv(4, 3, padding=1, use_bias=False)),
        jc.named("bn", jc.BatchNorm(eps=1e-3)),
        jc.Relu,
        jc.Conv(2, 1),  # no BatchNorm after it: kept
        jc.BatchNorm(),  # after the Conv: folded into conv_3
    )
    params, state = random_params(net, (2, 5, 5, 3))
    state = with_running_stats(state)
    folded_net, folded_params, folded_state = fold_batchnorm(net, params, state)

    assert set(folded_params) == {"conv", "conv_3"} and folded_state == {}
    assert set(folded_params["conv"]) == {"kernel", "bias"}
    assert [jc.info(child).kind for _, child in jc.info(folded_net).children] == [
        "FoldedConv",
        "Relu",
        "FoldedConv",
    ]
    x = jax.random.normal(jax.random.key(3), (2, 5, 5, 3))
    np.testing.assert_allclose(
        folded_net.apply(folded_params, folded_state, x)[0],
        net.apply(params, state, x, train=False)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    assert jax.tree.map(jnp.shape, folded_net.init(jax.random.key(0), (2, 5, 5, 3))[1]) == jax.tree.map(
        jnp.shape, folded_params
    )


def test_what_is_not_exact_to_fold_is_kept():
    pre_activation = jc.serial(jc.BatchNorm(), jc.Conv(4, 3, padding=1))  # the padding comes after the norm
    standardized = jc.serial(jc.Conv(4, 3, weight_standardization=True), jc.BatchNorm())
    channels_first = jc.serial(jc.Conv(4, 3, dimension_numbers=("NCHW", "OIHW", "NCHW")), jc.BatchNorm())
    for net, shape in (
        (pre_activation, (1, 5, 5, 3)),
        (standardized, (1, 5, 5, 3)),
        (channels_first, (1, 3, 5, 5)),
    ):
        params, state = random_params(net, shape)
        folded_net, folded_params, folded_state = fold_batchnorm(net, params, state)
        kinds = [jc.info(child).kind for _, child in jc.info(folded_net).children]
        assert kinds == [jc.info(child).kind for _, child in jc.info(net).children]
        assert (folded_params, folded_state) == (params, state)


def test_make_predict_folds_inside_jit_or_not():
    net = jc.models.get("resnet20", num_classes=10)
    params, state = random_params(net, (2, 32, 32, 3))
    state = with_running_stats(state)
    x = jax.random.normal(jax.random.key(4), (2, 32, 32, 3))
    expected = net.apply(params, state, x, train=False)[0]
    for fold in (True, False):
        np.testing.assert_allclose(
            make_predict(net, fold=fold)(params, state, x), expected, rtol=1e-4, atol=1e-5
        )


def test_make_predict_pools_with_reduce_window():
    """The tiled max pool is the default on CPU, for its gradient; a forward-only predict uses
    ``reduce_window`` (faster without a gradient) and gives the same logits."""
    net = jc.models.get("convnet", num_classes=10)
    params, state = random_params(net, (2, 28, 28, 1))
    x = jax.random.normal(jax.random.key(5), (2, 28, 28, 1))
    predict = make_predict(net)
    program = str(jax.make_jaxpr(predict)(params, state, x))
    assert "reduce_window_max" in program
    default = str(jax.make_jaxpr(lambda x: net.apply(params, state, x)[0])(x))
    assert ("reduce_window_max" in default) != (jax.default_backend() == "cpu")  # the tiled form
    np.testing.assert_allclose(
        predict(params, state, x), net.apply(params, state, x)[0], rtol=1e-5, atol=1e-6
    )


def test_a_net_that_is_not_a_layer_is_named():
    with pytest.raises(jc.LayerTypeError, match="fold_batchnorm: net is the constructor Conv"):
        fold_batchnorm(jc.Conv, {}, {})


def test_pieces_give_the_whole_batchs_logits():
    """A batch of 7 (prime) in pieces of 3 (padded to 9) and of 4 (padded to 8); a chunk of the
    batch's size or larger is the whole pass."""
    net = jc.models.get("resnet20", num_classes=10)
    params, state = random_params(net, (2, 32, 32, 3))
    state = with_running_stats(state)
    x = jax.random.normal(jax.random.key(6), (7, 32, 32, 3))
    expected = net.apply(params, state, x, train=False)[0]
    for chunk in (3, 4, 7, 100):
        predict = make_predict(net, chunk=chunk)
        assert predict.piece_rows(params, state, x) == (chunk if chunk < 7 else None)
        assert ("while" in predict.lower(params, state, x).as_text()) == (chunk < 7)
        np.testing.assert_allclose(predict(params, state, x), expected, rtol=1e-4, atol=1e-5)


def test_auto_pieces_where_the_pass_keeps_too_much(monkeypatch):
    """'auto' reads XLA's memory analysis of the whole pass: over `HOST_BLOCK_BYTES` of
    temporaries it runs pieces (here with the bound lowered so that a small batch crosses it)."""
    net = jc.models.get("convnet", num_classes=10)
    params, state = random_params(net, (2, 28, 28, 1))
    x = jax.random.normal(jax.random.key(7), (12, 28, 28, 1))
    whole = make_predict(net, chunk=None)
    temporaries = whole.lower(params, state, x).compile().memory_analysis().temp_size_in_bytes
    if jax.default_backend() != "cpu" or temporaries == 0:
        pytest.skip("the whole pass keeps no temporaries here")
    monkeypatch.setattr(jc.host_memory, "HOST_BLOCK_BYTES", temporaries // 2)
    predict = make_predict(net)
    assert "while" in predict.lower(params, state, x).as_text()
    np.testing.assert_allclose(predict(params, state, x), whole(params, state, x), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(jc.host_memory, "HOST_BLOCK_BYTES", temporaries)
    assert "while" not in make_predict(net).lower(params, state, x).as_text()


@pytest.mark.parametrize(
    ("count", "mib", "rows"),
    [(256, 88, 64), (250, 88, 50), (257, 88, 65), (64, 40, 32), (3, 100, 1)],
)
def test_rows_that_fit(count, mib, rows):
    """Rows that keep a piece under 24 MiB (3/4 of glibc's 32 MiB): ResNet-20's pass at batch
    256 keeps 88 MiB, so 24 / 88 * 256 = 69.8 rows fit and 64 divides 256; 257 is prime, so
    four equal pieces of 65 (the last padded by 3)."""
    assert jc.inference._rows_that_fit(count, mib * 2**20) == rows


def test_traced_or_unbatched_calls_run_the_whole_pass():
    net = jc.models.get("convnet", num_classes=10)
    params, state = random_params(net, (2, 28, 28, 1))
    x = jax.random.normal(jax.random.key(8), (4, 28, 28, 1))
    predict = make_predict(net, chunk=2)
    expected = net.apply(params, state, x, train=False)[0]
    np.testing.assert_allclose(jax.jit(predict)(params, state, x), expected, rtol=1e-5, atol=1e-6)
    batched = jax.vmap(predict, in_axes=(None, None, 0))(params, state, x[:, None])
    np.testing.assert_allclose(batched[:, 0], expected, rtol=1e-5, atol=1e-6)
    summed = jc.serial(net, layer("Sum", lambda key, shape: ((), {}, {}), lambda p, s, y, **_: (y.sum(), {})))
    params, state = random_params(summed, (2, 28, 28, 1))
    expected = summed.apply(params, state, x, train=False)[0]
    np.testing.assert_allclose(make_predict(summed, chunk=2)(params, state, x), expected, rtol=1e-5)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, "whole"])
def test_a_bad_chunk_is_named(chunk):
    with pytest.raises(ValueError, match=rf"make_predict\(chunk={chunk!r}\)"):
        make_predict(jc.models.get("convnet", num_classes=10), chunk=chunk)
