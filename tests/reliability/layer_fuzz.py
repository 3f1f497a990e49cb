"""A seeded fuzzer of sliding-layer configurations: Conv, ConvTranspose, MaxPool and AvgPool on
random inputs, valid and invalid.

Each case's expected output shape comes from the frameworks' documented formulas, written out
here (PyTorch's ``Conv2d``/``ConvTranspose2d``/``MaxPool2d``/``AvgPool2d`` shape rules, with
TensorFlow's 'SAME'), never from jaxconv's sizing module; a configuration the rules call invalid
(a size <= 0, a negative padding, an output smaller than 1, a window of only padding) must be
refused at construction or ``init`` with an error that names the layer. `check` says what
happened to one case; `tests/reliability/test_fuzz.py` runs 1,000 cases and
``benchmarks/fuzz_layers.py`` 10,000.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

import jaxconv as jc

KINDS = ("Conv", "ConvTranspose", "MaxPool", "AvgPool")
INVALID_SIZES = (0, -2, -5)

Case = dict[str, Any]


def random_case(rng: np.random.Generator) -> Case:
    """One configuration: mostly valid sizes, now and then a size <= 0 or a negative padding."""
    kind = KINDS[rng.integers(len(KINDS))]
    rank = int(rng.integers(1, 3))
    spatial = [int(rng.integers(1, 13)) for _ in range(rank)]
    channels = int(rng.integers(1, 4))
    if rng.random() < 0.06:
        spatial[rng.integers(rank)] = int(rng.choice(INVALID_SIZES))
    if rng.random() < 0.03:
        channels = int(rng.choice(INVALID_SIZES))
    padding: int | str = int(rng.integers(-1, 4)) if rng.random() < 0.08 else int(rng.integers(0, 3))
    if rng.random() < 0.15:
        padding = str(rng.choice(["SAME", "VALID"]))
    return {
        "kind": kind,
        "shape": (2, *spatial, channels),
        "window": int(rng.integers(1, 5)),
        "stride": int(rng.integers(1, 4)),
        "dilation": int(rng.integers(1, 3)) if rng.random() < 0.4 else 1,
        "padding": padding,
        "ceil_mode": bool(rng.random() < 0.3) and kind in ("MaxPool", "AvgPool"),
        "count_include_pad": bool(rng.random() < 0.5),
        "output_padding": int(rng.integers(0, 3)) if kind == "ConvTranspose" else 0,
        "features": int(rng.integers(1, 4)),
    }


def build(case: Case) -> jc.Layer:
    kind, window, stride, padding, dilation = (
        case[k] for k in ("kind", "window", "stride", "padding", "dilation")
    )
    if kind == "Conv":
        return jc.Conv(case["features"], window, stride, padding, dilation)
    if kind == "ConvTranspose":
        return jc.ConvTranspose(case["features"], window, stride, padding, case["output_padding"], dilation)
    if kind == "MaxPool":
        return jc.MaxPool(window, stride, padding, ceil_mode=case["ceil_mode"], dilation=dilation)
    return jc.AvgPool(
        window, stride, padding, case["count_include_pad"], ceil_mode=case["ceil_mode"], dilation=dilation
    )


def expected_shape(case: Case) -> tuple[int, ...] | None:
    """The output shape by the documented formulas; None where the configuration is invalid."""
    n, *spatial, channels = case["shape"]
    kind, F, S, P, D = (case[k] for k in ("kind", "window", "stride", "padding", "dilation"))
    span = D * (F - 1) + 1
    if channels < 1 or min(spatial) < 1 or case["features"] < 1 or (isinstance(P, int) and P < 0):
        return None
    if case["ceil_mode"] and isinstance(P, str):
        return None
    out = [_one_axis(kind, W, F, S, P, D, span, case) for W in spatial]
    if None in out:
        return None
    return (n, *out, case["features"] if kind.startswith("Conv") else channels)


def _one_axis(kind: str, W: int, F: int, S: int, P: int | str, D: int, span: int, case: Case) -> int | None:
    if kind == "ConvTranspose":  # torch.nn.ConvTranspose2d's shape rule; 'SAME' gives W*S
        if case["output_padding"] >= max(S, D):
            return None
        if P == "SAME":
            return W * S + case["output_padding"] if span >= S else None
        pad = 0 if P == "VALID" else P
        out = (W - 1) * S - 2 * pad + span + case["output_padding"]
        return out if out >= 1 else None
    if P == "SAME":  # TensorFlow: ceil(W / S), padding (out - 1)*S + span - W split low/high
        total = max((math.ceil(W / S) - 1) * S + span - W, 0)
        if kind != "Conv" and total - total // 2 >= span:
            return None
        return math.ceil(W / S)
    pad = 0 if P == "VALID" else P
    if kind != "Conv" and pad >= span:  # a window of nothing but padding
        return None
    if case["ceil_mode"]:  # torch.nn.MaxPool2d: ceil, minus a last window starting in the padding
        out = math.ceil((W + 2 * pad - span) / S) + 1
        out = out - 1 if (out - 1) * S >= W + pad else out
        return out if out >= 1 else None
    if W + 2 * pad < span:
        return None
    return (W + 2 * pad - span) // S + 1


def check(case: Case, key: jax.Array) -> str:
    """``'valid'`` or ``'rejected'`` when jaxconv did what the rules say; otherwise the failure:
    ``'silent wrong shape'``, ``'init differs from apply'``, ``'error without the layer's name'``,
    ``'refused a valid configuration'`` or ``'crash: <exception>'``."""
    expected = expected_shape(case)
    try:
        net = build(case)
        shape, params, state = net.init(key, case["shape"])
    except ValueError as error:
        if case["kind"] not in str(error):
            return "error without the layer's name"
        return "rejected" if expected is None else "refused a valid configuration"
    except Exception as error:
        return f"crash: {type(error).__name__}: {error}"
    if expected is None or tuple(shape) != expected:
        return "silent wrong shape"
    x = jax.ShapeDtypeStruct(case["shape"], np.float32)
    applied = jax.eval_shape(lambda p, s, v: net.apply(p, s, v)[0], params, state, x)
    return "valid" if applied.shape == tuple(shape) else "init differs from apply"


def torch_output(case: Case, net: jc.Layer, params: Any, x: np.ndarray) -> np.ndarray | None:
    """The same layer in ``torch.nn.functional`` (2-D, int padding), channel-last; None where
    torch has no counterpart or refuses the configuration."""
    import torch
    import torch.nn.functional as F

    kind, P = case["kind"], case["padding"]
    if x.ndim != 4 or isinstance(P, str) or (kind == "AvgPool" and case["dilation"] > 1):
        return None
    t = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    options = {"stride": case["stride"], "padding": P}
    try:
        if kind in ("Conv", "ConvTranspose"):
            kernel = np.asarray(params["kernel"])  # (F, F, C_in, K)
            bias = torch.from_numpy(np.array(params["bias"]))
            if kind == "Conv":  # torch's weight is (K, C_in, F, F)
                weight = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
                y = F.conv2d(t, weight, bias, dilation=case["dilation"], **options)
            else:  # torch's weight is (C_in, K, F, F)
                weight = torch.from_numpy(np.transpose(kernel, (2, 3, 0, 1)).copy())
                y = F.conv_transpose2d(
                    t,
                    weight,
                    bias,
                    output_padding=case["output_padding"],
                    dilation=case["dilation"],
                    **options,
                )
        elif kind == "MaxPool":
            y = F.max_pool2d(
                t, case["window"], dilation=case["dilation"], ceil_mode=case["ceil_mode"], **options
            )
        else:
            y = F.avg_pool2d(
                t, case["window"], ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"],
                **options,
            )  # fmt: skip
    except RuntimeError:  # e.g. torch's padding <= F/2 for pools
        return None
    return np.moveaxis(y.numpy(), 1, -1)
