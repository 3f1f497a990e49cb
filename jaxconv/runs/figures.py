"""The pictures of a run: training curves, first-layer filters, a confusion matrix.

Drawn with Matplotlib's object API on the Agg canvas (no pyplot, no display),
so they work on a headless machine and inside threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from jaxconv.core import Layer, Params, Shape, subtree, trace


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and top-1 accuracy per epoch, train and test, side by side.

    The train figures are the means over the epoch's steps, in training mode
    (dropout, augmentation, label smoothing), so they can sit above the test ones.
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [record["epoch"] for record in history]
    for split, style in (("train", "o-"), ("test", "s-")):
        loss_axes.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=split)
        accuracy_axes.plot(epochs, [100 * r[f"{split}_top1"] for r in history], style, label=split)
    loss_axes.set(
        xlabel="epoch", ylabel="cross-entropy", title="loss (train: in training mode, smoothed labels)"
    )
    accuracy_axes.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=100)


def plot_model_curves(history: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> None:
    """The curves of M models trained together (`fit_many`'s records: each metric a list of M):
    test loss and test top-1 accuracy per epoch, one line per model named by ``labels``, with
    each model's train loss dashed in its colour."""
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [record["epoch"] for record in history]
    for model, label in enumerate(labels):
        colour = f"C{model % 10}"
        loss_axes.plot(epochs, [r["test_loss"][model] for r in history], "-", color=colour, label=label)
        loss_axes.plot(epochs, [r["train_loss"][model] for r in history], "--", color=colour, alpha=0.5)
        accuracy_axes.plot(epochs, [100 * r["test_top1"][model] for r in history], "-", color=colour)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy", title="test loss (train: dashed)")
    accuracy_axes.set(
        xlabel="epoch", ylabel="top-1 accuracy (%)", title=f"test accuracy, {len(labels)} models"
    )
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
    loss_axes.legend(fontsize="small", ncols=1 + len(labels) // 8)
    figure.savefig(path, dpi=100)


def plot_filters(kernel: np.ndarray, path: Path, title: str = "first-layer filters") -> None:
    """The filters of a (F, F, C_in, K) kernel as a grid of K tiles, each scaled to its own range.

    Three input channels are shown as colour; otherwise the first input channel in grey.
    """
    kernel = np.asarray(kernel, np.float32)
    count = kernel.shape[-1]
    columns = int(np.ceil(np.sqrt(count)))
    rows = -(-count // columns)
    figure = Figure(figsize=(columns * 0.8, rows * 0.8 + 0.4), layout="constrained")
    figure.suptitle(f"{title}: {count} x {kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}")
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        axes.set_axis_off()
        if index < count:
            tile = kernel[..., index]  # (F, F, C_in)
            tile = tile if tile.shape[-1] == 3 else tile[..., 0]
            low, high = tile.min(), tile.max()
            axes.imshow((tile - low) / (high - low + 1e-12), cmap="gray", interpolation="nearest")
    figure.savefig(path, dpi=100)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """A (K, K) confusion matrix, true class down, predicted across, with counts; colour is the
    fraction of each true class."""
    matrix = np.asarray(matrix)
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.subplots()
    axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (accuracy {_accuracy(matrix):.2%})")
    for (true, predicted), count in np.ndenumerate(matrix):
        colour = "white" if fractions[true, predicted] > 0.5 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=colour)
    figure.savefig(path, dpi=100)


def first_conv_kernel(net: Layer, params: Params, input_shape: Shape) -> np.ndarray | None:
    """The (F, F, C_in, K) kernel of the first convolution the net applies, or None if it has no
    2-D convolution: the first layer sliding one shared kernel (``traits.window`` is its size,
    ``traits.macs`` counts per output position; not LocallyConnected's kernel per position)."""
    for record in trace(net, input_shape).records:  # shapes only: nothing is allocated
        traits = record.info.traits
        if traits is None or traits.window != "kernel_size" or traits.macs != "output_positions":
            continue
        kernel = subtree(params, record.path).get("kernel")
        if kernel is not None and np.ndim(kernel) == 4:
            return np.asarray(kernel)
    return None


def _accuracy(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / max(matrix.sum(), 1))
