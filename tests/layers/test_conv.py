"""`jc.Conv` against independent references: a NumPy loop of the notes' definition,
``torch.nn.functional.conv{1,2,3}d``, finite differences and hand-checkable grids.

Layouts: ours are (N, *spatial, C) activations and (*F, C_in / groups, K) kernels
(HWIO); torch's are (N, C, *spatial) and (K, C_in / groups, *F) (OIHW).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as torch_f
from helpers import init_shapes
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxconv as jc

KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


# --- references ---------------------------------------------------------------------------------


def numpy_conv(x, kernel, bias, stride, pads, dilation, groups=1):
    """The notes' definition, one output at a time, for (N, *spatial, C) inputs:

    V[n, x, y, k] = sum(X_padded[n, x*S : x*S + D*(F-1)+1 : D, y*S : ..., channels of k's group] * W_k) + b_k
    """
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    rank = x.ndim - 2
    window, (in_per_group, features) = kernel.shape[:rank], kernel.shape[rank:]
    padded = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_spatial = [
        (padded.shape[1 + a] - dilation[a] * (window[a] - 1) - 1) // stride[a] + 1 for a in range(rank)
    ]
    out_per_group = features // groups
    y = np.zeros((x.shape[0], *out_spatial, features))
    for n in range(x.shape[0]):
        for position in np.ndindex(*out_spatial):
            patch = padded[
                (
                    n,
                    *tuple(
                        slice(p * s, p * s + d * (f - 1) + 1, d)
                        for p, s, d, f in zip(position, stride, dilation, window, strict=True)
                    ),
                )
            ]
            for k in range(features):
                group = k // out_per_group
                channels = slice(group * in_per_group, (group + 1) * in_per_group)
                y[(n, *position, k)] = np.sum(patch[..., channels] * kernel[..., k])
    return y + (0 if bias is None else np.asarray(bias))


TORCH_CONV = {1: torch_f.conv1d, 2: torch_f.conv2d, 3: torch_f.conv3d}


def torch_conv(x, kernel, bias, stride, pads, dilation, groups=1):
    """torch.nn.functional.conv{1,2,3}d on our layouts; asymmetric padding through F.pad."""
    rank = x.ndim - 2
    x_torch = torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())  # (N, C, *spatial)
    kernel_torch = torch.from_numpy(np.moveaxis(np.asarray(kernel), (-1, -2), (0, 1)).copy())  # OI*F
    bias_torch = None if bias is None else torch.from_numpy(np.asarray(bias))
    pad_last_axis_first = [p for lo_hi in reversed(pads) for p in lo_hi]
    x_torch = torch_f.pad(x_torch, pad_last_axis_first)
    y = TORCH_CONV[rank](x_torch, kernel_torch, bias_torch, stride, 0, dilation, groups)
    return np.moveaxis(y.numpy(), 1, -1)


def same_pads(spatial, window, stride, dilation):
    """TensorFlow/XLA 'SAME': ceil(W / S) outputs, the odd pixel of padding at the end."""
    pads = []
    for w, f, s, d in zip(spatial, window, stride, dilation, strict=True):
        total = max((math.ceil(w / s) - 1) * s + d * (f - 1) + 1 - w, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def run(net, x, params):
    """``apply`` with the given params; returns y, the params' shapes from ``init`` and its output
    shape, with ``init`` seeing x's shape with a batch of -1."""
    shape, init_params, _ = init_shapes(net, (-1, *x.shape[1:]))
    y, _ = net.apply(params, {}, x)
    return np.asarray(y), init_params, shape


def random_params(rng, window, in_per_group, features):
    kernel = rng.standard_normal((*window, in_per_group, features)).astype(np.float32)
    return {"kernel": kernel, "bias": rng.standard_normal(features).astype(np.float32)}


# --- literal grids a human can check --------------------------------------------------------------


def grid(height, width):
    return jnp.arange(height * width, dtype=jnp.float32).reshape(1, height, width, 1)


def test_ones_filter_sums_each_window_of_an_arange_grid():
    # x = [[0 1 2 3] [4 5 6 7] [8 9 10 11] [12 13 14 15]]; the top-left 3x3 window sums to 45,
    # one step right adds 3 columns' worth (+9), one step down adds 3 rows' worth (+36).
    params = {"kernel": np.ones((3, 3, 1, 1), np.float32), "bias": np.ones(1, np.float32)}
    y, _, shape = run(jc.Conv(1, 3), grid(4, 4), params)
    assert shape == (-1, 2, 2, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[46, 55], [82, 91]])


def test_centre_tap_with_stride_two_and_padding_one_subsamples():
    # Padding 1 then stride 2 with a filter that only reads its centre picks x[0::2, 0::2].
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1
    y, _, shape = run(
        jc.Conv(1, 3, stride=2, padding=1), grid(4, 5), {"kernel": kernel, "bias": np.zeros(1, np.float32)}
    )
    assert shape == (-1, 2, 3, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 2, 4], [10, 12, 14]])


