"""Mixup and CutMix against NumPy: the mixed batch from the returned partner and lam, CutMix's box
a rectangle whose area is 1 - lam (the train step's loss: tests/train/test_mix_step.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.data import cutmix, mixup, parse_mix
from jaxconv.errors import ConfigError

X = np.random.default_rng(0).normal(size=(6, 8, 10, 2)).astype(np.float32)


def test_mixup_is_the_convex_combination_with_a_permutation():
    mixed, partner, lam = mixup(jax.random.key(1), X, alpha=0.4)
    partner, lam = np.asarray(partner), float(lam)
    assert sorted(partner) == list(range(6)) and 0 < lam < 1
    np.testing.assert_allclose(np.asarray(mixed), lam * X + (1 - lam) * X[partner], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_pastes_one_box_of_area_one_minus_lam(seed):
    mixed, partner, lam = cutmix(jax.random.key(seed), X, alpha=1.0)
    mixed, partner = np.asarray(mixed), np.asarray(partner)
    moved = np.all(mixed == X[partner], axis=(0, 3)) & ~np.all(X[partner] == X, axis=(0, 3))  # (H, W)
    kept = np.all(mixed == X, axis=(0, 3))
    assert np.all(moved | kept)
    rows, columns = np.flatnonzero(moved.any(1)), np.flatnonzero(moved.any(0))
    if moved.any():  # a rectangle: every position between its first and last row and column
        assert moved[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1].all()
    assert float(lam) == pytest.approx(1 - moved.mean())


def test_parse_mix():
    assert parse_mix("none") is None
    assert parse_mix("cutmix").keywords == {"alpha": 1.0} and parse_mix("mixup=0.4").keywords == {
        "alpha": 0.4
    }
    for bad in ("mixup=-1", "blend"):
        with pytest.raises(ConfigError, match=r"mix="):
            parse_mix(bad)
    with pytest.raises(ConfigError, match=r"mix='mixup': DP-SGD trains on unmixed examples"):
        jc.runs.TrainConfig(mix="mixup", dp_epsilon=3).validate()
