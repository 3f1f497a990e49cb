"""Training and evaluating by name: what ``jaxconv train`` and ``jaxconv evaluate`` do.

    result = train(TrainConfig(model="convnet", dataset="fashion_mnist"), "runs/first")
    evaluation = evaluate_run("runs/first")

Every check that can fail (options, model and dataset names, the run
directory, the data files, the batch size, the model's shapes, a checkpoint to
resume) runs before the first training step.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax

from jaxconv.core import Layer
from jaxconv.data import Dataset, load
from jaxconv.errors import ConfigError, NonFiniteLossError
from jaxconv.train import optim
from jaxconv.train.checkpoint import load_checkpoint
from jaxconv.train.config import TrainConfig
from jaxconv.train.default_model import check_model_name, get_model
from jaxconv.train.figures import first_conv_kernel, plot_confusion, plot_curves, plot_filters
from jaxconv.train.loop import Evaluation, FitResult, evaluate, fit
from jaxconv.train.run import CONFUSION, CURVES, FILTERS, Run, is_writer
from jaxconv.train.state import count_params, init_train_state
from jaxconv.train.step import make_eval_step, make_preprocess

Path_ = str | os.PathLike[str]


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<model>-<dataset>-<date>-<time>`` under the current directory."""
    return Path("runs") / f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    config: TrainConfig | None = None,
    run_dir: Path_ | None = None,
    *,
    resume: bool = False,
    data_root: Path_ | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``config.model`` on ``config.dataset``, writing the run to ``run_dir``.

    With ``resume`` the configuration is read from ``run_dir``; a ``config``
    given as well must agree with it. When training ends (all epochs,
    ``stop_after_epoch``, a non-finite loss or Ctrl-C) the run directory gets
    its figures and ``results.json``; an error before training writes nothing.
    In a run of several processes each calls it alike and process 0 writes.
    """
    run = Run(run_dir if run_dir is not None else default_run_dir(config or TrainConfig()))
    if resume:
        run.prepare(resume=True)
        config = _resumed_config(run, config)
    config = (config or TrainConfig()).validate()
    net, train_data, test_data = _prepare(config, data_root)
    if not resume:
        run.prepare(resume=False)
    started = time.perf_counter()

    def finish(result: FitResult | None, status: str) -> None:
        if is_writer():
            report(run, net, test_data, result, status=status, seconds=time.perf_counter() - started)

    try:
        result = fit(
            net, train_data, test_data, config,
            run=run, resume=resume, stop_after_epoch=stop_after_epoch, progress=progress,
        )  # fmt: skip
    except NonFiniteLossError:
        finish(None, "non-finite loss")
        raise
    except KeyboardInterrupt:
        finish(None, "interrupted")
        raise
    finish(result, "complete" if len(result.history) == config.epochs else "paused")
    return result


def evaluate_run(run_dir: Path_, *, data_root: Path_ | None = None, split: str = "test") -> Evaluation:
    """Evaluate the checkpoint of ``run_dir`` on ``split`` of its dataset."""
    run = Run(run_dir)
    run.require_saved("evaluate")
    config = run.config()
    net, train_data, _ = _prepare(config, data_root, splits=("train",))
    data = train_data if split == "train" else load(config.dataset, split, root=data_root)
    steps_per_epoch = len(train_data) // config.batch_size
    optimizer = optim.from_config(config, max(steps_per_epoch, 1))
    template = init_train_state(net, optimizer, (-1, *data.images.shape[1:]), jax.random.key(config.seed))
    train_state, _ = load_checkpoint(run.checkpoint, like=template)
    eval_step = make_eval_step(net, preprocess=make_preprocess(train_data.mean, train_data.std))
    return evaluate(eval_step, train_state.params, train_state.state, data, config.eval_batch_size)


def report(
    run: Run, net: Layer, test_data: Dataset, result: FitResult | None, *, status: str, seconds: float
) -> dict[str, Any]:
    """Write the figures and ``results.json`` of a run, from what it has logged so far."""
    history = run.history()
    results: dict[str, Any] = {
        "status": status,
        "epochs_completed": len(history),
        "seconds": round(seconds, 1),
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
        if "epsilon" in last:
            results["epsilon"] = last["epsilon"]
    if result is not None:
        params = result.train_state.params
        results["params"] = count_params(params)
        if result.privacy is not None:
            results["privacy"] = dataclasses.asdict(result.privacy)
        kernel = first_conv_kernel(net, params, (-1, *test_data.images.shape[1:]))
        if kernel is not None:
            plot_filters(kernel, run.path / FILTERS)
        if result.evaluation is not None:
            confusion = result.evaluation.confusion(test_data.num_classes)
            plot_confusion(confusion, test_data.class_names, run.path / CONFUSION)
    run.write_results(results)
    return results


def _prepare(
    config: TrainConfig, data_root: Path_ | None, splits: tuple[str, ...] = ("train", "test")
) -> tuple[Layer, Dataset, Dataset | None]:
    """The net and the data splits, checking the model's name before reading any file."""
    check_model_name(config.model)
    data = [load(config.dataset, split, root=data_root) for split in splits]
    train_data = data[0]
    net = get_model(config.model, num_classes=train_data.num_classes)
    return net, train_data, data[1] if len(data) > 1 else None


def _resumed_config(run: Run, given: TrainConfig | None) -> TrainConfig:
    saved = run.config()
    if given is not None and (differences := saved.differences(given)):
        listed = ", ".join(
            f"{name}: {old!r} in the run, {new!r} given" for name, (old, new) in differences.items()
        )
        raise ConfigError(
            f"cannot resume {run.path} with other settings ({listed}); a resumed run continues with "
            "its own configuration: drop those options, or start a new run"
        )
    return saved