def test_dilation_two_skips_every_other_input_as_in_the_notes():
    # The notes: a size-3 filter "with dilation 1" computes w0*x0 + w1*x2 + w2*x4, i.e. D = 2 here.
    x = jnp.array([1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]).reshape(1, 6, 1)
    params = {"kernel": np.array([1.0, 2.0, 3.0], np.float32).reshape(3, 1, 1)}
    y, _, _ = run(jc.Conv(1, 3, dilation=2, use_bias=False), x, params)
    np.testing.assert_array_equal(y[0, :, 0], [1 + 2 * 100 + 3 * 10000, 10 + 2 * 1000 + 3 * 100000])


def test_two_output_channels_read_all_input_channels():
    # Channel 0 is the arange grid, channel 1 is all ones; filter k adds (k + 1) * ones(2x2) over
    # channel 0 and 100 times channel 1: window sums of [[0 1 2] [3 4 5] [6 7 8]] are 8, 12, 20, 24.
    x = jnp.concatenate([grid(3, 3), jnp.ones((1, 3, 3, 1))], axis=-1)
    kernel = np.zeros((2, 2, 2, 2), np.float32)
    kernel[:, :, 0, 0], kernel[:, :, 0, 1], kernel[:, :, 1, :] = 1, 2, 100
    y, _, _ = run(jc.Conv(2, 2), x, {"kernel": kernel, "bias": np.array([0.5, -0.5], np.float32)})
    np.testing.assert_array_equal(y[0, :, :, 0], [[408.5, 412.5], [420.5, 424.5]])
    np.testing.assert_array_equal(y[0, :, :, 1], [[415.5, 423.5], [439.5, 447.5]])


# --- the NumPy loop of the definition -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spatial", "channels", "features", "options"),
    [
        ((7, 7), 3, 4, {"kernel_size": 3}),
        ((7, 6), 4, 6, {"kernel_size": (3, 2), "stride": 2, "padding": 1, "groups": 2}),
        ((9, 8), 2, 3, {"kernel_size": 2, "stride": (2, 3), "padding": ((1, 0), (0, 2)), "dilation": (2, 1)}),
        ((8, 8), 3, 6, {"kernel_size": 3, "padding": "SAME", "groups": 3, "stride": 2}),  # depthwise x2
        ((5, 9), 1, 2, {"kernel_size": (1, 4), "stride": 3, "padding": "VALID", "dilation": (1, 2)}),
        ((11,), 2, 3, {"kernel_size": 4, "stride": 3, "padding": 2}),
        ((4, 5, 6), 2, 2, {"kernel_size": (2, 3, 2), "stride": (1, 2, 2), "padding": (0, 1, 1)}),
    ],
)
def test_matches_numpy_loop_of_the_definition(spatial, channels, features, options):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *spatial, channels)).astype(np.float32)
    net = jc.Conv(features, **options)
    _, init_params, _ = init_shapes(net, x.shape)
    params = random_params(rng, init_params["kernel"].shape[:-2], *init_params["kernel"].shape[-2:])
    rank = len(spatial)
    window = params["kernel"].shape[:rank]
    stride = _per_axis(options.get("stride", 1), rank)
    dilation = _per_axis(options.get("dilation", 1), rank)
    pads = _pads(options.get("padding", 0), spatial, window, stride, dilation)
    expected = numpy_conv(
        x, **params, stride=stride, pads=pads, dilation=dilation, groups=options.get("groups", 1)
    )
    y, _, _ = run(net, x, params)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def _per_axis(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _pads(padding, spatial, window, stride, dilation):
    if padding == "SAME":
        return same_pads(spatial, window, stride, dilation)
    if padding == "VALID":
        return [(0, 0)] * len(spatial)
    return [p if isinstance(p, tuple) else (p, p) for p in _per_axis(padding, len(spatial))]


# --- random configurations against torch -----------------------------------------------------------


@st.composite
def conv_configs(draw, rank):
    """Hyperparameters and an input size that the (padded, dilated) filter fits, often not evenly."""
    window = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    stride = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dilation = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    in_per_group = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    in_per_group = 1 if depthwise and groups > 1 else in_per_group  # groups == C_in
    features = groups * draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["int", "per_axis", "pairs", "SAME", "VALID"]))
    padding = {
        "int": draw(st.integers(0, 2)),
        "per_axis": tuple(draw(st.lists(st.integers(0, 2), min_size=rank, max_size=rank))),
        "pairs": tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank)),
        "SAME": "SAME",
        "VALID": "VALID",
    }[kind]
    # 'SAME' fits any size; otherwise the input must be at least the filter's span minus the padding
    pads = [(0, 0)] * rank if kind == "SAME" else _pads(padding, [0] * rank, window, stride, dilation)
    spatial = []
    for f, d, (lo, hi) in zip(window, dilation, pads, strict=True):
        smallest = 1 if kind == "SAME" else max(1, d * (f - 1) + 1 - lo - hi)
        spatial.append(draw(st.integers(smallest, smallest + 6)))
    return {
        "spatial": tuple(spatial),
        "channels": groups * in_per_group,
        "features": features,
        "options": {
            "kernel_size": tuple(window),
            "stride": tuple(stride),
            "padding": padding,
            "dilation": tuple(dilation),
            "groups": groups,
        },
    }


