"""A model's results on a whole dataset: the evaluation step run over every example once.

evaluation = evaluate(make_eval_step(net), params, state, test_data, batch_size=1000)
evaluation.top1, evaluation.confusion(test_data.num_classes)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxconv.core import Params, State
from jaxconv.data import Dataset, batches
from jaxconv.train.step import EvalStep


class Evaluation(NamedTuple):
    """A model's results on a dataset: mean ``loss``, ``top1`` and ``top5`` accuracy in [0, 1],
    and the (N,) ``labels`` and ``predictions`` in the dataset's order."""

    loss: float
    top1: float
    top5: float
    labels: np.ndarray
    predictions: np.ndarray

    def confusion(self, num_classes: int) -> np.ndarray:
        """(K, K) counts: row = true class, column = predicted class."""
        return confusion_matrix(self.labels, self.predictions, num_classes)


def evaluate(eval_step: EvalStep, params: Params, state: State, data: Dataset, batch_size: int) -> Evaluation:
    """Run ``eval_step`` (see `make_eval_step`) over ``data`` in its stored order, every example once.

    An ``eval_step`` of M models at once (params and state stacked on a leading model axis, as
    `jaxconv.runs.fit_many` makes it) gives an `Evaluation` of (M,) ``loss``, ``top1``, ``top5``
    and (M, N) ``predictions``; `per_model` splits it.
    """
    sums: list[dict[str, jax.Array]] = []
    for images, labels in batches(data, min(batch_size, len(data)), drop_remainder=False):
        sums.append(eval_step(params, state, images, labels))
    host = jax.device_get(sums)
    count = len(data)
    total = {name: _mean([s[name] for s in host], count) for name in ("loss", "top1", "top5")}
    predictions = np.concatenate([s["predictions"] for s in host], axis=-1)
    return Evaluation(total["loss"], total["top1"], total["top5"], data.labels, predictions)


def per_model(evaluation: Evaluation) -> list[Evaluation]:
    """The M evaluations of an `Evaluation` of M models (fields with a leading model axis)."""
    loss, top1, top5, labels, predictions = evaluation
    return [
        Evaluation(float(loss[m]), float(top1[m]), float(top5[m]), labels, predictions[m])
        for m in range(len(loss))
    ]


def _mean(batch_sums: list[np.ndarray], count: int) -> float | np.ndarray:
    """The sum of the batches' sums (added in order, in float64) over ``count``: a float, or an
    (M,) array for M models."""
    total = sum(np.asarray(s, np.float64) for s in batch_sums) / count
    return float(total) if np.ndim(total) == 0 else total


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: entry [i, j] is how many examples of class i were predicted as j."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix
