"""Many runs in one program: N seeds, or a grid of hyperparameters, trained together with ``vmap``.

    result = fit_many(net, train_data, test_data, config, seeds=[0, 1, 2, 3], grid={"lr": [0.05, 0.1]})
    print(result.table())          # final test accuracy per grid point: mean, std, min, max over seeds

Model ``m`` is the run `fit` would make with ``configs[m]`` (the grid point and seed; grid-major
order): its params, optimiser state and BatchNorm statistics are the ``m``-th slice of one train
state stacked on a leading model axis, it draws its own data order and augmentation and dropout
keys from its seed (or all models see one order: ``shared_order``), and one jitted step trains
all of them. The step, the evaluation, the checkpoint and the records are `fit`'s own: the
same train step (`jaxconv.train.train_step_function`) under ``vmap``, one checkpoint holding
every model, one record per epoch whose metrics are lists of M.

On an accelerator the models are one ``vmap``; on a CPU, where a batch of models' convolutions
is slower than the models' own, the program holds each model's step in turn (`over_models`).
Models that do not fit a memory budget together are trained ``chunk_size`` at a time inside the
same program (``jax.lax.map`` over chunks of ``vmap``, or barriers between chunks of the loop):
the result is the same.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.core import Layer, Params, State
from jaxconv.data import Dataset, epoch_order, num_batches, parse_mix, prefetch_to_device
from jaxconv.errors import ConfigError, DivergenceError
from jaxconv.runs.config import TrainConfig, optimizer_for
from jaxconv.runs.directory import Run, is_writer, saving
from jaxconv.runs.divergence import DEFAULT_RULE, FIX, Divergence, diverged_models
from jaxconv.runs.grid import (
    GRID_FIELDS,
    check_models,
    format_table,
    model_configs,
    summarize,
    varying,
    write_models,
)
from jaxconv.runs.loop import _epoch, _keep, _start, _steps_per_epoch, _Training, _views
from jaxconv.runs.model_axis import Over, Placement, default_strategy, over_models
from jaxconv.train import (
    Evaluation,
    Preprocess,
    TrainState,
    eval_step_function,
    init_train_state,
    make_preprocess,
    per_model,
    train_step_function,
)


@dataclasses.dataclass
class ManyResult:
    """What `fit_many` returns.

    Attributes:
      train_state: the M models' train states stacked on a leading axis (`model` slices one).
      history: one record per epoch, as `fit`'s, each metric a list of M (one per model).
      evaluations: each model's last `Evaluation` (None if no epoch ran).
      diverged: why each model diverged (`jaxconv.runs.divergence`), None for one that did not.
      configs: each model's configuration: the seed and grid point it was trained with.
      chunk_size: how many models one chunk of the step trained at once (M: all together).
      run: the run directory written, if any.
    """

    train_state: TrainState
    history: list[dict[str, Any]]
    evaluations: list[Evaluation] | None
    configs: list[TrainConfig]
    chunk_size: int
    diverged: list[str | None]
    run: Run | None = None

    def model(self, index: int) -> TrainState:
        """Model ``index``'s train state, as `fit` would return it."""
        return jax.tree_util.tree_map(lambda leaf: leaf[index], self.train_state)

    def summary(self, metric: str = "test_top1") -> list[dict[str, Any]]:
        """Per grid point: its values, the number of seeds and the mean, standard deviation
        (over seeds, ddof 0), min and max of ``metric`` in the last epoch's record."""
        return summarize(self.configs, self.history[-1][metric] if self.history else [], self.diverged)

    def table(self, metric: str = "test_top1") -> str:
        """`summary` as a text table."""
        return format_table(self.summary(metric), metric)