def _check_against_torch(config, seed):
    rng = np.random.default_rng(seed)
    spatial, options = config["spatial"], config["options"]
    x = rng.standard_normal((2, *spatial, config["channels"])).astype(np.float32)
    params = random_params(
        rng, options["kernel_size"], config["channels"] // options["groups"], config["features"]
    )
    pads = _pads(options["padding"], spatial, options["kernel_size"], options["stride"], options["dilation"])
    expected = torch_conv(
        x,
        **params,
        stride=options["stride"],
        pads=pads,
        dilation=options["dilation"],
        groups=options["groups"],
    )
    net = jc.Conv(config["features"], **options)
    y, init_params, shape = run(net, x, params)
    assert init_params["kernel"].shape == params["kernel"].shape
    assert shape == (-1, *expected.shape[1:])
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(conv_configs(rank=2), st.integers(0, 2**16))
def test_conv2d_matches_torch(config, seed):
    _check_against_torch(config, seed)


@settings(max_examples=30, deadline=None)
@given(conv_configs(rank=1), st.integers(0, 2**16))
def test_conv1d_matches_torch(config, seed):
    _check_against_torch(config, seed)


@settings(max_examples=20, deadline=None)
@given(conv_configs(rank=3), st.integers(0, 2**16))
def test_conv3d_matches_torch(config, seed):
    _check_against_torch(config, seed)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize(
    ("spatial", "window", "dilation"), [((7, 8), (3, 4), (1, 2)), ((6, 5), (2, 2), (3, 1))]
)
def test_same_with_stride_one_matches_torch_padding_same(spatial, window, dilation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, *spatial, 2)).astype(np.float32)
    params = random_params(rng, window, 2, 3)
    x_torch = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    kernel_torch = torch.from_numpy(np.moveaxis(params["kernel"], (-1, -2), (0, 1)).copy())
    expected = torch_f.conv2d(x_torch, kernel_torch, torch.from_numpy(params["bias"]), 1, "same", dilation)
    y, _, _ = run(jc.Conv(3, window, padding="SAME", dilation=dilation), x, params)
    assert y.shape[1:3] == spatial
    np.testing.assert_allclose(y, np.moveaxis(expected.numpy(), 1, -1), rtol=1e-5, atol=1e-5)


