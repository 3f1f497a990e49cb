"""Normalisation layers against `torch.nn.functional`, NumPy loops and finite differences.

torch is channels-first, so (N, *spatial, C) inputs are moved to (N, C, *spatial)
for it and back. Conventions that differ: our BatchNorm ``momentum`` m is torch's
``1 - m``; our LRN ``alpha`` is the paper's, torch's is ``alpha * size``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jaxconv as jc


def channels_first(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())


def channels_last(y: torch.Tensor) -> np.ndarray:
    return np.moveaxis(y.numpy(), 1, -1)


def torch_affine(params) -> tuple[torch.Tensor, torch.Tensor]:
    """Our ``scale`` and ``bias`` as torch's ``weight`` and ``bias``."""
    return torch.tensor(np.array(params["scale"])), torch.tensor(np.array(params["bias"]))


def random_input(shape, seed=0, loc=0.0, scale=1.0) -> np.ndarray:
    """Per-channel shifted and scaled normal values, so normalisation has work to do."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    return (rng.normal(size=shape) * rng.uniform(0.5, 2.0, channels) * scale + loc).astype(np.float32)


def random_affine(shape, seed=1) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "scale": jnp.asarray(rng.uniform(0.5, 1.5, shape), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=shape), jnp.float32),
    }


# --- BatchNorm --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 3), (8, 5, 4), (6, 4, 5, 3), (4, 3, 3, 2, 2)])
def test_batch_norm_matches_torch_over_several_steps(shape):
    momentum, eps = 0.8, 1e-3
    net = jc.BatchNorm(momentum=momentum, eps=eps)
    _, params, state = net.init(None, (-1, *shape[1:]))
    params = random_affine(shape[-1])
    weight, bias = torch_affine(params)
    running_mean, running_var = torch.zeros(shape[-1]), torch.ones(shape[-1])

    with jax.default_matmul_precision("highest"):
        for step in range(4):
            x = random_input(shape, seed=step, loc=step - 1.5, scale=step + 1)
            y, state = net.apply(params, state, jnp.asarray(x), train=True)
            expected = F.batch_norm(
                channels_first(x), running_mean, running_var, weight, bias, True, 1 - momentum, eps
            )  # updates running_mean and running_var in place, with the unbiased variance
            np.testing.assert_allclose(y, channels_last(expected), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(state["mean"], running_mean.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state["var"], running_var.numpy(), rtol=1e-5, atol=1e-6)

        x = random_input(shape, seed=10, loc=1.0)
        y, eval_state = net.apply(params, state, jnp.asarray(x), train=False)
    expected = F.batch_norm(channels_first(x), running_mean, running_var, weight, bias, False, 0.0, eps)
    np.testing.assert_allclose(y, channels_last(expected), rtol=1e-4, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, eval_state, state)


def test_batch_norm_running_statistics_by_hand():
    # per channel: values 1, 3 (mean 2, biased var 1, unbiased var 2) and 0, 0 (mean 0, var 0)
    x = jnp.array([[1.0, 0.0], [3.0, 0.0]])
    net = jc.BatchNorm(momentum=0.75, eps=1e-5)
    _, params, state = net.init(None, (-1, 2))
    y, state = net.apply(params, state, x, train=True)
    np.testing.assert_allclose(state["mean"], [0.25 * 2, 0.0])
    np.testing.assert_allclose(state["var"], [0.75 * 1 + 0.25 * 2, 0.75 * 1 + 0.25 * 0])
    np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)], rtol=1e-6)
    np.testing.assert_array_equal(y[:, 1], [0.0, 0.0])


@pytest.mark.parametrize("groups", [2, 8])
def test_batch_norm_axis_name_under_vmap_equals_one_big_batch(groups):
    x = random_input((8, 5, 5, 3), seed=3, loc=2.0)
    net = jc.BatchNorm(momentum=0.9, axis_name="batch")
    _, _, state = net.init(None, (-1, 5, 5, 3))
    params = random_affine(3)
    big, big_state = jc.BatchNorm(momentum=0.9).apply(params, state, jnp.asarray(x), train=True)

    def shard(xs):
        return net.apply(params, state, xs, train=True)

    split, split_state = jax.vmap(shard, axis_name="batch")(jnp.asarray(x).reshape(groups, -1, 5, 5, 3))
    np.testing.assert_allclose(split.reshape(x.shape), big, rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):  # every shard holds the global statistics
        np.testing.assert_allclose(
            split_state[name], np.broadcast_to(big_state[name], (groups, 3)), rtol=1e-5
        )


def test_batch_norm_batch_of_one_in_training_raises():
    net = jc.BatchNorm()
    _, params, state = net.init(None, (-1, 4, 4, 3))
    x = jnp.ones((1, 4, 4, 3))
    with pytest.raises(jc.ShapeError, match=r"batch of one.*GroupNorm.*train=False"):
        net.apply(params, state, x, train=True)
    with pytest.raises(jc.ShapeError, match="batch of one"):  # per-example vmap keeps a batch of one
        jax.vmap(lambda e: net.apply(params, state, e, train=True))(jnp.ones((4, 1, 4, 4, 3)))
    y, _ = net.apply(params, state, x, train=False)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_keeps_bfloat16(train):
    net = jc.BatchNorm()
    _, params, state = net.init(None, (-1, 4, 4, 3))
    x = random_input((4, 4, 4, 3), loc=1.0)
    y, new_state = net.apply(params, state, jnp.asarray(x, jnp.bfloat16), train=train)
    reference, _ = net.apply(params, state, jnp.asarray(x), train=train)
    assert y.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state))
    np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: jc.BatchNorm(momentum=1.0), ValueError, r"momentum=1.0\): momentum must be in \[0, 1\)"),
        (lambda: jc.BatchNorm(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: jc.BatchNorm(eps=0.0), ValueError, "BatchNorm: eps=0.0 must be positive"),
        (lambda: jc.BatchNorm().init(None, (-1,)), jc.ShapeError, "BatchNorm expects .* at least 2 axes"),
    ],
)
def test_batch_norm_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- LocalResponseNorm ------------------------------------------------------------------------

LRN_CASES = [  # (size, alpha, beta, k, input amplitude): AlexNet's first, with AlexNet-sized activations
    (5, 1e-4, 0.75, 2.0, 30.0),
    (3, 1e-2, 0.5, 1.0, 3.0),
    (4, 1e-3, 1.0, 0.5, 5.0),  # even size: one more neighbour below than above, as torch
    (1, 0.1, 0.75, 1.0, 2.0),
    (7, 2e-3, 0.75, 1.0, 10.0),
]


@pytest.mark.parametrize(("size", "alpha", "beta", "k", "amplitude"), LRN_CASES)
@pytest.mark.parametrize("shape", [(2, 5, 5, 16), (2, 7, 6)])
def test_local_response_norm_matches_torch(size, alpha, beta, k, amplitude, shape):
    x = random_input(shape, scale=amplitude)
    net = jc.LocalResponseNorm(size, alpha, beta, k)
    out_shape, _, _ = net.init(None, x.shape)
    y, _ = net.apply({}, {}, jnp.asarray(x))
    assert out_shape == y.shape == x.shape
    expected = F.local_response_norm(channels_first(x), size, alpha=alpha * size, beta=beta, k=k)
    np.testing.assert_allclose(y, channels_last(expected), rtol=1e-5, atol=1e-6)


def alexnet_lrn_loop(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Krizhevsky et al. (2012), section 3.3, written out channel by channel:

    b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2) ** beta
    """
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        total = 0.0
        for j in range(max(0, i - n // 2), min(channels - 1, i + n // 2) + 1):
            total = total + a[..., j].astype(np.float64) ** 2
        b[..., i] = a[..., i] / (k + alpha * total) ** beta
    return b


@pytest.mark.parametrize(("size", "alpha", "beta", "k", "amplitude"), [c for c in LRN_CASES if c[0] % 2])
def test_local_response_norm_matches_the_alexnet_formula(size, alpha, beta, k, amplitude):
    x = random_input((2, 3, 4, 12), seed=5, scale=amplitude)
    y, _ = jc.LocalResponseNorm(size, alpha, beta, k).apply({}, {}, jnp.asarray(x))
    np.testing.assert_allclose(y, alexnet_lrn_loop(x, size, alpha, beta, k), rtol=1e-5, atol=1e-6)


def test_local_response_norm_literal():
    # one position, channels [1, 2, 3], size 3: sums of squares over neighbours are 5, 14, 13
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 1, 3)
    y, _ = jc.LocalResponseNorm(size=3, alpha=1.0, beta=1.0, k=1.0).apply({}, {}, x)
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: jc.LocalResponseNorm(size=0), ValueError, "LocalResponseNorm: size=0 must be positive"),
        (lambda: jc.LocalResponseNorm(k=0.0), ValueError, "LocalResponseNorm: k=0.0 must be positive"),
        (lambda: jc.LocalResponseNorm().init(None, (-1,)), jc.ShapeError, "at least 2 axes"),
    ],
)
def test_local_response_norm_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- LayerNorm and GroupNorm ------------------------------------------------------------------