def fit_many(
    net: Layer,
    train_data: Dataset,
    test_data: Dataset,
    config: TrainConfig,
    *,
    seeds: Sequence[int] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    initial: tuple[Params, State] | None = None,
    on_epoch: Callable[[dict[str, Any], TrainState], None] | None = None,
    shared_order: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    strategy: str = "auto",
    shard: str = "models",
    run: Run | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    divergence_rule: Divergence | None = DEFAULT_RULE,
) -> ManyResult:
    """Train one model per (grid point, seed) of ``config`` together; evaluate them each epoch.

    Args:
      seeds: the seeds (default: ``[config.seed]``); each model's initialisation, data order,
        augmentation and dropout come from its seed exactly as in `fit`.
      grid: values to try per field of `GRID_FIELDS`, e.g. ``{"lr": [0.05, 0.1, 0.2]}``; every
        combination is trained with every seed.
      initial, on_epoch: as in `fit`: every model starts from ``initial`` (params, state), e.g.
        one pretrained net fine-tuned with several seeds; ``on_epoch(record, train_state)`` sees
        the record of lists and the stacked train state.
      shared_order: every model visits the data in the first seed's order (one batch per step
        for all models instead of one per model).
      chunk_size: train at most this many models at once (None: all, or what ``memory_budget``
        allows).
      memory_budget: bytes the step of one chunk may use, estimated by XLA's memory analysis of
        the step of one model; the chunk size follows from it.
      strategy: how one program holds the models (`over_models`): ``'vmap'``, ``'loop'``, or
        ``'auto'``: ``'loop'`` on a CPU, ``'vmap'`` on an accelerator.
      run, resume, stop_after_epoch, progress: as in `fit`; the run directory also gets
        ``models.json``, and a resumed run must be given the same seeds and grid.
      divergence_rule: judges each model after each epoch, as `fit` does its run (None: only a
        non-finite loss). A model that diverged is named on stderr and in the epoch's record
        (``diverged``: M reasons or None) and trains on, apart from the others.

    Raises:
      ConfigError: a bad configuration, grid or seed list, a grid field that changes the
        program (only `GRID_FIELDS` can), DP-SGD, an axis that does not split over the
        devices, or a memory budget too small for one model.
      DivergenceError: every model has diverged (its epoch's record is logged, not checkpointed).
    """
    configs = model_configs(config, seeds, grid)
    placement = Placement.of(config.devices, shard, len(configs), config.batch_size)
    program = _program(net, train_data, config, configs, shared_order, placement.batch(shared_order), initial)
    chunk = _chunk(chunk_size, memory_budget, program)
    strategy = _strategy(strategy, config.devices, shard)
    over = placement.split(over_models(strategy, chunk), strategy)
    training = _Training(
        _many_train_step(program.step_of_one, program.hypers, over, shared_order), program.batches,
        _many_eval_step(net, program.preprocess, over, config), program.steps, None,
    )  # fmt: skip
    check_models(run, resume, configs)
    evaluation = None
    with saving(run):  # the last checkpoint is written before `fit_many` returns or raises
        first_state = placement.put_state(program.train_state)
        train_state, history, first_epoch, _ = _start(run, resume, config, first_state)
        write_models(run, resume, configs)
        diverged = (history[-1] if history else {}).get("diverged", [None] * len(configs))
        for epoch in range(first_epoch, min(config.epochs, stop_after_epoch or config.epochs)):
            train_state, record, evaluation = _epoch(
                training, train_state, epoch, config, test_data, run, progress
            )
            history.append(_plain(record))
            now = diverged_models(divergence_rule, history, test_data.num_classes, diverged)
            diverged = _announce(now, diverged, configs, history[-1], run)
            _keep(run, history[-1], train_state, history)
            if on_epoch is not None:
                on_epoch(history[-1], train_state)
    evaluations = per_model(evaluation) if evaluation is not None else None
    return ManyResult(train_state, history, evaluations, configs, chunk, diverged, run)


