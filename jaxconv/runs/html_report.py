"""``jaxconv report RUN_DIR``: one self-contained HTML page about a trained run.

    path = write_report("runs/first")     # runs/first/report.html

The page holds the training curves, the confusion matrix, the test images the net gets wrong
with the most confidence, the first layer's filters, the notes' activation figure and
Grad-CAM (on the last convolution) for chosen test images, and the per-layer summary with
receptive fields (`jaxconv.analysis.summary`). Every picture is inside the file (``data:``
URIs), so it opens offline and can be archived alone. ``jaxconv train`` writes it when a run ends.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxconv.analysis import summary
from jaxconv.core import Layer
from jaxconv.data import Dataset, ImageFolder, epoch_batches
from jaxconv.errors import LayerPathError
from jaxconv.inspect import (
    activation_figure,
    activations,
    grad_cam,
    html_page,
    image_tag,
    last_conv_path,
    overlay_figure,
)
from jaxconv.runs.directory import CONFUSION, CURVES, FILTERS, write_atomic
from jaxconv.runs.figures import first_conv_kernel, plot_confusion, plot_curves, plot_filters
from jaxconv.runs.trained import Trained, restore
from jaxconv.train import confusion_matrix

REPORT = "report.html"
PathLike = str | os.PathLike[str]


def write_report(run_dir: PathLike, *, data_root: PathLike | None = None, images: int = 8) -> Path:
    """Write ``run_dir/report.html`` from the run's checkpoint and test set; returns its path.
    ``images``: how many test images get Grad-CAM and how many mistakes are shown."""
    trained = restore(run_dir, data_root=data_root, action="report on")
    trained = dataclasses.replace(trained, test_data=_in_memory(trained.test_data))
    logits = _test_logits(trained)
    path = trained.run.path
    sections = [_results_section(trained, logits), _curves_section(trained)]
    sections += [_confusion_section(trained, logits), _mistakes_section(trained, logits, images)]
    sections += [_filters_section(trained), _inside_section(trained, images), _summary_section(trained)]
    title = f"{trained.config.model} on {trained.config.dataset}: {path.name}"
    write_atomic(path / REPORT, html_page(title, "\n".join(sections)))
    return path / REPORT


def _in_memory(data: Dataset | ImageFolder, limit: int = 2000) -> Dataset:
    """``data`` as arrays in memory: an image folder's first ``limit`` readable images (in the
    folder's order), decoded in batches."""
    if not isinstance(data, ImageFolder):
        return data
    images, labels, count = [], [], 0
    for batch_images, batch_labels in epoch_batches(data, min(256, len(data)), drop_remainder=False):
        images.append(batch_images)
        labels.append(batch_labels)
        count += len(batch_labels)
        if count >= limit:
            break
    arrays = np.concatenate(images)[:limit], np.concatenate(labels)[:limit]
    return Dataset(data.name, data.split, *arrays, data.class_names, data.mean, data.std)


def _test_logits(trained: Trained, batch: int = 1000) -> np.ndarray:
    """(N, K) logits of the whole test set, in evaluation mode."""
    forward = _forward(trained.net)
    images = trained.test_data.images
    parts = [forward(trained.params, trained.state, trained.preprocess(images[i : i + batch])) for i in range(0, len(images), batch)]  # fmt: skip
    return np.concatenate(jax.device_get(parts))


@functools.lru_cache(maxsize=8)
def _forward(net: Layer):
    return jax.jit(lambda params, state, x: net.apply(params, state, x)[0])


def _results_section(trained: Trained, logits: np.ndarray) -> str:
    labels = trained.test_data.labels
    top1 = float(np.mean(logits.argmax(axis=1) == labels))
    rows = {"test top-1": f"{top1:.2%}", "test images": f"{len(labels):,}"}
    results = trained.run.path / "results.json"
    if results.exists():
        saved = json.loads(results.read_text())
        rows |= {name: str(value) for name, value in saved.items() if not isinstance(value, dict)}
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    config = html.escape(json.dumps(trained.config.__dict__, indent=1, default=str))
    return f'<h2>Results</h2>\n<table class="numbers">{cells}</table>\n<details><summary>configuration</summary><pre>{config}</pre></details>'


