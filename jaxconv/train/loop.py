"""The fit loop: epochs of jitted steps, evaluation after each, checkpoints and a progress bar.

    result = fit(net, train_data, test_data, TrainConfig(epochs=6), run=Run("runs/first"))

Each epoch visits the training set in the order ``epoch_order(data_key, epoch)``
and step ``t`` draws its augmentation and dropout from ``fold_in(key, t)``, so
the whole run is a function of the seed: resuming from the checkpoint of epoch
``e`` gives the same final parameters as a run that never stopped.

In a run of several processes every process runs `fit` alike (the steps, the
evaluation, the metrics, the checkpoint's gathering); only process 0 writes
the run directory and shows the progress bar.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxconv import distributed
from jaxconv.core import Layer, Params, State
from jaxconv.data import Dataset, batches, num_batches
from jaxconv.errors import ConfigError, NonFiniteLossError
from jaxconv.train import optim, private
from jaxconv.train.config import TrainConfig
from jaxconv.train.figures import confusion_matrix
from jaxconv.train.private import PrivacyPlan
from jaxconv.train.run import Run, is_writer
from jaxconv.train.state import TrainState, init_train_state
from jaxconv.train.step import EvalStep, Preprocess, make_preprocess

LOG_EVERY = 10  # steps between looks at the metrics (each look waits for the device)


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


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the final train state, the per-epoch records, the last evaluation and,
    for DP-SGD, the privacy plan (`jaxconv.train.private.PrivacyPlan`)."""

    train_state: TrainState
    history: list[dict[str, Any]]
    evaluation: Evaluation | None
    privacy: PrivacyPlan | None = None


def evaluate(eval_step: EvalStep, params: Params, state: State, data: Dataset, batch_size: int) -> Evaluation:
    """Run ``eval_step`` (see `make_eval_step`) over ``data`` in its stored order, every example once."""
    sums: list[dict[str, jax.Array]] = []
    for images, labels in batches(data, min(batch_size, len(data)), drop_remainder=False):
        sums.append(eval_step(params, state, images, labels))
    host = jax.device_get(sums)
    count = len(data)
    total = {name: sum(float(s[name]) for s in host) / count for name in ("loss", "top1", "top5")}
    predictions = np.concatenate([s["predictions"] for s in host])
    return Evaluation(total["loss"], total["top1"], total["top5"], data.labels, predictions)


