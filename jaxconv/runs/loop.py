"""The fit loop: epochs of jitted steps, evaluation after each, checkpoints and a progress bar.

    run, config = Run.open("runs/first", TrainConfig(epochs=6))
    result = fit(net, train_data, test_data, config, run=run)

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
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from jaxconv.core import Layer, Params, State
from jaxconv.data import Dataset, Mix, batches, num_batches, parse_mix
from jaxconv.distributed import (
    make_mesh,
    make_sharded_eval_step,
    make_sharded_train_step,
)
from jaxconv.errors import CheckpointError, ConfigError, DivergenceError
from jaxconv.runs import fixed_front, private
from jaxconv.runs.config import TrainConfig, optimizer_for
from jaxconv.runs.directory import BEST, Run, is_writer, saving
from jaxconv.runs.divergence import DEFAULT_RULE, FIX, Divergence
from jaxconv.runs.private import PrivacyPlan
from jaxconv.runs.progress import EpochMeter
from jaxconv.train import (
    EvalStep,
    Evaluation,
    Preprocess,
    TrainState,
    TrainStep,
    evaluate,
    evaluate_ema,
    init_train_state,
    make_eval_step,
    make_preprocess,
    make_train_step,
)

LOG_EVERY = 10  # steps between looks at the metrics (each look waits for the device)


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the final train state, the per-epoch records, the last evaluation,
    for DP-SGD the privacy plan (`jaxconv.runs.private.PrivacyPlan`), and the run it wrote."""

    train_state: TrainState
    history: list[dict[str, Any]]
    evaluation: Evaluation | None
    privacy: PrivacyPlan | None = None
    run: Run | None = None


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
    divergence_rule: Divergence | None = DEFAULT_RULE,
    fixed_front_once: bool = True,
) -> FitResult:
    """Train ``net`` on ``train_data`` as ``config`` says, evaluating on ``test_data`` each epoch.

    Args:
      initial: the (params, state) to start from instead of ``net.init``'s, e.g. the weights
        `jaxconv.interop.from_torchvision` returns (resuming starts from the checkpoint).
      on_epoch: called as ``on_epoch(record, train_state)`` after each epoch's record.
      run: where to log metrics and keep the checkpoint of the last good epoch, checked by
        `Run.open` (None: nothing is written).
      resume: continue from ``run``'s checkpoint instead of starting afresh.
      stop_after_epoch: return after this epoch (the schedule still spans ``config.epochs``).
      progress: show a progress bar per epoch.
      divergence_rule: the rule that stops a diverged run after an epoch (`jaxconv.runs.divergence`);
        None: only a non-finite loss stops it.
      fixed_front_once: a fixed first layer (the scattering transform) is applied to each image
        once, before the first step, where training changes no image (`jaxconv.runs.fixed_front`:
        the same weights); False: at every step.

    Raises:
      ConfigError: before any step, for a bad configuration, a batch larger than the data,
        ``initial`` trees that do not fit the net, or processes not training on all devices.
      CheckpointError: before any step, when resuming from a corrupt checkpoint.
      NonFiniteLossError: the loss became NaN or infinite; the last good checkpoint is kept.
      DivergenceError: the run diverged (``divergence_rule``); its epoch's record is logged, its
        train state is not saved, and the checkpoints of the last good and the best epoch are kept.
    """
    steps_per_epoch = _steps_per_epoch(config, train_data)
    _check_data(config, train_data, test_data)
    if fixed_front_once:
        net, train_data, test_data = fixed_front.compute_once(net, train_data, test_data, config)
    optimizer = optimizer_for(config, steps_per_epoch)
    model_key, data_key = jax.random.split(jax.random.key(config.seed))
    input_shape = (-1, *train_data.images.shape[1:])
    train_state = init_train_state(net, optimizer, input_shape, model_key, initial)
    training = _training(net, optimizer, config, train_data, data_key, steps_per_epoch)
    evaluation = None
    with saving(run):  # the last checkpoint is written before `fit` returns or raises
        train_state, history, first_epoch, midway = _start(run, resume, config, train_state)
        for epoch in range(first_epoch, min(config.epochs, stop_after_epoch or config.epochs)):
            train_state, record, evaluation = _epoch(
                training, train_state, epoch, config, test_data, run, progress, midway
            )
            midway = None
            history.append(record)
            _stop_if_diverged(divergence_rule, history, test_data.num_classes, run)
            _keep(run, record, train_state, history)
            if on_epoch is not None:
                on_epoch(record, train_state)
    return FitResult(train_state, history, evaluation, training.privacy, run)