def _announce(
    now: list[str | None], before: list[str | None], configs: Sequence[TrainConfig],
    record: dict[str, Any], run: Run | None,
) -> list[str | None]:  # fmt: skip
    """Name the models that diverged in this epoch (stderr), add every model's reason to the
    epoch's ``record`` once one has, and raise `DivergenceError` once all have."""
    fields = varying(configs)
    for model, (reason, earlier) in enumerate(zip(now, before, strict=True)):
        if reason is not None and earlier is None and is_writer():
            point = ", ".join(f"{name} {getattr(configs[model], name):g}" for name in ("seed", *fields))
            message = f"jaxconv: model {model} ({point}) diverged: {reason}; the others train on"
            print(message, file=sys.stderr)
    if any(reason is not None for reason in now):
        record["diverged"] = now
    if all(reason is not None for reason in now):
        if run is not None and is_writer():
            run.log(record)
        raise DivergenceError(f"every model diverged (model 0: {now[0]}). To fix it, {FIX}")
    return now


def model_bytes(
    net: Layer, train_data: Dataset, config: TrainConfig, grid: Mapping[str, Sequence[float]] | None = None
) -> int:
    """XLA's estimate of the bytes `fit_many`'s step needs per model: arguments, outputs and
    temporaries, less the donated train state it reuses, of the step compiled for one model."""
    program = _program(net, train_data, config, model_configs(config, None, grid)[:1], False, None)
    return _step_bytes(program)


# --- the program -----------------------------------------------------------------------------------


def _refuse_unsupported(config: TrainConfig) -> TrainConfig:
    config.validate()
    if config.dp_epsilon is not None:
        raise ConfigError("fit_many trains without DP-SGD; drop dp_epsilon (--dp-epsilon) or use fit")
    return config


def _strategy(strategy: str, devices: int, shard: str) -> str:
    """The strategy to use: 'auto' is `default_strategy` on one device or with the model axis
    split (each device loops over its own models), else 'vmap'."""
    if strategy == "auto":
        return default_strategy() if devices == 1 or shard == "models" else "vmap"
    if strategy == "loop" and devices > 1 and shard != "models":
        raise ConfigError(
            f"strategy='loop' splits the model axis over devices={devices}, not the batch axis; "
            "use shard='models' (--shard models) or strategy='vmap'"
        )
    return strategy


class _Program(NamedTuple):
    """What `fit_many` trains before any chunking: the stacked train state, the step of one model
    (``step(hyper, train_state, images, labels)``), the (M,) grid values, one model's batch."""

    train_state: TrainState
    step_of_one: Callable[..., Any]
    hypers: dict[str, jax.Array]
    preprocess: Preprocess
    batches: Callable[[int], Iterator[tuple[jax.Array, ...]]]
    batch: tuple[np.ndarray, np.ndarray]
    steps: int


def _program(
    net: Layer,
    data: Dataset,
    config: TrainConfig,
    configs: Sequence[TrainConfig],
    shared_order: bool,
    sharding: jax.sharding.Sharding | None,
    initial: tuple[Params, State] | None = None,
) -> _Program:
    """Each model initialised as `fit` does (its seed split into the model and data keys, or
    ``initial``), stacked."""
    steps = _steps_per_epoch(_refuse_unsupported(config), data)
    input_shape = (-1, *data.images.shape[1:])
    model_keys, data_keys = zip(*(jax.random.split(jax.random.key(c.seed)) for c in configs), strict=True)
    states = [
        init_train_state(net, optimizer_for(c, steps), input_shape, key, initial)
        for c, key in zip(configs, model_keys, strict=True)
    ]
    augmentation = config.augmentation
    preprocess = make_preprocess(
        data.mean, data.std, crop_padding=augmentation.crop_padding, flip=augmentation.flip
    )
    hypers = {
        name: jnp.asarray([getattr(c, name) for c in configs], jnp.float32)
        for name in GRID_FIELDS
        if any(getattr(c, name) != getattr(config, name) for c in configs)
    }
    return _Program(
        jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states),
        _model_step(net, config, steps, preprocess),
        hypers,
        preprocess,
        partial(
            _many_batches,
            data,
            config.batch_size,
            list(data_keys[:1] if shared_order else data_keys),
            shared_order,
            sharding,
        ),
        tuple(array[: config.batch_size] for array in data.arrays),
        steps,
    )