@pytest.mark.parametrize(("axis", "normalized"), [(-1, 1), ((1, 2, 3), 3), ((-3, -2, -1), 3)])
def test_layer_norm_matches_torch(axis, normalized):
    x = random_input((3, 4, 5, 6), loc=2.0)
    net = jc.LayerNorm(eps=1e-4, axis=axis)
    out_shape, params, _ = net.init(None, (-1, *x.shape[1:]))
    assert params["scale"].shape == x.shape[-normalized:]
    params = random_affine(x.shape[-normalized:])
    y, _ = net.apply(params, {}, jnp.asarray(x))
    assert out_shape == (-1, *y.shape[1:])
    weight, bias = torch_affine(params)
    expected = F.layer_norm(torch.from_numpy(x), x.shape[-normalized:], weight, bias, eps=1e-4)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_layer_norm_over_spatial_axes_matches_numpy():
    x = random_input((3, 4, 5, 6), loc=-1.0).astype(np.float64)
    params = random_affine((4, 5))
    y, _ = jc.LayerNorm(axis=(1, 2)).apply(params, {}, jnp.asarray(x, jnp.float32))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    scale, bias = (np.asarray(params[k])[None, :, :, None] for k in ("scale", "bias"))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("axis", "shape", "error", "match"),
    [
        (0, (-1, 4, 5), ValueError, r"LayerNorm\(axis=0\) would normalise across the batch axis"),
        ((1, -3), (-1, 4, 5), ValueError, "across the batch axis"),
        (
            3,
            (-1, 4, 5),
            jc.ShapeError,
            r"LayerNorm\(axis=3\) on a rank-3 input .* axes must lie in \[-3, 2\]",
        ),
        ((1, -4), (-1, 4, 5), jc.ShapeError, r"axes must lie in \[-3, 2\]"),
        (1, (-1, -1, 5), jc.ShapeError, "needs fixed sizes along the normalised axes"),
    ],
)
def test_layer_norm_bad_axes(axis, shape, error, match):
    with pytest.raises(error, match=match):
        jc.LayerNorm(axis=axis).init(None, shape)