def _curves_section(trained: Trained) -> str:
    history = trained.run.history()
    if not history:
        return "<h2>Training curves</h2><p>no epoch logged</p>"
    plot_curves(history, trained.run.path / CURVES)
    return f"<h2>Training curves</h2>\n{image_tag(trained.run.path / CURVES, 'training curves')}"


def _confusion_section(trained: Trained, logits: np.ndarray) -> str:
    data = trained.test_data
    matrix = confusion_matrix(data.labels, logits.argmax(axis=1), data.num_classes)
    plot_confusion(matrix, data.class_names, trained.run.path / CONFUSION)
    return (
        f"<h2>Confusion matrix (test set)</h2>\n{image_tag(trained.run.path / CONFUSION, 'confusion matrix')}"
    )


def _mistakes_section(trained: Trained, logits: np.ndarray, count: int) -> str:
    """The ``count`` wrongly classified test images with the highest softmax probability."""
    probabilities = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    predicted, labels = probabilities.argmax(axis=1), trained.test_data.labels
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    if not len(chosen):
        return "<h2>Most confident mistakes</h2><p>no mistakes on the test set</p>"
    names = trained.test_data.class_names
    figure = Figure(figsize=(1.8 * len(chosen), 2.3), layout="constrained")
    for axes, i in zip(figure.subplots(1, len(chosen), squeeze=False)[0], chosen, strict=True):
        image = trained.test_data.images[i]
        axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        axes.set_axis_off()
        axes.set_title(
            f"#{i} {names[predicted[i]]}\n{probabilities[i, predicted[i]]:.0%} (is {names[labels[i]]})",
            fontsize=7,
        )
    return f"<h2>Most confident mistakes</h2>\n{image_tag(figure, 'most confident mistakes')}"


def _filters_section(trained: Trained) -> str:
    kernel = first_conv_kernel(trained.net, trained.params, (-1, *trained.test_data.images.shape[1:]))
    if kernel is None:
        return ""
    plot_filters(kernel, trained.run.path / FILTERS)
    return f"<h2>First-layer filters</h2>\n{image_tag(trained.run.path / FILTERS, 'first-layer filters')}"


def _inside_section(trained: Trained, count: int) -> str:
    """The notes' activation figure of the first test image, and Grad-CAM on the last convolution
    of the first ``count`` test images for their predicted classes."""
    images = trained.test_data.images[:count]
    x = trained.preprocess(images)
    outputs = activations(trained.net, trained.params, trained.state, x)
    names = trained.test_data.class_names
    figure = activation_figure(outputs, images[0], class_names=names)
    heading = (
        "<h2>Inside the net</h2>\n<p>Each volume's depth slices in rows (first 8), as in the notes; "
        "then the sorted top-5 scores.</p>\n"
        f"{image_tag(figure, 'activations')}"
    )
    try:
        layer = last_conv_path(trained.net, through_elementwise=True)
    except LayerPathError:  # no convolution that learns (a linear model on fixed features)
        return f"{heading}\n<p>No Grad-CAM: the net has no Conv layer.</p>"
    cams = grad_cam(trained.net, trained.params, trained.state, x, layer=layer)
    predicted = np.asarray(outputs[()]).argmax(axis=1)
    titles = [f"#{i}: {names[p]}" for i, p in enumerate(predicted)]
    overlay = overlay_figure(
        images, cams, titles=titles, suptitle=f"Grad-CAM on {'/'.join(layer)} (predicted class)"
    )
    return f"{heading}\n{image_tag(overlay, 'Grad-CAM')}"


def _summary_section(trained: Trained) -> str:
    table = summary(trained.net, (-1, *trained.test_data.images.shape[1:]))
    return f"<h2>Layers, sizes and receptive fields</h2>\n<pre>{html.escape(str(table))}</pre>"
