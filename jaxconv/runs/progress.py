"""One epoch's progress: running means of the step metrics, the speed, a progress bar, and the
check that the loss stays finite."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxconv.errors import NonFiniteLossError
from jaxconv.runs.directory import Run


class EpochMeter:
    """The metrics of one epoch's steps as they arrive from the device, shown on a progress bar.

    A context manager: the bar closes when the epoch ends.
    """

    def __init__(self, epoch: int, epochs: int, steps: int, run: Run | None, *, show: bool):
        self.epoch, self.run = epoch, run
        self.bar = tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="step", disable=not show, dynamic_ncols=True
        )
        self.totals: dict[str, float] = {}
        self.steps = self.examples = 0
        self.started = time.perf_counter()
        self.warm: float | None = None  # when the first step returned, i.e. compilation was over
        self.warm_examples = 0

    def __enter__(self) -> EpochMeter:
        return self

    def __exit__(self, *exception: object) -> None:
        self.bar.close()

    def resume(self, totals: dict[str, float], steps: int) -> None:
        """Continue an epoch from a checkpoint inside it: the metric sums of its first ``steps``."""
        self.totals, self.steps = dict(totals), steps
        self.bar.update(steps)

    def dispatched(self, examples: int) -> None:
        """A step of ``examples`` examples was sent to the device."""
        self.examples += examples
        if self.warm is None:
            self.warm, self.warm_examples = time.perf_counter(), self.examples

    def receive(self, metrics: list[dict[str, Any]]) -> None:
        """The metrics of the next steps, fetched from the device; raises on a non-finite loss.

        Each metric is a scalar, or an (M,) array of M models trained together (`fit_many`):
        the means are then (M,) arrays and the bar shows their mean over the models.
        """
        for step_metrics in metrics:
            self.steps += 1
            check_finite(step_metrics["loss"], self.epoch, self.steps, self.run)
            for name, value in step_metrics.items():
                self.totals[name] = self.totals.get(name, 0.0) + _number(value)
        if metrics:
            mean = {name: np.mean(value) for name, value in self.summary().items()}
            self.bar.set_postfix_str(
                f"loss={mean['loss']:.4f}, acc={mean['top1']:.2%}, {mean['images_per_second']:,.0f} img/s",
                refresh=False,
            )
            self.bar.update(len(metrics))

    def tested(self, top1: float | np.ndarray) -> None:
        """Show the test accuracy after the epoch's evaluation (the mean of M models')."""
        self.bar.set_postfix_str(f"{self.bar.postfix}, test_acc={np.mean(top1):.2%}")

    def summary(self) -> dict[str, float]:
        """Mean metrics, images per second after compilation, and the seconds of the epoch so far."""
        now = time.perf_counter()
        elapsed = now - (self.warm or now)
        speed = (self.examples - self.warm_examples) / elapsed if elapsed > 0 else math.nan
        means = {name: total / max(self.steps, 1) for name, total in self.totals.items()}
        return {**means, "images_per_second": speed, "seconds": now - self.started}


def _number(value: Any) -> float | np.ndarray:
    """A metric fetched from the device as a float, or as a float64 array for M models."""
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64)


def check_finite(loss: Any, epoch: int, step_in_epoch: int, run: Run | None) -> None:
    """Raise `NonFiniteLossError` for a NaN or infinite ``loss``: a scalar, or the (M,) losses of
    M models trained together when every one is (`fit_many` judges a model alone that fails
    after its epoch, and the others go on), saying what checkpoint is kept."""
    finite = np.isfinite(loss)
    if np.any(finite):
        return
    models = f" (every one of the {np.size(loss)} models)" if np.ndim(loss) else ""
    loss = np.ravel(loss)[0]
    kept = (
        f"; the checkpoint of the last good epoch is kept in {run.checkpoint}"
        if run is not None and run.checkpoint is not None
        else ("; no epoch had finished, so there is no checkpoint" if run is not None else "")
    )
    raise NonFiniteLossError(
        f"the training loss became {float(loss)} at step {step_in_epoch} of epoch {epoch + 1}{models}; "
        f"training stopped{kept}. Lower the learning rate (--lr), add warmup (--warmup-epochs) "
        "or check the data"
    )
