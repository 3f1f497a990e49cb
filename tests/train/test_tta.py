"""Test-time augmentation: the views against NumPy's padding, slicing and mirroring, and the
evaluation step's metrics against the mean of the softmax over those views, computed in NumPy."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxconv as jc
from jaxconv.data import test_views as views_of

IMAGES = np.random.default_rng(0).integers(0, 255, (5, 6, 7, 1)).astype(np.uint8)


def numpy_views(images: np.ndarray, p: int) -> list[np.ndarray]:
    padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = images.shape[1:3]
    crops = [
        padded[:, p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in ((-p, 0), (p, 0), (0, -p), (0, p))
    ]
    views = [images, *crops]
    return views + [view[:, :, ::-1] for view in views]


def test_the_views_are_the_shifted_crops_and_their_mirrors():
    mine = views_of(IMAGES, crop_padding=2, flip=True)
    assert len(mine) == 10 and len(views_of(IMAGES, flip=True)) == 2 and len(views_of(IMAGES)) == 1
    for view, reference in zip(mine, numpy_views(IMAGES, 2), strict=True):
        np.testing.assert_array_equal(np.asarray(view), reference)


def test_the_step_averages_the_probabilities_over_the_views():
    net = jc.serial(jc.Conv(3, 3, padding=1), jc.Relu, jc.Flatten, jc.Dense(4))
    _, params, state = net.init(jax.random.key(0), (-1, 6, 7, 1))
    labels = np.array([0, 1, 2, 3, 0])
    preprocess = jc.train.make_preprocess(0.4, 0.2)
    metrics = jc.train.make_eval_step(net, preprocess=preprocess, crop_padding=2, flip=True)(
        params, state, IMAGES, labels
    )
    probabilities = np.zeros((5, 4))
    for view in numpy_views(IMAGES, 2):
        logits = np.asarray(
            net.apply(params, state, (view.astype(np.float32) / 255 - 0.4) / 0.2)[0], np.float64
        )
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities += exp / exp.sum(-1, keepdims=True) / 10
    assert float(metrics["loss"]) == pytest.approx(
        -np.log(probabilities[np.arange(5), labels]).sum(), rel=1e-5
    )
    np.testing.assert_array_equal(np.asarray(metrics["predictions"]), probabilities.argmax(-1))
    assert float(metrics["top1"]) == (probabilities.argmax(-1) == labels).sum()