@pytest.mark.parametrize(
    ("shape", "groups"), [((2, 5, 6, 4), 1), ((2, 5, 6, 4), 2), ((2, 5, 6, 4), 4), ((3, 7, 6), 3)]
)
def test_group_norm_matches_torch(shape, groups):
    x = random_input(shape, loc=1.0)
    net = jc.GroupNorm(groups, eps=1e-4)
    out_shape, _, _ = net.init(None, (-1, *shape[1:]))
    params = random_affine(shape[-1])
    y, _ = net.apply(params, {}, jnp.asarray(x))
    assert out_shape == (-1, *y.shape[1:])
    weight, bias = torch_affine(params)
    expected = F.group_norm(channels_first(x), groups, weight, bias, eps=1e-4)
    np.testing.assert_allclose(y, channels_last(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("groups", "shape", "error", "match"),
    [
        (3, (-1, 4, 4, 4), jc.ShapeError, r"GroupNorm\(groups=3\) on 4 channels: .* try groups=1"),
        (4, (-1, 4, 4, 6), jc.ShapeError, "channels must be divisible by groups; try groups=2"),
        (2, (-1, 4), jc.ShapeError, "GroupNorm expects .* at least 3 axes"),
    ],
)
def test_group_norm_bad_groups(groups, shape, error, match):
    with pytest.raises(error, match=match):
        jc.GroupNorm(groups).init(None, shape)


def test_group_norm_nonpositive_groups():
    with pytest.raises(ValueError, match="GroupNorm: groups=0 must be positive"):
        jc.GroupNorm(0)


# --- float64 and finite differences -----------------------------------------------------------


def affine64(shape, seed=1):
    return {k: jnp.asarray(v, jnp.float64) for k, v in random_affine(shape, seed).items()}


def test_float64_inputs_are_normalised_in_float64():
    """Statistics are computed in at least float32: float64 stays float64, to ~1e-12."""
    x = random_input((4, 3, 3, 4), loc=1e3).astype(np.float64)  # a large mean: float32 would lose digits
    with jax.enable_x64(True):
        params = affine64(4)
        weight, bias = torch_affine(params)
        nchw = channels_first(x)
        cases = [
            (jc.BatchNorm(), params, channels_last(F.batch_norm(nchw, None, None, weight, bias, True))),
            (jc.GroupNorm(2), params, channels_last(F.group_norm(nchw, 2, weight, bias))),
            (jc.LayerNorm(), params, F.layer_norm(torch.from_numpy(x), (4,), weight, bias).numpy()),
            (
                jc.LocalResponseNorm(3, 1e-4),
                {},
                channels_last(F.local_response_norm(nchw, 3, 3e-4, 0.75, 2.0)),
            ),
        ]
        for net, net_params, expected in cases:
            _, _, state = net.init(None, x.shape)
            y, _ = net.apply(net_params, state, jnp.asarray(x), train=True)
            assert y.dtype == jnp.float64
            np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-8)


