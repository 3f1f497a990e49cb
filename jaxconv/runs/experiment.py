"""Training, evaluating and exporting by name: what ``jaxconv train``, ``evaluate`` and ``export`` do.

    result = train_run(TrainConfig(model="convnet", dataset="fashion_mnist"), "runs/first")
    result = train_run({"epochs": 12}, "runs/first", resume=True)   # options must agree with the run's
    evaluation = evaluate_run("runs/first")
    path = export_run("runs/first", "onnx")                           # runs/first/model.onnx

Every check that can fail (options, model and dataset names, the run
directory, the data files, the batch size, the model's shapes, a checkpoint to
resume) runs before the first training step.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax

from jaxconv import export, models
from jaxconv.core import Layer, trace
from jaxconv.data import Dataset, normalize
from jaxconv.data.datasets import FOLDER
from jaxconv.errors import ConfigError, DiskFullError, DivergenceError, ShapeError
from jaxconv.runs.config import TrainConfig
from jaxconv.runs.directory import (
    BEST,
    CONFUSION,
    CURVES,
    FILTERS,
    Options,
    Run,
    checkpoint_metadata,
    is_writer,
)
from jaxconv.runs.divergence import FIX
from jaxconv.runs.figures import first_conv_kernel, plot_confusion, plot_curves, plot_filters
from jaxconv.runs.html_report import write_report
from jaxconv.runs.loop import FitResult, fit
from jaxconv.runs.trained import load_split, restore
from jaxconv.train import (
    Evaluation,
    count_params,
    evaluate,
    make_eval_step,
    make_preprocess,
)

PathLike = str | os.PathLike[str]
EXPORT_FORMATS = {"stablehlo": export.stablehlo, "onnx": export.onnx}  # format -> writer


def train_run(
    config: Options = None,
    run_dir: PathLike | None = None,
    *,
    resume: bool = False,
    data_root: PathLike | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``config.model`` on ``config.dataset``, writing the run to ``run_dir``.

    ``config`` is a `TrainConfig`, or the options given by name with the rest at their
    defaults (what ``jaxconv train`` passes), or None; ``run_dir`` None is `default_run_dir`.
    With ``resume`` the configuration is read from ``run_dir`` and any option given must
    agree with it (`Run.open`). When training ends (all epochs, ``stop_after_epoch``, a
    non-finite loss or Ctrl-C) the run directory gets its figures and ``results.json``, and
    (not after an interruption, nor in a run of several processes: ``jaxconv report`` later)
    ``report.html`` (`jaxconv.runs.write_report`); an error before training writes nothing.
    In a run of several processes each calls it alike and process 0 writes. ``progress``: say
    where the run goes, show a bar per epoch.
    """
    run, config = Run.open(run_dir, config, resume=resume)
    net, train_data, test_data = _load(config, data_root)
    writer, started = is_writer(), time.perf_counter()
    if writer and progress:
        print(f"training {config.model} on {config.dataset} -> {run.path}", file=sys.stderr)
    try:
        result = fit(
            net, train_data, test_data, config,
            run=run, resume=resume, stop_after_epoch=stop_after_epoch, progress=progress,
        )  # fmt: skip
    except (DivergenceError, KeyboardInterrupt) as error:
        if writer and run.path.is_dir():  # an interrupt before the first write leaves nothing to report
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            report(
                run, net, test_data, None, status=status, seconds=time.perf_counter() - started, error=error
            )
            _how_to_resume(run, error)
        raise
    except DiskFullError as error:
        error.add_note(f"then continue with: jaxconv train --resume --run-dir {run.path}")
        raise
    if writer:
        status = "complete" if len(result.history) == config.epochs else "paused"
        report(run, net, test_data, result, status=status, seconds=time.perf_counter() - started)
        if run.checkpoint is not None and jax.process_count() == 1:  # several: `jaxconv report` after
            write_report(run.path, data_root=data_root)
    return result


def evaluate_run(run_dir: PathLike, *, data_root: PathLike | None = None, split: str = "test") -> Evaluation:
    """Evaluate the checkpoint of ``run_dir`` on ``split`` of its dataset."""
    trained = restore(run_dir, data_root=data_root, split=split, action="evaluate")
    views = trained.config.test_augmentation
    preprocess = make_preprocess(trained.train_data.mean, trained.train_data.std)
    eval_step = make_eval_step(
        trained.net, preprocess=preprocess, crop_padding=views.crop_padding, flip=views.flip
    )
    return evaluate(
        eval_step, trained.params, trained.state, trained.test_data, trained.config.eval_batch_size
    )


def export_run(
    run_dir: PathLike, file_format: str = "stablehlo", *, data_root: PathLike | None = None
) -> Path:
    """Write the net of ``run_dir``'s checkpoint as ``model.stablehlo`` or ``model.onnx`` in the run.

    The exported program takes the (N, H, W, C) uint8 images of the run's dataset, any N, and
    returns the (N, classes) logits: the dataset's normalisation is inside (`jaxconv.export`).
    """
    if file_format not in EXPORT_FORMATS:
        raise ConfigError(f"export format {file_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    trained = restore(run_dir, data_root=data_root, split="train", action="export")
    train_data = trained.train_data
    mean, std = train_data.mean, train_data.std
    path = Path(run_dir) / f"model.{file_format}"
    EXPORT_FORMATS[file_format](
        trained.net, trained.params, trained.state, (-1, *train_data.images.shape[1:]),
        path=path, dtype=train_data.images.dtype, preprocess=lambda images: normalize(images, mean, std),
    )  # fmt: skip
    return path


def report(
    run: Run,
    net: Layer,
    test_data: Dataset,
    result: FitResult | None,
    *,
    status: str,
    seconds: float,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """Write the figures and ``results.json`` of a run, from what it has logged so far; a run that
    ``status='failed'`` with ``error`` says why, the fix, and which checkpoints are kept."""
    history = run.history()
    results: dict[str, Any] = {
        "status": status,
        "epochs_completed": len(history),
        "seconds": round(seconds, 1),
    }
    if isinstance(error, DivergenceError):
        results |= {
            "error": str(error),
            "fix": FIX,
            "checkpoint": _saved(run, run.checkpoint),
            "best": _saved(run, run.path / BEST),
        }
    if history:
        plot_curves(history, run.path / CURVES)
        last = history[-1]
        results |= {
            "test_top1": last["test_top1"],
            "test_top5": last["test_top5"],
            "test_loss": last["test_loss"],
            "best_test_top1": max(record["test_top1"] for record in history),
            "images_per_second": last["train_images_per_second"],
        }
        results |= {
            name: last[name] for name in ("epsilon", "test_ema_top1", "test_ema_loss") if name in last
        }
    if result is not None:
        results |= _figures_of_the_result(run, net, test_data, result)
    run.write_results(results)
    return results


def _figures_of_the_result(run: Run, net: Layer, test_data: Dataset, result: FitResult) -> dict[str, Any]:
    """Draw the first convolution's filters and the confusion matrix; the results they add."""
    params = result.train_state.params
    results: dict[str, Any] = {"params": count_params(params)}
    if result.privacy is not None:
        results["privacy"] = dataclasses.asdict(result.privacy)
    kernel = first_conv_kernel(net, params, (-1, *test_data.images.shape[1:]))
    if kernel is not None:
        plot_filters(kernel, run.path / FILTERS)
    if result.evaluation is not None:
        confusion = result.evaluation.confusion(test_data.num_classes)
        plot_confusion(confusion, test_data.class_names, run.path / CONFUSION)
    return results


def _load(
    config: TrainConfig, data_root: PathLike | None, splits: tuple[str, ...] = ("train", "test")
) -> tuple[Layer, Dataset, Dataset | None]:
    """The net and the data splits, checking the model's name before reading any file."""
    models.spec(config.model)
    if config.dataset == FOLDER and jax.process_count() > 1:
        raise ConfigError(
            "an image folder gives each process its own rows of a batch, and the multi-process fit "
            "takes whole global batches in every process: train on an image folder in one process"
        )
    if config.dataset == FOLDER and config.dp_epsilon is not None:
        raise ConfigError("DP-SGD samples Poisson batches from data in memory, not from an image folder")
    data = [load_split(config, split, data_root) for split in splits]
    net = models.get(config.model, num_classes=data[0].num_classes)
    _check_model_fits(config, net, data[0])
    return net, data[0], data[1] if len(data) > 1 else None


def _saved(run: Run, path: Path | None) -> dict[str, Any] | None:
    """A checkpoint's path in the run (``orbax/<step>``, best.npz) and epoch, or None if there is none."""
    if path is None or not path.exists():
        return None
    return {"file": path.relative_to(run.path).as_posix(), "epoch": checkpoint_metadata(path).get("epoch")}


def _check_model_fits(config: TrainConfig, net: Layer, data: Dataset) -> None:
    """Trace ``net`` on ``data``'s images before anything is written: a model built for another
    image size is refused naming its failing layer and the size it takes."""
    try:
        trace(net, (-1, *data.images.shape[1:]))
    except ShapeError as error:
        takes, has = (
            "x".join(map(str, shape[-3:])) for shape in (models.input_shape(config.model), data.images.shape)
        )
        error.add_note(
            f"{config.model} takes {takes} images and {config.dataset} has {has}: choose a --model for "
            f"{has} images (`jaxconv models`) or another --dataset"
        )
        raise


def _how_to_resume(run: Run, error: BaseException) -> None:
    """After an interruption or a non-finite loss: where the last good checkpoint is, and the command."""
    if isinstance(error, DivergenceError):
        return  # resuming would diverge again: the error says what to change
    if run.checkpoint is not None:
        print(
            f"the checkpoint of the last finished epoch is in {run.path}; continue with:\n"
            f"    jaxconv train --resume --run-dir {run.path}",
            file=sys.stderr,
        )
