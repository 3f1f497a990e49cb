"""The layer fuzzer (`layer_fuzz`): 1,000 seeded random configurations of Conv, ConvTranspose,
MaxPool and AvgPool, each checked against the documented shape formulas, and a sample of them
against torch.nn.functional's values."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_fuzz import build, check, random_case, torch_output

from jaxconv.layers.initializers import initializer

CASES = 1000


def test_a_thousand_random_configurations_have_no_silent_wrong_shape():
    rng, key = np.random.default_rng(20), jax.random.key(0)
    outcomes = collections.Counter()
    failures = []
    for _ in range(CASES):
        case = random_case(rng)
        outcome = check(case, key)
        outcomes[outcome] += 1
        if outcome not in ("valid", "rejected"):
            failures.append((outcome, case))
    assert failures == []
    assert outcomes["rejected"] >= 50 and outcomes["valid"] >= 600  # both kinds are exercised


def test_a_sample_of_the_valid_configurations_computes_what_torch_computes():
    rng, key = np.random.default_rng(7), jax.random.key(1)
    compared = 0
    while compared < 25:
        case = random_case(rng)
        if check(case, key) != "valid":
            continue
        net = build(case)
        _, params, state = net.init(key, case["shape"])
        x = rng.standard_normal(case["shape"]).astype(np.float32)
        expected = torch_output(case, net, params, x)
        if expected is None:
            continue
        with jax.default_matmul_precision("highest"):
            y, _ = net.apply(params, state, jnp.asarray(x))
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5, err_msg=str(case))
        compared += 1


def test_the_fuzzer_finds_what_it_looks_for():
    """The checks can fail: a wrong expected shape and an invalid size are caught."""
    case = {
        "kind": "Conv", "shape": (2, 0, 5, 3), "window": 1, "stride": 1, "dilation": 1, "padding": 1,
        "ceil_mode": False, "count_include_pad": True, "output_padding": 0, "features": 2,
    }  # fmt: skip
    assert check(case, jax.random.key(0)) == "rejected"  # was (2, 2, 7, 2) before init checked sizes
    valid = {**case, "shape": (2, 4, 5, 3)}
    assert check(valid, jax.random.key(0)) == "valid"
    assert check({**valid, "features": 0}, jax.random.key(0)) == "rejected"


def test_an_initialiser_refuses_a_kernel_without_inputs():
    with pytest.raises(ValueError, match=r"'he_normal': a kernel of shape \(3, 3, 0, 4\) has fan 0"):
        initializer("he")(jax.random.key(0), (3, 3, 0, 4))