def test_one_pass_statistics_keep_float32_digits_under_a_large_mean():
    """The moments are computed in one pass about a shift taken from the data: with a mean 10^4
    times the spread, float32 outputs still match float64 PyTorch on the same values, where the
    unshifted E[x^2] - E[x]^2 in float32 is wrong in its first digit."""
    x = random_input((16, 4, 4, 4), loc=1e4)
    naive = (
        np.mean(x**2, axis=(0, 1, 2), dtype=np.float32) - np.mean(x, axis=(0, 1, 2), dtype=np.float32) ** 2
    )
    assert np.max(np.abs(naive / x.astype(np.float64).var(axis=(0, 1, 2)) - 1)) > 0.1  # a test that can fail
    params = random_affine(4)
    weight, bias = (tensor.double() for tensor in torch_affine(params))
    nchw = channels_first(x).double()
    cases = [
        (jc.BatchNorm(), channels_last(F.batch_norm(nchw, None, None, weight, bias, True))),
        (jc.GroupNorm(2), channels_last(F.group_norm(nchw, 2, weight, bias))),
        (jc.LayerNorm(), F.layer_norm(torch.from_numpy(x).double(), (4,), weight, bias).numpy()),
    ]
    for net, expected in cases:
        _, _, state = net.init(None, x.shape)
        y, _ = net.apply(params, state, jnp.asarray(x), train=True)
        # x * multiplier + shift of 10^4-sized terms keeps float32's ~2e-3 there; a variance off by
        # 10% would move outputs of up to 3 by 0.15
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-2)


GRAD_CASES = {
    "batch_norm": (jc.BatchNorm(eps=1e-3), (6, 3, 3, 4), True),
    "batch_norm_dense": (jc.BatchNorm(), (8, 5), True),
    "layer_norm": (jc.LayerNorm(), (3, 4, 5, 6), True),
    "layer_norm_volume": (jc.LayerNorm(axis=(1, 2, 3)), (2, 3, 4, 5), True),
    "group_norm": (jc.GroupNorm(2), (3, 4, 5, 6), True),
    "instance_norm": (jc.GroupNorm(6), (2, 3, 3, 6), True),
    "lrn_alexnet": (jc.LocalResponseNorm(5, 1e-4, 0.75, 2.0), (2, 3, 3, 8), False),
    "lrn_strong": (jc.LocalResponseNorm(3, 0.1, 0.5, 1.0), (2, 3, 3, 6), False),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_finite_difference_gradients(name):
    """Gradients wrt the input and, in training mode, scale and bias, against central differences."""
    net, shape, affine = GRAD_CASES[name]
    with jax.enable_x64(True):
        _, params, state = net.init(None, shape)
        x = jnp.asarray(random_input(shape, loc=0.5, scale=10.0 if not affine else 1.0), jnp.float64)
        normalized = params["scale"].shape if affine else None

        def output(x, scale, bias):
            layer_params = {"scale": scale, "bias": bias} if affine else {}
            return net.apply(layer_params, state, x, train=True)[0]

        scale, bias = affine64(normalized).values() if affine else (jnp.zeros(()), jnp.zeros(()))
        check_grads(jax.jit(output), (x, scale, bias), order=1, modes=("rev",), eps=1e-5)


def test_local_response_norm_of_integers_is_computed_in_floats():
    y, _ = jc.LocalResponseNorm().apply({}, {}, jnp.full((1, 1, 1, 3), 3, jnp.int32))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    # size 5 covers all three channels: each sees 3 squares of 3
    np.testing.assert_allclose(y, np.full((1, 1, 1, 3), 3 / (2 + 1e-4 * 27) ** 0.75), rtol=1e-6)