# --- shapes: init == apply == the sizing formula ----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(conv_configs(rank=2), st.sampled_from([-1, 1, 3]))
def test_init_shape_equals_apply_shape_equals_formula(config, batch):
    spatial, options = config["spatial"], config["options"]
    pads = _pads(options["padding"], spatial, options["kernel_size"], options["stride"], options["dilation"])
    # (W - D*(F - 1) - 1 + P_lo + P_hi) // S + 1 per axis, written out here on purpose
    formula = tuple(
        (w - d * (f - 1) - 1 + lo + hi) // s + 1
        for w, f, s, d, (lo, hi) in zip(
            spatial, options["kernel_size"], options["stride"], options["dilation"], pads, strict=True
        )
    )
    sizing = tuple(
        jc.sizing.output_size(w, f, s, p, d)
        for w, f, s, p, d in zip(
            spatial, options["kernel_size"], options["stride"], pads, options["dilation"], strict=True
        )
    )
    net = jc.Conv(config["features"], **options)
    shape, params, state = init_shapes(net, (batch, *spatial, config["channels"]))
    x = jax.ShapeDtypeStruct((abs(batch), *spatial, config["channels"]), jnp.float32)
    y = jax.eval_shape(lambda params, x: net.apply(params, state, x)[0], params, x)
    assert shape == (batch, *formula, config["features"])
    assert y.shape == (abs(batch), *formula, config["features"])
    assert sizing == formula
    if options["padding"] == "SAME":
        assert formula == tuple(-(-w // s) for w, s in zip(spatial, options["stride"], strict=True))


def test_unknown_spatial_size_stays_unknown():
    shape, _, _ = init_shapes(jc.Conv(4, 3, stride=2, padding="SAME"), (None, -1, 10, 3))
    assert shape == (-1, -1, 5, 4)


def test_kernel_and_bias_shapes_follow_hwio_with_groups():
    _, params, _ = init_shapes(jc.Conv(8, (3, 5), groups=4), (-1, 9, 9, 12))
    assert params["kernel"].shape == (3, 5, 3, 8)
    assert params["bias"].shape == (8,)
    _, params, _ = init_shapes(jc.Conv(8, 3, use_bias=False), (-1, 9, 9, 12))
    assert set(params) == {"kernel"}


# --- strict sizing -----------------------------------------------------------------------------------


def test_default_floors_sizes_that_do_not_fit():
    shape, _, _ = init_shapes(jc.Conv(4, 3, stride=2), (-1, 10, 10, 1))
    assert shape == (-1, 4, 4, 4)  # (10 - 3)/2 + 1 = 4.5, floored; the last column is never seen


def test_strict_raises_with_the_formula_and_fixes_that_fit():
    with pytest.raises(jc.SizeError) as error:
        init_shapes(jc.Conv(4, 3, stride=2, strict=True), (-1, 10, 10, 1))
    message = str(error.value)
    assert message.startswith("Conv(F=3, S=2, P=0) on W=10: (W - F + 2P)/S + 1 = 4.5 is not an integer; ")
    # Every suggestion must really fit: per-side padding (0, 1) -> 5, stride 1 -> 8.
    assert "(0, 1)" in message and "would give 5" in message
    assert jc.sizing.output_size(10, 3, 2, (0, 1), strict=True) == 5
    assert "S=1 would give 8" in message
    assert jc.sizing.output_size(10, 3, 1, 0, strict=True) == 8


@pytest.mark.parametrize(
    ("options", "width"),
    [
        ({"kernel_size": 3, "stride": 2, "dilation": 2}, 10),
        ({"kernel_size": 5, "stride": 3, "padding": 1}, 13),
        ({"kernel_size": 2, "stride": 4, "padding": ((0, 1), (0, 1))}, 11),
        ({"kernel_size": 3, "stride": 6, "padding": ((0, 1), (0, 1))}, 10),
    ],
)
def test_every_suggested_fix_fits(options, width):
    with pytest.raises(jc.SizeError, match=r"is not an integer; ") as error:
        init_shapes(jc.Conv(2, strict=True, **options), (-1, width, width, 1))
    fixes = str(error.value).split("is not an integer; ")[1].split("; ")
    assert fixes
    for fix in fixes:
        claimed = int(fix.rsplit("would give ", 1)[1])
        if fix.startswith("P="):
            new = dict(options, padding=int(fix[2:].split()[0]))
        elif fix.startswith("S="):
            new = dict(options, stride=int(fix[2:].split()[0]))
        else:  # per-side padding (lo, hi)
            lo, hi = (int(v) for v in fix[fix.index("(") + 1 : fix.index(")")].split(","))
            new = dict(options, padding=((lo, hi), (lo, hi)))
        shape, _, _ = init_shapes(jc.Conv(2, strict=True, **new), (-1, width, width, 1))
        assert shape[1] == claimed, (fix, new)


def test_strict_context_applies_to_a_whole_net():
    net = jc.serial(jc.Conv(4, 3, padding=1), jc.Relu, jc.Conv(4, 3, stride=2))
    assert init_shapes(net, (-1, 10, 10, 1))[0] == (-1, 4, 4, 4)
    with jc.sizing.strict(), pytest.raises(jc.SizeError, match=r"4\.5 is not an integer") as error:
        init_shapes(net, (-1, 10, 10, 1))
    assert any("conv_2" in note for note in error.value.__notes__)
    with jc.sizing.strict():  # a layer's own strict=False wins over the block
        assert init_shapes(jc.Conv(4, 3, stride=2, strict=False), (-1, 10, 10, 1))[0] == (-1, 4, 4, 4)


def test_strict_accepts_sizes_that_fit():
    assert init_shapes(jc.Conv(4, 3, stride=2, padding=1, strict=True), (-1, 9, 9, 1))[0] == (-1, 5, 5, 4)


# --- gradients ------------------------------------------------------------------------------------------


def numerical_gradient(f, value, step=1e-6):
    """Central differences of a scalar function, one coordinate at a time (float64)."""
    value = np.asarray(value, np.float64)
    grad = np.zeros_like(value)
    for index in np.ndindex(*value.shape):
        up, down = value.copy(), value.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (f(up) - f(down)) / (2 * step)
    return grad


@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 3, "stride": 2, "padding": ((1, 0), (0, 2)), "groups": 2},
        {"kernel_size": (2, 3), "dilation": (2, 1), "padding": "SAME"},
    ],
)
def test_gradients_match_finite_differences(options):
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        net = jc.Conv(4, **options)
        x = rng.standard_normal((1, 6, 5, 4))
        _, params, _ = init_shapes(net, x.shape)
        params = {name: rng.standard_normal(p.shape) for name, p in params.items()}
        weights = rng.standard_normal(np.asarray(net.apply(params, {}, x)[0]).shape)

        @jax.jit
        def loss(x, kernel, bias):
            y, _ = net.apply({"kernel": kernel, "bias": bias}, {}, x)
            return jnp.sum(jnp.sin(y) * weights)  # non-linear, so curvature is in play

        args = (jnp.asarray(x), jnp.asarray(params["kernel"]), jnp.asarray(params["bias"]))
        grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
        assert all(g.dtype == jnp.float64 for g in grads)
        for position, grad in enumerate(grads):

            def along(value, position=position):
                changed = list(args)
                changed[position] = jnp.asarray(value)
                return float(loss(*changed))

            np.testing.assert_allclose(grad, numerical_gradient(along, args[position]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("window", "padding", "dilation"),
    [(3, ((0, 0), (0, 0)), 1), (3, ((1, 1), (2, 0)), 1), (2, ((1, 0), (0, 1)), 2)],
)
def test_input_gradient_is_a_full_convolution_with_flipped_filters(window, padding, dilation):
    # The notes: "the backward pass for a convolution (for both the data and the weights) is also
    # a convolution (but with spatially-flipped filters)". For stride 1: pad dL/dy by the filter's
    # span - 1 on every side, convolve with the filters flipped in space and with in/out channels
    # swapped, and crop the padding of the forward pass.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    kernel = rng.standard_normal((window, window, 3, 4)).astype(np.float32)
    net = jc.Conv(4, window, padding=padding, dilation=dilation, use_bias=False)
    y, _, _ = run(net, x, {"kernel": kernel})
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    grad_x = jax.grad(lambda x: jnp.sum(net.apply({"kernel": kernel}, {}, x)[0] * grad_y))(x)

    full = dilation * (window - 1)
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # (F, F, K, C_in)
    grad_padded_x = numpy_conv(grad_y, flipped, None, (1, 1), [(full, full)] * 2, (dilation, dilation))
    (top, _), (left, _) = padding
    expected = grad_padded_x[:, top : top + 6, left : left + 7]
    np.testing.assert_allclose(grad_x, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("stride", "dilation", "size"), [(1, 1, 7), (2, 1, 8), (2, 2, 9)])
def test_kernel_gradient_is_a_convolution_of_the_input_with_the_output_gradient(stride, dilation, size):
    # dL/dW[a, b, c, k] = sum_{n, i, j} X[n, i*S + a*D, j*S + b*D, c] * dL/dy[n, i, j, k]: the input,
    # with the batch as channels, convolved with dL/dy as filters dilated by S, at stride D.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, size, size, 2)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    net = jc.Conv(4, 3, stride=stride, dilation=dilation, use_bias=False)
    y, _, _ = run(net, x, {"kernel": kernel})
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    grad_kernel = jax.grad(lambda k: jnp.sum(net.apply({"kernel": k}, {}, x)[0] * grad_y))(kernel)

    as_channels = x.transpose(3, 1, 2, 0)  # (C_in, H, W, N)
    filters = grad_y.transpose(1, 2, 0, 3)  # (H_out, W_out, N, K)
    expected = numpy_conv(as_channels, filters, None, (dilation, dilation), [(0, 0)] * 2, (stride, stride))
    expected = expected[:, :3, :3].transpose(1, 2, 0, 3)  # (F, F, C_in, K); floor leaves extra rows
    np.testing.assert_allclose(grad_kernel, expected, rtol=1e-5, atol=1e-4)


# --- layouts and ranks ---------------------------------------------------------------------------------


def test_nchw_layout_gives_the_same_numbers_on_transposed_data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 8, 4)).astype(np.float32)
    params = random_params(rng, (3, 2), 2, 6)
    options = {"kernel_size": (3, 2), "stride": (2, 1), "padding": ((1, 0), (0, 1)), "groups": 2}
    nhwc, _, _ = run(jc.Conv(6, **options), x, params)

    nchw_net = jc.Conv(6, dimension_numbers=("NCHW", "OIHW", "NCHW"), **options)
    shape, init_params, _ = init_shapes(nchw_net, (-1, 4, 9, 8))
    assert init_params["kernel"].shape == (6, 2, 3, 2)
    oihw = {"kernel": params["kernel"].transpose(3, 2, 0, 1), "bias": params["bias"]}
    nchw, _ = nchw_net.apply(oihw, {}, x.transpose(0, 3, 1, 2))
    assert shape == (-1, 6, 4, 8)  # (9 + 1 - 3)//2 + 1, (8 + 1 - 2)//1 + 1
    np.testing.assert_allclose(np.asarray(nchw).transpose(0, 2, 3, 1), nhwc, rtol=1e-6, atol=1e-6)


