"""`jc.ConvTranspose` against ``torch.nn.functional.conv_transpose{1,2}d``, against the
gradient of `jc.Conv` (a transposed convolution is the VJP of a convolution), and on a
literal 1-D example.

Kernels: ours (*F, C_in, C_out); torch's (C_in, C_out, *F).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as torch_f
from helpers import init_shapes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jaxconv as jc

KEY = jax.random.key(0)
TORCH_CONV_TRANSPOSE = {1: torch_f.conv_transpose1d, 2: torch_f.conv_transpose2d}


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def random_params(rng, window, in_channels, features):
    kernel = rng.standard_normal((*window, in_channels, features)).astype(np.float32)
    return {"kernel": kernel, "bias": rng.standard_normal(features).astype(np.float32)}


def torch_conv_transpose(x, kernel, bias, stride, pads, output_padding, dilation):
    """torch on our layouts. torch pads symmetrically; a per-side (lo, hi) padding of a transposed
    convolution crops lo outputs at the start and hi at the end, so asymmetric cases crop."""
    rank = x.ndim - 2
    x_torch = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    kernel_torch = torch.from_numpy(np.moveaxis(kernel, (-2, -1), (0, 1)).copy())  # (C_in, C_out, *F)
    symmetric = all(lo == hi for lo, hi in pads)
    padding = [lo for lo, _ in pads] if symmetric else 0
    y = TORCH_CONV_TRANSPOSE[rank](
        x_torch, kernel_torch, torch.from_numpy(bias), stride, padding, output_padding, 1, dilation
    ).numpy()
    if not symmetric:
        y = y[
            (slice(None), slice(None), *(slice(lo, y.shape[2 + a] - hi) for a, (lo, hi) in enumerate(pads)))
        ]
    return np.moveaxis(y, 1, -1)


def test_literal_one_dimensional_example():
    # Each input scatters a copy of the kernel scaled by itself, S = 2 apart:
    # 1*[1 10 100] at 0, 2*[1 10 100] at 2, 3*[1 10 100] at 4.
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    params = {"kernel": np.array([1.0, 10.0, 100.0], np.float32).reshape(3, 1, 1)}
    net = jc.ConvTranspose(1, 3, stride=2, use_bias=False)
    y, _ = net.apply(params, {}, x)
    np.testing.assert_array_equal(y[0, :, 0], [1, 10, 102, 20, 203, 30, 300])
    # padding crops: P = 1 drops the first and last output
    y, _ = jc.ConvTranspose(1, 3, stride=2, padding=1, use_bias=False).apply(params, {}, x)
    np.testing.assert_array_equal(y[0, :, 0], [10, 102, 20, 203, 30])


@st.composite
def transpose_configs(draw, rank):
    window = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    stride = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilation = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)]
    if draw(st.booleans()):
        pads = [(p, p) for p in draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank))]
    else:
        pads = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank)]
    spatial = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    out = [
        (w - 1) * s - lo - hi + d * (f - 1) + 1 + e
        for w, f, s, d, (lo, hi), e in zip(
            spatial, window, stride, dilation, pads, output_padding, strict=True
        )
    ]
    assume(min(out) >= 1)
    return {
        "spatial": tuple(spatial),
        "out": tuple(out),
        "kernel_size": tuple(window),
        "stride": tuple(stride),
        "dilation": tuple(dilation),
        "pads": tuple(pads),
        "output_padding": tuple(output_padding),
    }


def _check_against_torch(config, seed):
    rng = np.random.default_rng(seed)
    in_channels, features = rng.integers(1, 4, size=2)
    x = rng.standard_normal((2, *config["spatial"], in_channels)).astype(np.float32)
    params = random_params(rng, config["kernel_size"], in_channels, features)
    expected = torch_conv_transpose(
        x, **params, stride=config["stride"], pads=config["pads"],
        output_padding=config["output_padding"], dilation=config["dilation"],
    )  # fmt: skip
    net = jc.ConvTranspose(
        int(features),
        config["kernel_size"],
        stride=config["stride"],
        padding=config["pads"],
        output_padding=config["output_padding"],
        dilation=config["dilation"],
    )
    shape, init_params, _ = init_shapes(net, (-1, *x.shape[1:]))
    y, _ = net.apply(params, {}, x)
    assert init_params["kernel"].shape == params["kernel"].shape
    assert shape == (-1, *config["out"], features) and y.shape == expected.shape == (2, *shape[1:])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(transpose_configs(rank=2), st.integers(0, 2**16))
def test_conv_transpose2d_matches_torch(config, seed):
    _check_against_torch(config, seed)


@settings(max_examples=25, deadline=None)
@given(transpose_configs(rank=1), st.integers(0, 2**16))
def test_conv_transpose1d_matches_torch(config, seed):
    _check_against_torch(config, seed)


@settings(max_examples=30, deadline=None)
@given(transpose_configs(rank=2))
def test_init_shape_is_the_transpose_formula(config):
    net = jc.ConvTranspose(
        3,
        config["kernel_size"],
        stride=config["stride"],
        padding=config["pads"],
        output_padding=config["output_padding"],
        dilation=config["dilation"],
    )
    shape, _, _ = init_shapes(net, (-1, *config["spatial"], 2))
    formula = tuple(
        jc.sizing.transpose_output_size(w, f, s, p, d, e)
        for w, f, s, p, d, e in zip(
            config["spatial"],
            config["kernel_size"],
            config["stride"],
            config["pads"],
            config["dilation"],
            config["output_padding"],
            strict=True,
        )
    )
    assert shape == (-1, *config["out"], 3) and formula == config["out"]


@pytest.mark.parametrize(
    ("spatial", "kernel_size", "stride", "dilation"),
    [
        ((4, 5), 3, 2, 1),
        ((3, 3), (4, 2), (2, 2), 1),
        ((5, 2), 2, 2, 1),
        ((2, 3), 3, 3, (2, 1)),
        ((3, 4), 1, 1, 1),
    ],
)
def test_same_gives_w_times_s_and_is_the_gradient_of_a_same_conv(spatial, kernel_size, stride, dilation):
    # A 'SAME' conv at stride S maps W*S to W; the transposed conv is its VJP: W back to W*S.
    rng = np.random.default_rng(0)
    conv = jc.Conv(2, kernel_size, stride=stride, padding="SAME", dilation=dilation, use_bias=False)
    transpose = jc.ConvTranspose(
        3, kernel_size, stride=stride, padding="SAME", dilation=dilation, use_bias=False
    )
    strides = (stride,) * 2 if isinstance(stride, int) else stride
    big = tuple(w * s for w, s in zip(spatial, strides, strict=True))
    assert init_shapes(transpose, (-1, *spatial, 2))[0] == (-1, *big, 3)
    kernel = rng.standard_normal(init_shapes(conv, (-1, *big, 3))[1]["kernel"].shape).astype(np.float32)
    y = rng.standard_normal((2, *spatial, 2)).astype(np.float32)

    _, vjp = jax.vjp(lambda x: conv.apply({"kernel": kernel}, {}, x)[0], jnp.zeros((2, *big, 3)))
    (expected,) = vjp(y)
    got, _ = transpose.apply({"kernel": kernel.swapaxes(-1, -2)}, {}, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("padding", "output_padding"), [(0, 0), (1, 1), (((2, 0), (0, 1)), (0, 1))])
def test_is_the_gradient_of_a_strided_conv(padding, output_padding):
    rng = np.random.default_rng(1)
    conv = jc.Conv(4, 3, stride=2, padding=padding, use_bias=False)
    transpose = jc.ConvTranspose(
        3, 3, stride=2, padding=padding, output_padding=output_padding, use_bias=False
    )
    shape, params, _ = init_shapes(transpose, (-1, 4, 5, 4))
    kernel = rng.standard_normal(params["kernel"].shape).astype(np.float32)  # (F, F, 4, 3)
    y = rng.standard_normal((2, 4, 5, 4)).astype(np.float32)
    x_shape = (2, *shape[1:])
    assert init_shapes(conv, x_shape)[0][1:3] == (4, 5)  # the conv maps the output back to the input

    _, vjp = jax.vjp(lambda x: conv.apply({"kernel": kernel.swapaxes(-1, -2)}, {}, x)[0], jnp.zeros(x_shape))
    (expected,) = vjp(y)
    got, _ = transpose.apply({"kernel": kernel}, {}, y)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_match_float32_within_bfloat16_tolerance():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    params = random_params(rng, (3, 3), 3, 4)
    net = jc.ConvTranspose(4, 3, stride=2, padding=1)
    y16, _ = net.apply(params, {}, jnp.asarray(x, jnp.bfloat16))
    y32, _ = net.apply(params, {}, x)
    assert y16.dtype == jnp.bfloat16 and y32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=2e-2, atol=2e-2 * np.abs(y32).max())


# --- bad input ----------------------------------------------------------------------------------------------


def test_output_padding_must_be_smaller_than_stride_or_dilation():
    with pytest.raises(
        ValueError,
        match=r"ConvTranspose\(output_padding=2\) must be smaller than the stride \(2, 2\) or the dilation",
    ):
        init_shapes(jc.ConvTranspose(3, 3, stride=2, output_padding=2), (-1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"output_padding=-1 must be >= 0"):
        init_shapes(jc.ConvTranspose(3, 3, stride=2, output_padding=-1), (-1, 4, 4, 1))
    with pytest.raises(
        jc.ShapeError, match=r"output_padding=\(1,\) has 1 entries but the input has 2 spatial axes"
    ):
        init_shapes(jc.ConvTranspose(3, 3, stride=2, output_padding=(1,)), (-1, 4, 4, 1))


def test_padding_that_leaves_no_output():
    with pytest.raises(
        jc.ShapeError,
        match=r"= \(-3, -3\) with padding .*; the padding per axis \(P_lo \+ P_hi\) must be at most \(2, 2\)",
    ):
        init_shapes(jc.ConvTranspose(3, 1, padding=3), (-1, 3, 3, 1))
    assert init_shapes(jc.ConvTranspose(3, 1, padding=((1, 1), (2, 0))), (-1, 3, 3, 1))[0] == (-1, 1, 1, 3)


def test_same_needs_a_filter_at_least_as_wide_as_the_stride():
    with pytest.raises(
        ValueError, match=r"padding='SAME'\) needs the filter \(2, 2\) to span at least the stride"
    ):
        init_shapes(jc.ConvTranspose(3, 2, stride=3, padding="SAME"), (-1, 4, 4, 1))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"features": 0, "kernel_size": 3}, ValueError, r"ConvTranspose: features=0 must be positive"),
        ({"features": 2, "kernel_size": 0}, ValueError, r"ConvTranspose: kernel_size=0 must be positive"),
        (
            {"features": 2, "kernel_size": 3, "stride": -1},
            ValueError,
            r"ConvTranspose: stride=-1 must be positive",
        ),
        ({"features": 2, "kernel_size": 3, "padding": "FULL"}, ValueError, r"padding='FULL' is not a mode"),
    ],
)
def test_bad_hyperparameters(options, error, message):
    with pytest.raises(error, match=message):
        init_shapes(jc.ConvTranspose(**options), (-1, 4, 4, 1))


def test_wrong_rank_channels_and_key():
    with pytest.raises(
        jc.ShapeError, match=r"ConvTranspose expects a rank-4 input \(N, H, W, C\), got shape"
    ):
        init_shapes(jc.ConvTranspose(3, (3, 3)), (-1, 4, 1))
    net = jc.ConvTranspose(3, 3)
    _, params, _ = init_shapes(net, (-1, 4, 4, 2))
    with pytest.raises(jc.ShapeError, match=r"ConvTranspose was initialised for 2 input channels but got 5"):
        net.apply(params, {}, jnp.ones((1, 4, 4, 5)))
    with pytest.raises(jc.MissingKeyError, match=r"ConvTranspose has parameters; init needs a key"):
        net.init(None, (-1, 4, 4, 2))