def _step_bytes(program: _Program) -> int:
    """XLA's bytes for the step of a chunk of one model (see `model_bytes`)."""

    def one(leaf: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((1, *np.shape(leaf)[1:]), leaf.dtype)

    def chunk_of_one(*args: Any) -> Any:
        return jax.vmap(program.step_of_one)(*args)

    batch = tuple(array[None] for array in program.batch)
    shapes = jax.tree_util.tree_map(one, (program.hypers, program.train_state, *batch))
    memory = jax.jit(chunk_of_one, donate_argnums=1).lower(*shapes).compile().memory_analysis()
    sizes = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    return int(sizes - memory.alias_size_in_bytes)


def _model_step(net: Layer, config: TrainConfig, steps: int, preprocess: Preprocess) -> Callable[..., Any]:
    """``step(hyper, train_state, images, labels)`` of one model: `fit`'s train step with the
    optimiser and label smoothing of ``config`` updated by ``hyper`` (traced grid values)."""

    def step(
        hyper: dict[str, jax.Array], train_state: TrainState, images: jax.Array, labels: jax.Array
    ) -> Any:
        model_config = dataclasses.replace(config, **hyper)
        train_step = train_step_function(
            net,
            optimizer_for(model_config, steps),
            preprocess=preprocess,
            label_smoothing=model_config.label_smoothing,
            mix=parse_mix(config.mix),
        )
        return train_step(train_state, images, labels)

    return step


def _many_train_step(
    step_of_one: Callable[..., Any], hypers: dict, over: Over, shared_order: bool
) -> Callable[..., Any]:
    """The jitted step of all models: ``step(train_state, images, labels)``, the train state and
    the batch (unless ``shared_order``) stacked on the model axis; donates the train state."""

    def step(train_state: TrainState, images: jax.Array, labels: jax.Array) -> Any:
        if shared_order:
            return over(step_of_one, (hypers, train_state), (images, labels))
        return over(step_of_one, (hypers, train_state, images, labels), ())

    return jax.jit(step, donate_argnums=0)


def _many_eval_step(
    net: Layer, preprocess: Preprocess, over: Over, config: TrainConfig
) -> Callable[..., Any]:
    """`fit`'s evaluation step of every model on one batch: metrics with a leading model axis."""
    eval_step = eval_step_function(net, preprocess=preprocess, **_views(config))

    def step(params: Any, state: Any, images: jax.Array, labels: jax.Array) -> Any:
        return over(eval_step, (params, state), (images, labels))

    return jax.jit(step)


def _many_batches(
    data: Dataset,
    batch_size: int,
    data_keys: list[jax.Array],
    shared: bool,
    sharding: jax.sharding.Sharding | None,
    epoch: int,
) -> Iterator[tuple[jax.Array, ...]]:
    """One epoch of device batches for every model, each in the order of its data key (`fit`'s
    ``epoch_order``): (M, B, H, W, C) images and (M, B) labels; ``shared``: (B, ...) for all."""
    images, labels = data.arrays
    orders = np.stack([epoch_order(len(data), key, epoch) for key in data_keys])  # (M or 1, N)
    count = num_batches(len(data), batch_size)
    if shared:
        orders = orders[0]

    def generate() -> Iterator[tuple[np.ndarray, ...]]:
        for start in range(0, count * batch_size, batch_size):
            index = orders[..., start : start + batch_size]
            yield images[index], labels[index]

    return prefetch_to_device(generate(), 2, sharding)


def _chunk(chunk_size: int | None, memory_budget: int | None, program: _Program) -> int:
    """How many models one chunk trains: ``chunk_size``, what ``memory_budget`` allows, or all."""
    models = len(jax.tree_util.tree_leaves(program.train_state)[0])
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size}: train at least 1 model at a time")
    chunk = min(chunk_size or models, models)
    if memory_budget is None:
        return chunk
    need = _step_bytes(program)
    if need > memory_budget:
        raise ConfigError(
            f"memory_budget={memory_budget:,} bytes is less than one model's step needs ({need:,} bytes, "
            "XLA's estimate); raise the budget or lower batch_size"
        )
    return min(chunk, memory_budget // need)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record as metrics.jsonl keeps it: an (M,) array as a list."""
    return {
        name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in record.items()
    }