class _Training(NamedTuple):
    """How `fit` trains: the step, each epoch's batches, the evaluation step and the DP plan."""

    step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    batches: Callable[[int], Iterable[tuple[jax.Array, ...]]]
    eval_step: EvalStep
    steps_per_epoch: int
    privacy: PrivacyPlan | None


def _training(
    net: Layer,
    optimizer: optax.GradientTransformation,
    config: TrainConfig,
    data: Dataset,
    data_key: jax.Array,
    steps: int,
) -> _Training:
    """The usual (data-parallel) training, or DP-SGD on Poisson batches when ``config.dp_epsilon``
    is set: the driver's one branch. A net that cannot train privately is refused here."""
    augmentation = config.augmentation
    preprocess = make_preprocess(
        data.mean, data.std, crop_padding=augmentation.crop_padding, flip=augmentation.flip
    )
    if config.dp_epsilon is not None:
        private.check_private(net, config.model)
        plan = private.privacy_plan(config, len(data))
        step = private.make_private_train_step(
            net, optimizer, plan, preprocess=preprocess, label_smoothing=config.label_smoothing
        )
        eval_step = make_eval_step(net, preprocess=preprocess, **_views(config))  # DP-SGD: one device
        return _Training(step, partial(private.private_batches, data, plan, data_key), eval_step, steps, plan)
    step = _make_train_step(
        net, optimizer, devices=config.devices, preprocess=preprocess, label_smoothing=config.label_smoothing,
        mix=parse_mix(config.mix),
    )  # fmt: skip
    eval_step = _make_eval_step(net, devices=config.devices, preprocess=preprocess, **_views(config))

    def epoch_batches(epoch: int, position: dict[str, Any] | None = None) -> Iterable[tuple[jax.Array, ...]]:
        return batches(data, config.batch_size, key=data_key, epoch=epoch, position=position)

    return _Training(step, epoch_batches, eval_step, steps, None)


def _make_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    *,
    devices: int = 1,
    preprocess: Preprocess | None = None,
    label_smoothing: float = 0.0,
    mix: Mix | None = None,
) -> TrainStep:
    """`jaxconv.train.make_train_step` on one device, or `make_sharded_train_step` over a mesh of
    ``devices`` local devices, as `fit` uses it: the step takes the train state as
    `init_train_state` makes it (placed on the mesh on its first call) and host batches of any
    size divisible by the device count."""
    options = {"preprocess": preprocess, "label_smoothing": label_smoothing}
    if devices == 1:
        return make_train_step(net, optimizer, mix=mix, **options)
    return make_sharded_train_step(net, optimizer, make_mesh(devices), **options)


def _make_eval_step(
    net: Layer,
    *,
    devices: int = 1,
    preprocess: Preprocess | None = None,
    crop_padding: int = 0,
    flip: bool = False,
) -> EvalStep:
    """`jaxconv.train.make_eval_step` on ``devices`` devices (as `_make_train_step`), with the
    test-time augmentation of ``crop_padding`` and ``flip``."""
    views = {"crop_padding": crop_padding, "flip": flip}
    if devices == 1:
        return make_eval_step(net, preprocess=preprocess, **views)
    return make_sharded_eval_step(net, make_mesh(devices), preprocess=preprocess, **views)


def _views(config: TrainConfig) -> dict[str, Any]:
    """The test-time augmentation of ``config`` as `make_eval_step`'s options."""
    views = config.test_augmentation
    return {"crop_padding": views.crop_padding, "flip": views.flip}


def _steps_per_epoch(config: TrainConfig, train_data: Dataset) -> int:
    """Check the configuration against the data and the processes; the number of steps per epoch."""
    config.validate()
    processes, devices = jax.process_count(), jax.device_count()
    if processes > 1 and config.devices != devices:
        raise ConfigError(
            f"devices={config.devices}, but this run has {processes} processes with {devices} devices "
            f"in all; several processes train on every device together: use --devices {devices}"
        )
    try:
        return num_batches(len(train_data), config.batch_size)
    except ValueError as error:
        raise ConfigError(f"{error} (the {train_data.split} split of {train_data.name})") from None


def _check_data(config: TrainConfig, train_data: Dataset, test_data: Dataset) -> None:
    """Check the options against the training data, and that there is a test split to evaluate on."""
    config.check_data(train_data.images.shape[1:], len(train_data))
    if len(test_data) == 0:
        raise ConfigError(
            f"the {test_data.split} split of {test_data.name} holds no examples, so no epoch could be "
            "evaluated; check the data files (--data-dir)"
        )


def _start(
    run: Run | None, resume: bool, config: TrainConfig, train_state: TrainState
) -> tuple[TrainState, list[dict[str, Any]], int, dict[str, Any] | None]:
    """The train state, history, first epoch and, for a checkpoint saved inside that epoch
    (``checkpoint_every``), where it stood (`_save_midway`'s ``midway``): afresh (process 0
    writes the configuration), or from ``run``'s checkpoint with the records of the epochs it holds."""
    if run is None:
        return train_state, [], 0, None
    run.check(resume=resume)  # again: `fit` may be given a `Run` that `Run.open` never saw
    if jax.process_count() > 1:  # every process has checked the directory before process 0 writes
        multihost_utils.sync_global_devices("jaxconv: run directory checked")
    if resume and is_writer():
        run.repair()
    if not resume or run.checkpoint is None:  # a run stopped before its first checkpoint starts over
        if is_writer():
            run.start(config)
        return train_state, [], 0, None
    train_state, metadata = run.load(like=train_state)
    epoch = metadata.get("epoch")
    if not (isinstance(epoch, int) and 0 <= epoch <= config.epochs):
        raise CheckpointError(
            f"{run.checkpoint}: its metadata gives epoch {epoch!r}, not an epoch of this {config.epochs}-epoch "
            "run; it is corrupt or from another run. Resume from an intact checkpoint or start a new run"
        )
    return train_state, run.history()[:epoch], epoch, metadata.get("midway")


def _epoch(
    training: _Training,
    train_state: TrainState,
    epoch: int,
    config: TrainConfig,
    test_data: Dataset,
    run: Run | None,
    progress: bool,
    midway: dict[str, Any] | None = None,
) -> tuple[TrainState, dict[str, Any], Evaluation]:
    """Train one epoch (from ``midway``, where a checkpoint inside it stood) and evaluate; returns
    the train state, the epoch's record and the evaluation."""
    show = progress and is_writer()
    with EpochMeter(epoch, config.epochs, training.steps_per_epoch, run, show=show) as meter:
        if midway is not None:
            meter.resume(midway["totals"], midway["steps"])
        train_state, train_metrics = _train_epoch(training, train_state, epoch, config, meter, run, midway)
        evaluation = evaluate(
            training.eval_step, train_state.params, train_state.state, test_data, config.eval_batch_size
        )
        meter.tested(evaluation.top1)
    step = (epoch + 1) * training.steps_per_epoch
    record = {
        "epoch": epoch + 1,
        "step": step,
        **{f"train_{name}": value for name, value in train_metrics.items()},
        **{f"test_{name}": getattr(evaluation, name) for name in ("loss", "top1", "top5")},
    }
    if training.privacy is not None:
        record["epsilon"] = training.privacy.epsilon(step)
    averaged = evaluate_ema(training.eval_step, train_state, test_data, config.eval_batch_size)
    if averaged is not None:  # the EMA of the weights (config.ema_decay), beside the weights
        record |= {f"test_ema_{name}": getattr(averaged, name) for name in ("loss", "top1", "top5")}
    return train_state, record, evaluation


def _train_epoch(
    training: _Training,
    train_state: TrainState,
    epoch: int,
    config: TrainConfig,
    meter: EpochMeter,
    run: Run | None,
    midway: dict[str, Any] | None,
) -> tuple[TrainState, dict[str, float]]:
    """One pass of the train step over the epoch's batches (from ``midway``'s position); returns
    the new state and the epoch's mean metrics and speed. Every ``config.checkpoint_every`` steps
    inside the epoch (when its batches give their position) the train state is saved with it.

    The metrics stay on the device and are fetched every `LOG_EVERY` steps, so
    the host keeps dispatching steps ahead of the device in between.
    """
    position = None if midway is None else midway["position"]
    batches = training.batches(epoch) if position is None else training.batches(epoch, position)
    given = 0 if position is None else position["batches"]
    every = config.checkpoint_every if run is not None and hasattr(batches, "position") else 0
    pending: list[dict[str, jax.Array]] = []
    for batch in batches:
        train_state, metrics = training.step(train_state, *batch)
        meter.dispatched(config.batch_size)  # DP-SGD: the expected batch size
        pending.append(metrics)
        given += 1
        step = epoch * training.steps_per_epoch + given
        save = every and step % every == 0 and given < training.steps_per_epoch
        if len(pending) == LOG_EVERY or save:
            meter.receive(jax.device_get(pending))
            pending = []
        if save:
            _save_midway(run, train_state, epoch, step, batches.position(given), meter)
    meter.receive(jax.device_get(pending))
    return train_state, meter.summary()


def _save_midway(
    run: Run, train_state: TrainState, epoch: int, step: int, position: dict[str, Any], meter: EpochMeter
) -> None:
    """Checkpoint a train state inside epoch ``epoch`` (0-based; the metadata's ``epoch`` counts
    the finished ones) with the data's ``position`` and the epoch's metric sums so far."""
    midway = {"position": position, "totals": meter.totals, "steps": meter.steps}
    run.save(train_state, {"epoch": epoch, "step": step, "midway": midway})


def _stop_if_diverged(
    rule: Divergence | None, history: list[dict[str, Any]], num_classes: int, run: Run | None
) -> None:
    """Raise `DivergenceError` when ``rule`` judges the run diverged after the last record of
    ``history``, which is logged (process 0) but not checkpointed."""
    reason = rule.check(history, num_classes) if rule is not None else None
    if reason is None:
        return
    if run is not None and is_writer():
        run.log(history[-1])
    kept = (
        f"; the checkpoint of the last good epoch is kept in {run.checkpoint}, the best epoch's in {run.path / BEST}"
        if run is not None and run.checkpoint is not None
        else ""
    )
    raise DivergenceError(f"training diverged: {reason}{kept}. To fix it, {FIX}")


def _keep(
    run: Run | None, record: dict[str, Any], train_state: TrainState, history: list[dict[str, Any]]
) -> None:
    """Log the epoch's record (process 0), start the train state's Orbax checkpoint (every process
    takes part; it is written while the next epoch trains) and, if its test accuracy is the best
    yet, write it as best.npz (with several models, `fit_many`'s lists of M, their mean test
    accuracy)."""
    if run is None:
        return
    if is_writer():
        run.log(record)
    metadata = {"epoch": record["epoch"], "step": record["step"]}
    run.save(train_state, metadata)
    if np.mean(record["test_top1"]) >= max(np.mean(earlier["test_top1"]) for earlier in history):
        run.keep_best(train_state, metadata)