def test_one_and_three_dimensional_kernels_and_inputs():
    _, params, _ = init_shapes(jc.Conv(5, 3), (-1, 11, 2))
    assert params["kernel"].shape == (3, 2, 5)
    shape, params, _ = init_shapes(jc.Conv(5, (1, 2, 3)), (-1, 4, 5, 6, 2))
    assert params["kernel"].shape == (1, 2, 3, 2, 5) and shape == (-1, 4, 4, 4, 5)


# --- bad input --------------------------------------------------------------------------------------------


def test_wrong_input_rank_says_which_rank():
    with pytest.raises(
        jc.ShapeError, match=r"Conv expects a rank-4 input \(N, H, W, C\), got shape \(-1, 10, 3\)"
    ):
        init_shapes(jc.Conv(4, (3, 3)), (-1, 10, 3))
    with pytest.raises(jc.ShapeError, match=r"rank-4 input \(NCHW\), got shape \(-1, 3, 8\)"):
        init_shapes(jc.Conv(4, 3, dimension_numbers=("NCHW", "OIHW", "NCHW")), (-1, 3, 8))
    _, params, _ = init_shapes(jc.Conv(4, (3, 3)), (-1, 8, 8, 3))
    with pytest.raises(jc.ShapeError, match=r"got shape \(8, 8, 3\)"):
        jc.Conv(4, (3, 3)).apply(params, {}, jnp.ones((8, 8, 3)))


