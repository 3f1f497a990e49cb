"""`fit_many` against separate `fit` runs: N seeds and a grid point each equal the run of their own
configuration (params, BatchNorm statistics, optimiser state and metrics, to float tolerance);
chunked equals unchunked; resumed equals uninterrupted.

The equality tests use SGD with momentum: under Adam a parameter whose gradient is zero in exact
arithmetic (the convolution's bias before BatchNorm) is moved by +-lr times the sign of rounding
noise, which differs between a batched and an unbatched convolution.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from synthetic import dataset, tiny_net

import jaxconv as jc
from jaxconv.errors import ConfigError, DivergenceError, NonFiniteLossError
from jaxconv.runs import Run, TrainConfig, fit, fit_many, model_configs, parse_grid
from jaxconv.runs.grid import format_table, summarize
from jaxconv.runs.many import _strategy, model_bytes
from jaxconv.runs.model_axis import Placement, default_strategy, over_models
from jaxconv.runs.progress import check_finite

TRAIN, TEST = dataset(64), dataset(40, "test", seed=1)
CONFIG = TrainConfig(
    model="tiny", epochs=2, batch_size=16, lr=3e-2, optimizer="sgd", augment="crop=2,flip",
    eval_batch_size=40, seed=3, ema_decay=0.5,
)  # fmt: skip
SEEDS, GRID = [3, 5], {"lr": [3e-2, 1e-2]}  # 4 models: (0.03, 3), (0.03, 5), (0.01, 3), (0.01, 5)
METRICS = (
    "train_loss",
    "train_top1",
    "test_loss",
    "test_top1",
    "test_top5",
    "test_ema_top1",
    "test_ema_loss",
)


def assert_close(a, b, tolerance: float = 2e-5) -> None:
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tolerance, atol=tolerance)


def model_history(history, model: int) -> list[dict]:
    return [{name: record[name][model] for name in METRICS} for record in history]


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """The 4 models, one after the other in one program (``strategy='loop'``, the CPU's default)."""
    run = Run(tmp_path_factory.mktemp("many") / "run")
    return fit_many(tiny_net(), TRAIN, TEST, CONFIG, seeds=SEEDS, grid=GRID, run=run, progress=False)


def test_the_cpu_default_is_a_loop_of_the_models_in_one_program():
    assert jax.default_backend() == "cpu" and default_strategy() == "loop"
    # on several devices: each device loops over its own models, or XLA splits a vmap's batch
    assert _strategy("auto", 2, "models") == "loop" and _strategy("auto", 2, "batch") == "vmap"
    with pytest.raises(
        ConfigError, match=r"strategy='loop' splits the model axis over devices=2.*shard='models'"
    ):
        _strategy("loop", 2, "batch")
    with pytest.raises(ConfigError, match=r"strategy='pmap': use one of \('vmap', 'loop'\)"):
        over_models("pmap", 1)


@pytest.mark.parametrize("model", [1, 2])  # (lr 0.03, seed 5) and (lr 0.01, seed 3)
def test_each_model_is_the_fit_run_of_its_seed_and_grid_point(many, model):
    config = many.configs[model]
    assert (config.lr, config.seed) == [(3e-2, 3), (3e-2, 5), (1e-2, 3), (1e-2, 5)][model]
    alone = fit(tiny_net(), TRAIN, TEST, config, progress=False)
    assert_close(many.model(model), alone.train_state)  # params, BN statistics, momentum, step, key
    for mine, theirs in zip(model_history(many.history, model), alone.history, strict=True):
        for name in METRICS:
            assert mine[name] == pytest.approx(theirs[name], abs=1e-5), name
    assert many.evaluations[model].top1 == pytest.approx(alone.evaluation.top1)
    np.testing.assert_array_equal(many.evaluations[model].predictions, alone.evaluation.predictions)


def test_every_model_starts_from_initial_weights_and_on_epoch_sees_each_epoch():
    """Two seeds fine-tuned from one set of weights (another seed's init), as `fit` would."""
    _, params, state = tiny_net().init(jax.random.key(11), (-1, *TRAIN.images.shape[1:]))
    seen = []
    result = fit_many(
        tiny_net(), TRAIN, TEST, CONFIG, seeds=[3, 5], initial=(params, state), progress=False,
        on_epoch=lambda record, train_state: seen.append((record["epoch"], train_state.step.shape)),
    )  # fmt: skip
    assert seen == [(1, (2,)), (2, (2,))]
    for model, seed in enumerate([3, 5]):
        config = dataclasses.replace(CONFIG, seed=seed)
        alone = fit(tiny_net(), TRAIN, TEST, config, initial=(params, state), progress=False)
        assert_close(result.model(model), alone.train_state)


def test_one_checkpoint_holds_every_model_and_the_records_list_them(many):
    run = many.run
    assert [r["epoch"] for r in run.history()] == [1, 2]
    assert all(len(run.history()[-1][name]) == 4 for name in METRICS)
    assert run.history() == many.history
    assert json.loads((run.path / "models.json").read_text()) == [
        {"seed": 3, "lr": 0.03}, {"seed": 5, "lr": 0.03}, {"seed": 3, "lr": 0.01}, {"seed": 5, "lr": 0.01},
    ]  # fmt: skip
    stacked, metadata = run.load(like=many.train_state)
    assert metadata == {"epoch": 2, "step": 8}
    assert_close(stacked, many.train_state, 0)


def test_resuming_equals_the_uninterrupted_run(many, tmp_path):
    run = Run(tmp_path / "run")
    first = fit_many(
        tiny_net(), TRAIN, TEST, CONFIG, seeds=SEEDS, grid=GRID, run=run, stop_after_epoch=1, progress=False
    )
    assert len(first.history) == 1
    with pytest.raises(
        ConfigError, match=r"cannot resume .* with other models.*the run's own seeds and grid"
    ):
        fit_many(tiny_net(), TRAIN, TEST, CONFIG, seeds=[3], grid=GRID, run=run, resume=True, progress=False)
    resumed = fit_many(
        tiny_net(), TRAIN, TEST, CONFIG, seeds=SEEDS, grid=GRID, run=run, resume=True, progress=False
    )
    assert_close(resumed.train_state, many.train_state, 0)
    assert resumed.history[-1]["test_loss"] == many.history[-1]["test_loss"]


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_more_models_than_the_memory_budget_are_chunked_with_the_same_result(many, strategy):
    need = model_bytes(tiny_net(), TRAIN, CONFIG, {"lr": [1e-2]})
    assert need > jc.train.count_params(many.model(0).params) * 4 * 3  # params, their gradient, momentum
    options = {"seeds": SEEDS, "grid": GRID, "strategy": strategy, "progress": False}
    chunked = fit_many(tiny_net(), TRAIN, TEST, CONFIG, memory_budget=int(3.5 * need), **options)
    assert chunked.chunk_size == 3  # a chunk of 3 (lax.map over vmap, or a barrier) and the remainder
    assert_close(chunked.train_state, many.train_state)  # vmap against the loop: batched convolutions
    assert chunked.history[-1]["test_top1"] == pytest.approx(many.history[-1]["test_top1"])
    with pytest.raises(ConfigError, match=r"memory_budget=1,000 bytes is less than one model's step needs"):
        fit_many(tiny_net(), TRAIN, TEST, CONFIG, seeds=SEEDS, memory_budget=1000, progress=False)


def test_a_shared_order_gives_every_model_the_first_seeds_batches(many):
    shared = fit_many(
        tiny_net(), TRAIN, TEST, CONFIG, seeds=[3], grid=GRID, shared_order=True, progress=False
    )
    for index, model in enumerate([0, 2]):  # seed 3's models: their own order is the shared one
        assert_close(shared.model(index), many.model(model))


def test_the_table_summarizes_each_grid_point_over_seeds(many):
    final = np.asarray(many.history[-1]["test_top1"])
    rows = many.summary()
    assert [row["lr"] for row in rows] == [3e-2, 1e-2] and [row["models"] for row in rows] == [2, 2]
    for row, values in zip(rows, (final[:2], final[2:]), strict=True):
        assert (row["mean"], row["min"], row["max"]) == pytest.approx(
            (values.mean(), values.min(), values.max())
        )
        assert row["std"] == pytest.approx(np.sqrt(np.mean((values - values.mean()) ** 2)))
    lines = many.table().splitlines()
    assert lines[0] == "test_top1 over seeds" and lines[1].split() == [
        "lr",
        "models",
        "mean",
        "std",
        "min",
        "max",
    ]
    assert summarize(model_configs(CONFIG, [1, 2]), [0.5, 0.7])[0] == pytest.approx(
        {"models": 2, "mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7}
    )
    assert format_table([]) == "test_top1: no epoch finished"


def test_grids_and_seeds_are_checked():
    assert parse_grid("lr=0.05,0.1;weight-decay=0,5e-4") == {"lr": [0.05, 0.1], "weight_decay": [0.0, 5e-4]}
    configs = model_configs(CONFIG, [0, 1], {"lr": [0.1, 0.2]})
    assert [(c.lr, c.seed) for c in configs] == [(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)]
    for bad, message in [
        (lambda: parse_grid("lr="), r"'lr=' has no values"),
        (lambda: parse_grid("lr=fast"), r"'lr=fast' is not name=value"),
        (lambda: model_configs(CONFIG, [1, 1]), r"seeds=\[1, 1\]: give at least one seed, each once"),
        (lambda: model_configs(CONFIG, grid={"batch_size": [8]}), r"'batch_size' cannot vary.*separate runs"),
        (lambda: model_configs(CONFIG, grid={"lr": [-1.0]}), r"lr=-1.0: the learning rate must be positive"),
        (lambda: fit_many(tiny_net(), TRAIN, TEST, CONFIG, chunk_size=0), r"chunk_size=0"),
        (lambda: Placement.of(2, "models", 3, 16), r"3 models do not split over 2 devices.*shard='batch'"),
        (lambda: Placement.of(2, "batch", 4, 15), r"batch_size=15 does not split over 2 devices"),
        (lambda: Placement.of(1, "rows", 4, 16), r"shard='rows': split the model axis"),
    ]:
        with pytest.raises(ConfigError, match=message):
            bad()


def test_a_non_finite_loss_stops_the_models_only_when_every_one_has_it():
    with pytest.raises(
        NonFiniteLossError, match=r"became nan at step 3 of epoch 1 \(every one of the 2 models\)"
    ):
        check_finite(np.array([np.nan, np.inf]), 0, 3, None)
    check_finite(np.array([0.5, np.nan, np.inf]), 0, 3, None)  # judged per model after the epoch


def test_a_diverged_model_is_named_and_the_others_train_on(tmp_path, capsys):
    """A grid point with a learning rate far too high diverges; the other trains as `fit` would."""
    grid = {"lr": [3e-2, 1e4]}
    run = Run(tmp_path / "run")
    result = fit_many(tiny_net(), TRAIN, TEST, CONFIG, seeds=[3], grid=grid, run=run, progress=False)
    assert result.diverged[0] is None and "training loss of epoch 1" in result.diverged[1]
    assert "model 1 (seed 3, lr 10000) diverged" in capsys.readouterr().err
    alone = fit(tiny_net(), TRAIN, TEST, CONFIG, progress=False)
    assert_close(result.model(0).params, alone.train_state.params)
    assert [row["diverged"] for row in result.summary()] == [0, 1]
    assert run.history()[-1]["diverged"] == result.diverged
    with pytest.raises(DivergenceError, match=r"every model diverged \(model 0: the training loss"):
        fit_many(tiny_net(), TRAIN, TEST, CONFIG, seeds=[3, 5], grid={"lr": [1e4]}, progress=False)
