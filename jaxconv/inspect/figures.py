"""The pictures: the notes' activation figure, a layer's feature maps, heat-map overlays.

Matplotlib's object API on the Agg canvas (no pyplot, no display); each function returns a
`matplotlib.figure.Figure` (``figure.savefig("x.png")``, or `jaxconv.inspect.page.data_uri`).

The activation figure is the notes' picture of a ConvNet at work: "since it's difficult to
visualize 3D volumes, we lay out each volume's slices in rows", one column per volume from
the image to the class scores, the last showing the sorted top 5 with their labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxconv.core import LayerPath


def volume_columns(outputs: Mapping[LayerPath, object]) -> list[LayerPath]:
    """The paths to draw as the notes' columns: the net's top-level layers that output an
    (N, H, W, K) volume, in the order they run (the children of the outermost block)."""
    top = [path for path in outputs if len(path) == 1]
    return [path for path in top if np.ndim(outputs[path]) == 4]


def activation_figure(
    outputs: Mapping[LayerPath, object],
    image: np.ndarray,
    *,
    index: int = 0,
    class_names: Sequence[str] | None = None,
    paths: Sequence[LayerPath] | None = None,
    max_slices: int = 8,
) -> Figure:
    """The notes' figure for image ``index`` of a batch: the image (H, W, C), then one column per
    volume of ``outputs`` (`jaxconv.inspect.activations`; ``paths``, default `volume_columns`)
    with up to ``max_slices`` depth slices stacked in rows, each scaled to its own range, and the
    top-5 softmax scores of ``outputs[()]`` with ``class_names``."""
    paths = list(paths if paths is not None else volume_columns(outputs))
    figure = Figure(figsize=(1.3 * (len(paths) + 3), 1.0 * max_slices + 1), layout="constrained")
    axes = figure.subplots(1, len(paths) + 2, width_ratios=[1] * (len(paths) + 1) + [2])
    _show(axes[0], np.asarray(image), "input")
    for column, path in zip(axes[1:-1], paths, strict=True):
        volume = np.asarray(outputs[path])[index]  # (H, W, K)
        _show(
            column,
            _stacked_slices(volume, max_slices),
            f"{'/'.join(path)}\n{'x'.join(map(str, volume.shape))}",
        )
    _top5(axes[-1], np.asarray(outputs[()])[index], class_names)
    return figure


def feature_maps(volume: np.ndarray, *, title: str = "", columns: int = 8, max_maps: int = 64) -> Figure:
    """Up to ``max_maps`` maps of one (H, W, K) volume as a grid, each scaled to its own range."""
    volume = np.asarray(volume, np.float32)
    count = min(volume.shape[-1], max_maps)
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = Figure(figsize=(columns * 1.1, rows * 1.1 + 0.4), layout="constrained")
    figure.suptitle(f"{title} ({'x'.join(map(str, volume.shape))}, {count} maps shown)".strip())
    for k, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.set_axis_off()
        if k < count:
            axes.imshow(_scaled(volume[..., k]), cmap="viridis", interpolation="nearest")
            axes.set_title(str(k), fontsize=6)
    return figure


def overlay_figure(
    images: np.ndarray,
    heat: np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    suptitle: str = "",
    alpha: float = 0.5,
) -> Figure:
    """Each image of (N, H, W, C) under its (N, H, W) heat map (Grad-CAM, saliency, occlusion),
    in a row, the heat in the ``jet`` colours with transparency ``alpha``."""
    images, heat = np.asarray(images, np.float32), np.asarray(heat, np.float32)
    count = len(images)
    figure = Figure(figsize=(1.8 * count, 2.2), layout="constrained")
    if suptitle:
        figure.suptitle(suptitle)
    for n, axes in enumerate(figure.subplots(1, count, squeeze=False)[0]):
        _show(axes, images[n], titles[n] if titles else "")
        axes.imshow(_scaled(heat[n]), cmap="jet", alpha=alpha, interpolation="bilinear")
    return figure


def _show(axes, image: np.ndarray, title: str) -> None:
    axes.set_axis_off()
    image = _scaled(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    axes.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    axes.set_title(title, fontsize=7)


def _stacked_slices(volume: np.ndarray, max_slices: int) -> np.ndarray:
    """The first ``max_slices`` depth slices of (H, W, K), each scaled to [0, 1], one under the
    other with a one-pixel gap: (n (H + 1) - 1, W)."""
    slices = [_scaled(volume[..., k]) for k in range(min(volume.shape[-1], max_slices))]
    gap = np.ones((1, volume.shape[1]))
    rows = [part for s in slices for part in (s, gap)][:-1]
    return np.concatenate(rows, axis=0)


def _top5(axes, logits: np.ndarray, class_names: Sequence[str] | None) -> None:
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    best = np.argsort(scores)[::-1][:5]
    names = [class_names[k] if class_names else str(k) for k in best]
    axes.barh(range(len(best))[::-1], scores[best], color="#3fae5a")
    axes.set_yticks(range(len(best))[::-1], names, fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_title("top-5 scores", fontsize=7)


def _scaled(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float32)
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if high > low else np.zeros_like(array)