def test_kernel_larger_than_padded_input():
    with pytest.raises(
        jc.SizeError,
        match=r"Conv\(F=5, S=1, P=0\) on W=3: the filter spans 5 but the padded input is only "
        r"W \+ 2P = 3; use a smaller filter or pad by at least 1 more on each side",
    ):
        init_shapes(jc.Conv(4, 5), (-1, 3, 3, 1))
    # the suggested padding is enough
    assert init_shapes(jc.Conv(4, 5, padding=1), (-1, 3, 3, 1))[0] == (-1, 1, 1, 4)
    with pytest.raises(jc.SizeError, match=r"D=3\) on W=6: the filter spans 7"):
        init_shapes(jc.Conv(4, 3, dilation=3), (-1, 6, 6, 1))


def test_channels_not_divisible_by_groups():
    with pytest.raises(
        jc.ShapeError, match=r"Conv\(groups=4\) on 6 input channels: .* divisible by groups; use groups=2"
    ):
        init_shapes(jc.Conv(4, 3, groups=4), (-1, 8, 8, 6))


def test_features_not_divisible_by_groups():
    with pytest.raises(
        ValueError, match=r"Conv\(features=6, groups=4\): features must be divisible .* features=8"
    ):
        jc.Conv(6, 3, groups=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"features": 0, "kernel_size": 3}, r"Conv: features=0 must be positive"),
        ({"features": 4, "kernel_size": 0}, r"Conv: kernel_size=0 must be positive"),
        ({"features": 4, "kernel_size": (3, 0)}, r"Conv: kernel_size=\(3, 0\) must be positive"),
        ({"features": 4, "kernel_size": 3, "stride": -1}, r"Conv: stride=-1 must be positive"),
        ({"features": 4, "kernel_size": 3, "dilation": 0}, r"Conv: dilation=0 must be positive"),
        ({"features": 4, "kernel_size": 3, "groups": 0}, r"Conv: groups=0 must be positive"),
        ({"features": 4, "kernel_size": 2.5}, r"Conv: kernel_size=2\.5 is not a size"),
        ({"features": 4, "kernel_size": ()}, r"Conv: kernel_size=\(\) is not a size"),
    ],
)
def test_non_positive_sizes_fail_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        jc.Conv(**options)