def fit(
    net: Layer,
    train_data: Dataset,
    test_data: Dataset,
    config: TrainConfig,
    *,
    initial: tuple[Params, State] | None = None,
    on_epoch: Callable[[dict[str, Any], TrainState], None] | None = None,
    run: Run | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``net`` on ``train_data`` as ``config`` says, evaluating on ``test_data`` each epoch.

    Args:
      initial: the (params, state) to start from instead of ``net.init``'s, e.g. the weights
        `jaxconv.interop.from_torchvision` returns (resuming ``run`` starts from its
        checkpoint instead).
      on_epoch: called as ``on_epoch(record, train_state)`` after each epoch, with the
        epoch's history record and the train state (to measure or plot as training goes).
      run: where to log metrics and keep the checkpoint of the last good epoch
        (None: nothing is written); checked with `Run.prepare` first.
      resume: continue from ``run``'s checkpoint instead of starting afresh.
      stop_after_epoch: return after this epoch (the schedule still spans
        ``config.epochs``), e.g. to split a run over several sessions.
      progress: show a progress bar per epoch.

    Raises:
      ConfigError: before any step, for a bad configuration, a batch larger than the data,
        ``initial`` trees that do not fit the net, or a run of several processes that does
        not train on all their devices.
      CheckpointError: before any step, when resuming from a corrupt checkpoint.
      NonFiniteLossError: when the loss becomes NaN or infinite; the run's checkpoint
        is still that of the last good epoch.
    """
    config.validate()
    _check_processes(config)
    try:
        steps_per_epoch = num_batches(len(train_data), config.batch_size)
    except ValueError as error:
        raise ConfigError(f"{error} (the {train_data.split} split of {train_data.name})") from None
    optimizer = optim.from_config(config, steps_per_epoch)
    model_key, data_key = jax.random.split(jax.random.key(config.seed))
    input_shape = (-1, *train_data.images.shape[1:])
    train_state = init_train_state(net, optimizer, input_shape, model_key, initial)
    training = _training(net, optimizer, config, train_data, data_key)
    eval_step = distributed.make_eval_step(net, devices=config.devices, preprocess=training.preprocess)
    history, first_epoch, writer = [], 0, is_writer()
    if run is not None:
        run.prepare(resume=resume)
        _barrier("jaxconv: run directory checked")  # by every process, before process 0 writes
    if run is not None and resume:
        train_state, metadata = distributed.load_checkpoint(run.checkpoint, like=train_state)
        first_epoch, history = metadata["epoch"], run.history()[: metadata["epoch"]]
    elif run is not None and writer:
        run.start(config)

    last_epoch = min(config.epochs, stop_after_epoch or config.epochs)
    evaluation = None
    for epoch in range(first_epoch, last_epoch):
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not (progress and writer),
            dynamic_ncols=True,
        )
        with bar:
            train_state, train_metrics = _train_epoch(
                training.step, train_state, training.batches(epoch), config.batch_size, epoch, bar, run
            )
            evaluation = evaluate(
                eval_step, train_state.params, train_state.state, test_data, config.eval_batch_size
            )
            bar.set_postfix_str(f"{bar.postfix}, test_acc={evaluation.top1:.2%}")
        record = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps_per_epoch,
            **{f"train_{name}": value for name, value in train_metrics.items()},
            **{f"test_{name}": getattr(evaluation, name) for name in ("loss", "top1", "top5")},
        }
        if training.privacy is not None:
            record["epsilon"] = training.privacy.epsilon(record["step"])
        history.append(record)
        if run is not None:
            if writer:
                run.log(record)
            metadata = {"epoch": epoch + 1, "step": record["step"]}
            distributed.save_checkpoint(run.checkpoint, train_state, metadata)  # process 0 writes
        if on_epoch is not None:
            on_epoch(record, train_state)
    return FitResult(train_state, history, evaluation, training.privacy)


class _Training(NamedTuple):
    """How `fit` trains: the step, each epoch's batches, the preprocessing and the DP plan."""

    step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    batches: Callable[[int], Iterable[tuple[jax.Array, ...]]]
    preprocess: Preprocess
    privacy: PrivacyPlan | None


def _training(net: Layer, optimizer, config: TrainConfig, train_data: Dataset, data_key) -> _Training:
    """The usual data-parallel training, or DP-SGD on Poisson batches when ``config.dp_epsilon``
    is set; a net that cannot train privately is refused here, before any step."""
    augmentation = config.augmentation
    preprocess = make_preprocess(
        train_data.mean, train_data.std, crop_padding=augmentation.crop_padding, flip=augmentation.flip
    )
    if config.dp_epsilon is not None:
        private.check_private(net, config.model)
        plan = private.privacy_plan(config, len(train_data))
        step = private.make_private_train_step(
            net, optimizer, plan, preprocess=preprocess, label_smoothing=config.label_smoothing
        )
        return _Training(step, partial(private.private_batches, train_data, plan, data_key), preprocess, plan)
    step = distributed.make_train_step(
        net,
        optimizer,
        devices=config.devices,
        preprocess=preprocess,
        label_smoothing=config.label_smoothing,
    )

    def epoch_batches(epoch: int) -> Iterable[tuple[jax.Array, ...]]:
        return batches(train_data, config.batch_size, key=data_key, epoch=epoch)

    return _Training(step, epoch_batches, preprocess, None)


def _check_processes(config: TrainConfig) -> None:
    """A run of several processes trains on all their devices: one mesh, each process its rows."""
    processes, devices = jax.process_count(), jax.device_count()
    if processes > 1 and config.devices != devices:
        raise ConfigError(
            f"devices={config.devices}, but this run has {processes} processes with {devices} devices "
            f"in all; several processes train on every device together: use --devices {devices}"
        )


def _barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _train_epoch(
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    train_state: TrainState,
    epoch_batches: Iterable[tuple[jax.Array, ...]],
    examples_per_step: int,
    epoch: int,
    bar: tqdm,
    run: Run | None,
) -> tuple[TrainState, dict[str, float]]:
    """One pass of ``train_step`` over the batches; returns the new state and the epoch's mean
    metrics and speed (``examples_per_step``: the batch size, or DP-SGD's expected one).

    The metrics stay on the device and are fetched every `LOG_EVERY` steps, so
    the host keeps dispatching steps ahead of the device in between.
    """
    meter = _Meter(epoch, bar, run)
    pending: list[dict[str, jax.Array]] = []
    for batch in epoch_batches:
        train_state, metrics = train_step(train_state, *batch)
        meter.dispatched(examples_per_step)
        pending.append(metrics)
        if len(pending) == LOG_EVERY:
            meter.receive(jax.device_get(pending))
            pending = []
    meter.receive(jax.device_get(pending))
    return train_state, meter.summary()


class _Meter:
    """Running means of the step metrics, the throughput, the progress bar and the finiteness check."""

    def __init__(self, epoch: int, bar: tqdm, run: Run | None):
        self.epoch, self.bar, self.run = epoch, bar, run
        self.totals: dict[str, float] = {}
        self.steps = self.examples = 0
        self.started = time.perf_counter()
        self.warm: float | None = None  # when the first step returned, i.e. compilation was over
        self.warm_examples = 0

    def dispatched(self, examples: int) -> None:
        self.examples += examples
        if self.warm is None:
            self.warm, self.warm_examples = time.perf_counter(), self.examples

    def receive(self, metrics: list[dict[str, Any]]) -> None:
        for step_metrics in metrics:
            self.steps += 1
            _check_finite(step_metrics["loss"], self.epoch, self.steps, self.run)
            for name, value in step_metrics.items():
                self.totals[name] = self.totals.get(name, 0.0) + float(value)
        if metrics:
            mean = self.summary()
            self.bar.set_postfix_str(
                f"loss={mean['loss']:.4f}, acc={mean['top1']:.2%}, {mean['images_per_second']:,.0f} img/s",
                refresh=False,
            )
            self.bar.update(len(metrics))

    def summary(self) -> dict[str, float]:
        """Mean metrics, images per second after compilation, and the seconds of the epoch so far."""
        now = time.perf_counter()
        elapsed = now - (self.warm or now)
        speed = (self.examples - self.warm_examples) / elapsed if elapsed > 0 else math.nan
        means = {name: total / max(self.steps, 1) for name, total in self.totals.items()}
        return {**means, "images_per_second": speed, "seconds": now - self.started}


def _check_finite(loss: Any, epoch: int, step_in_epoch: int, run: Run | None) -> None:
    if np.isfinite(loss):
        return
    kept = (
        f"; the checkpoint of the last good epoch is kept in {run.checkpoint}"
        if run is not None and run.checkpoint.exists()
        else ("; no epoch had finished, so there is no checkpoint" if run is not None else "")
    )
    raise NonFiniteLossError(
        f"the training loss became {float(loss)} at step {step_in_epoch} of epoch {epoch + 1}; "
        f"training stopped{kept}. Lower the learning rate (--lr), add warmup (--warmup-epochs) "
        "or check the data"
    )
