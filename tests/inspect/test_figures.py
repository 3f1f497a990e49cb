"""The pictures: the notes' activation figure, feature maps, overlays, and PNGs inside pages."""

from __future__ import annotations

import base64
import io

import jax.numpy as jnp
import numpy as np
from helpers import random_params
from matplotlib.image import imread

import jaxconv as jc
from jaxconv.inspect import (
    activation_figure,
    activations,
    data_uri,
    feature_maps,
    figure_png,
    overlay_figure,
    volume_columns,
)


def test_the_activation_figure_has_a_column_per_volume_and_the_sorted_top_5():
    net = jc.serial(jc.Conv(4, 3, padding=1), jc.Relu, jc.MaxPool(2), jc.Flatten, jc.Dense(7))
    params, state = random_params(net, (-1, 8, 8, 1))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)), jnp.float32)
    outputs = activations(net, params, state, x)
    assert volume_columns(outputs) == [("conv_0",), ("relu_1",), ("maxpool_2",)]
    names = [f"class {k}" for k in range(7)]
    figure = activation_figure(outputs, np.asarray(x[1]), index=1, class_names=names, max_slices=3)
    axes = figure.get_axes()
    assert len(axes) == 1 + 3 + 1  # the image, three volumes, the scores
    assert axes[1].get_images()[0].get_array().shape == (3 * 8 + 2, 8)  # three slices and two gaps
    order = np.argsort(-np.asarray(outputs[()][1]))[:5]
    shown = {tick.get_text(): tick.get_position()[1] for tick in axes[-1].get_yticklabels()}
    assert [name for name, _ in sorted(shown.items(), key=lambda item: -item[1])] == [names[k] for k in order]


def test_feature_maps_and_overlays_are_drawn():
    volume = np.random.default_rng(1).normal(size=(5, 5, 10))
    assert sum(bool(a.get_images()) for a in feature_maps(volume, columns=4).get_axes()) == 10
    figure = overlay_figure(
        np.zeros((3, 6, 6, 1)), np.random.default_rng(2).random((3, 6, 6)), titles=["a", "b", "c"]
    )
    assert [len(a.get_images()) for a in figure.get_axes()] == [2, 2, 2]
    pixels = imread(io.BytesIO(figure_png(figure)))
    assert pixels.std() > 0.05  # not blank
    uri = data_uri(figure)
    assert (
        uri.startswith("data:image/png;base64,")
        and base64.b64decode(uri.split(",")[1])[:8] == b"\x89PNG\r\n\x1a\n"
    )