def test_per_axis_sizes_of_the_wrong_length():
    with pytest.raises(jc.ShapeError, match=r"stride=\(1, 2, 1\) has 3 entries but the input has 2 spatial"):
        init_shapes(jc.Conv(4, 3, stride=(1, 2, 1)), (-1, 8, 8, 1))


@pytest.mark.parametrize(
    ("padding", "message"),
    [
        ("FULL", r"padding='FULL' is not a mode; use 'SAME', 'VALID' or an int P"),
        ((1, 2, 3), r"padding=\(1, 2, 3\) does not fit 2 spatial axes"),
        (((1, 2, 3), (0, 0)), r"does not fit 2 spatial axes; .* 2 \(P_lo, P_hi\) pairs"),
        (-1, r"padding=-1 is negative; P must be >= 0"),
    ],
)
def test_bad_padding(padding, message):
    with pytest.raises(ValueError, match=message):
        init_shapes(jc.Conv(4, 3, padding=padding), (-1, 8, 8, 1))


def test_bad_layout():
    with pytest.raises(ValueError, match=r"dimension_numbers=\('NCHW', 'OIHW', 'NCHX'\)\) is not a layout"):
        jc.Conv(4, 3, dimension_numbers=("NCHW", "OIHW", "NCHX"))


def test_init_without_key():
    with pytest.raises(
        jc.MissingKeyError, match=r"Conv has parameters; init needs a key: net\.init\(jax\.random\.key"
    ):
        jc.Conv(4, 3).init(None, (-1, 8, 8, 1))


def test_apply_with_a_different_channel_count_than_init():
    net = jc.Conv(4, 3, groups=2)
    _, params, _ = init_shapes(net, (-1, 8, 8, 6))
    with pytest.raises(jc.ShapeError, match=r"Conv was initialised for 6 input channels but got 4"):
        net.apply(params, {}, jnp.ones((1, 8, 8, 4)))


# --- low precision ------------------------------------------------------------------------------------------


def test_bfloat16_inputs_match_float32_within_bfloat16_tolerance():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 9, 9, 4)).astype(np.float32)
    net = jc.Conv(6, 3, stride=2, padding=1, groups=2)
    params = random_params(rng, (3, 3), 2, 6)
    y16, _ = net.apply(params, {}, jnp.asarray(x, jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    # Against float32 on the same bfloat16-rounded numbers only the bfloat16 output rounding differs...
    rounded = {name: np.asarray(jnp.asarray(p, jnp.bfloat16), np.float32) for name, p in params.items()}
    x_rounded = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)
    exact = numpy_conv(x_rounded, **rounded, stride=(2, 2), pads=[(1, 1)] * 2, dilation=(1, 1), groups=2)
    y16 = np.asarray(y16, np.float32)
    np.testing.assert_allclose(y16, exact, rtol=2**-7, atol=2**-7 * np.abs(exact).max())
    # ...and against plain float32 the inputs' rounding adds a little more.
    y32, _ = net.apply(params, {}, x)
    np.testing.assert_allclose(y16, y32, rtol=2e-2, atol=2e-2 * np.abs(y32).max())
