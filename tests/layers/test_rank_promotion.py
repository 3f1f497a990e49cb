"""Every zoo family and every layer with a bias or per-channel factors runs under
``jax.numpy_rank_promotion("raise")``, the setting JAX suggests for catching silent broadcasts:
the layers broadcast their (C,) vectors explicitly (`jaxconv.layers.shared.trailing`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from helpers import family_representatives

import jaxconv as jc
from jaxconv import models

LAYERS = {
    "Dense": (jc.Dense(5), (2, 7)),
    "Conv": (jc.Conv(4, 3), (2, 6, 6, 3)),
    "ConvTranspose": (jc.ConvTranspose(4, 3, stride=2), (2, 5, 5, 3)),
    "LocallyConnected": (jc.LocallyConnected(4, 3), (2, 6, 6, 3)),
    "BatchNorm": (jc.BatchNorm(), (2, 5, 5, 6)),
    "GroupNorm": (jc.GroupNorm(2), (2, 5, 5, 6)),
    "LayerNorm": (jc.LayerNorm(), (2, 5, 5, 6)),
    "LocalResponseNorm": (jc.LocalResponseNorm(), (2, 5, 5, 6)),
}


def _run_strictly(net: jc.Layer, shape: tuple[int, ...], train: bool) -> None:
    with jax.numpy_rank_promotion("raise"):
        params, state = jax.eval_shape(lambda key: net.init(key, shape)[1:], jax.random.key(0))
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        jax.eval_shape(
            lambda p, s, x: net.apply(p, s, x, train=train, key=jax.random.key(1)), params, state, x
        )


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_layer_broadcasts_explicitly(name, train):
    _run_strictly(*LAYERS[name], train)


@pytest.mark.parametrize("name", family_representatives())
def test_every_zoo_family_runs_under_strict_rank_promotion(name):
    for train in (False, True):
        _run_strictly(models.get(name), models.input_shape(name, batch=2), train)


def test_the_setting_is_strict():
    """The check itself can fail: an implicit (C,) + (N, C) broadcast raises under it."""
    with jax.numpy_rank_promotion("raise"), pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones((2, 3)) + jnp.ones(3)
