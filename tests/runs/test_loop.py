"""The fit loop on a tiny synthetic problem: it learns, resumes exactly, stops on a non-finite loss,
and refuses bad input before writing anything."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from synthetic import dataset, tiny_net

import jaxconv.runs.loop as loop
from jaxconv.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirError
from jaxconv.runs import Run, TrainConfig, fit
from jaxconv.runs.directory import checkpoint_metadata
from jaxconv.train import save_checkpoint

TRAIN, TEST = dataset(96), dataset(40, "test", seed=1)
CONFIG = TrainConfig(
    model="tiny", epochs=3, batch_size=16, lr=3e-2, augment="crop=2,flip", eval_batch_size=40, seed=3
)


def assert_trees_equal(a, b) -> None:
    a, b = a._replace(key=jax.random.key_data(a.key)), b._replace(key=jax.random.key_data(b.key))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """An uninterrupted run of `CONFIG` (3 epochs)."""
    run = Run(tmp_path_factory.mktemp("whole") / "run")
    return run, fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, progress=False)


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory):
    """The same run stopped after its first epoch."""
    run = Run(tmp_path_factory.mktemp("first") / "run")
    return run, fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, stop_after_epoch=1, progress=False)


def copy_run(run: Run, destination) -> Run:
    return Run(shutil.copytree(run.path, destination / "run"))


def test_fit_learns_logs_each_epoch_and_checkpoints(whole):
    run, result = whole
    assert [r["epoch"] for r in result.history] == [1, 2, 3] == [r["epoch"] for r in run.history()]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.evaluation.top1 > 0.5  # chance is 0.1
    assert result.history[-1]["test_top1"] == result.evaluation.top1
    assert checkpoint_metadata(run.checkpoint) == {"epoch": 3, "step": 18}
    assert sorted(path.name for path in (run.path / "orbax").iterdir()) == ["12", "18", "6"]  # the last 3
    assert int(result.train_state.step) == 18  # 3 epochs of 96 // 16 steps
    assert json.loads((run.path / "config.json").read_text())["augment"] == "crop=2,flip"
    confusion = result.evaluation.confusion(10)
    assert confusion.sum() == len(TEST) and np.trace(confusion) == round(result.evaluation.top1 * len(TEST))


def test_resuming_gives_the_same_final_state_as_an_uninterrupted_run(whole, first_epoch, tmp_path):
    assert len(first_epoch[1].history) == 1
    run = copy_run(first_epoch[0], tmp_path)
    resumed = fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, resume=True, progress=False)
    assert_trees_equal(resumed.train_state, whole[1].train_state)  # params, BN state, moments, step, key
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in whole[1].history]
    assert [r["test_loss"] for r in run.history()] == [r["test_loss"] for r in whole[1].history]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    make_step = loop._make_train_step

    def failing_in_epoch_two(*args, **kwargs):
        step, calls = make_step(*args, **kwargs), []

        def poisoned(state, images, labels):
            state, metrics = step(state, images, labels)
            calls.append(1)
            return state, metrics | ({"loss": metrics["loss"] * np.nan} if len(calls) == 8 else {})

        return poisoned

    monkeypatch.setattr(loop, "_make_train_step", failing_in_epoch_two)
    run = Run(tmp_path / "run")
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss became nan at step 2 of epoch 2.*last good epoch is kept in .*run/orbax/6.*--lr",
    ):
        fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, progress=False)
    assert checkpoint_metadata(run.checkpoint) == {"epoch": 1, "step": 6}
    assert [r["epoch"] for r in run.history()] == [1]


def test_a_batch_larger_than_the_data_fails_before_anything_is_written(tmp_path):
    run = Run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"batch_size=200 is larger than the dataset \(96 examples\)"):
        fit(tiny_net(), TRAIN, TEST, TrainConfig(batch_size=200), run=run, progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -0.1}, r"lr=-0.1: the learning rate must be positive"),
        ({"epochs": 0}, r"epochs=0: train for at least 1 epoch"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1.0: must be in \[0, 1\)"),
        ({"augment": "rotate"}, r"unknown augmentation 'rotate'; use 'none', 'flip', 'crop'"),
        ({"optimizer": "lion"}, r"optimizer='lion': valid optimizers"),
    ],
)
def test_bad_options_fail_before_any_step(change, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        fit(tiny_net(), TRAIN, TEST, TrainConfig(**change), run=Run(tmp_path), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_checkpoint_fails_the_resume_and_is_left_as_it_was(first_epoch, tmp_path):
    run = copy_run(first_epoch[0], tmp_path)
    largest = max(
        (path for path in run.checkpoint.rglob("*") if path.is_file()), key=lambda p: p.stat().st_size
    )
    largest.write_bytes(largest.read_bytes()[:100])
    files = {path: path.read_bytes() for path in run.path.rglob("*") if path.is_file()}
    with pytest.raises(
        CheckpointError, match=r"run/orbax/6 is not a readable Orbax checkpoint.*truncated or corrupt"
    ):
        fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, resume=True, progress=False)
    assert {path: path.read_bytes() for path in run.path.rglob("*") if path.is_file()} == files


def test_a_run_with_only_an_npz_checkpoint_resumes_exactly(whole, first_epoch, tmp_path):
    """A run directory written before the Orbax checkpoints (checkpoint.npz) continues from it."""
    run = copy_run(first_epoch[0], tmp_path)
    tree, metadata = run.load(like=first_epoch[1].train_state)
    save_checkpoint(run.path / "checkpoint.npz", tree, metadata)
    shutil.rmtree(run.path / "orbax")
    resumed = fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, resume=True, progress=False)
    assert_trees_equal(resumed.train_state, whole[1].train_state)
    assert checkpoint_metadata(run.checkpoint) == {"epoch": 3, "step": 18}  # saved through Orbax since


def test_a_save_killed_half_way_leaves_the_previous_step_to_resume_from(whole, first_epoch, tmp_path):
    run = copy_run(first_epoch[0], tmp_path)
    torn = run.path / "orbax" / "12.orbax-checkpoint-tmp-1700000000000000"  # what Orbax leaves mid-save
    shutil.copytree(run.checkpoint, torn)
    for path in torn.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert run.checkpoint.name == "6"
    resumed = fit(tiny_net(), TRAIN, TEST, CONFIG, run=run, resume=True, progress=False)
    assert_trees_equal(resumed.train_state, whole[1].train_state)
    assert sorted(path.name for path in (run.path / "orbax").iterdir()) == ["12", "18", "6"]  # torn one gone


def test_run_directory_checks(first_epoch, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(
        RunDirError, match=r"cannot write to the run directory .*file/run.*choose another --run-dir"
    ):
        Run.open(tmp_path / "file" / "run")
    with pytest.raises(RunDirError, match=r"cannot resume from .*: it has no config\.json"):
        Run.open(tmp_path / "empty", resume=True)
    with pytest.raises(RunDirError, match=r"already holds a run; pass --resume to continue it"):
        Run.open(first_epoch[0].path)


def test_fit_checks_a_run_it_is_given_before_writing(first_epoch, tmp_path):
    held = copy_run(first_epoch[0], tmp_path / "held")
    files = {path: path.read_bytes() for path in held.path.rglob("*") if path.is_file()}
    with pytest.raises(RunDirError, match=r"already holds a run; pass --resume to continue it"):
        fit(tiny_net(), TRAIN, TEST, CONFIG, run=Run(held.path), progress=False)
    assert {path: path.read_bytes() for path in held.path.rglob("*") if path.is_file()} == files
    with pytest.raises(RunDirError, match=r"cannot resume from .*: it has no config\.json"):
        fit(tiny_net(), TRAIN, TEST, CONFIG, run=Run(tmp_path / "empty"), resume=True, progress=False)


def test_history_keeps_the_last_record_of_each_epoch_and_skips_a_cut_line(tmp_path):
    run = Run(tmp_path)
    for record in ({"epoch": 1, "x": 1}, {"epoch": 2, "x": 2}, {"epoch": 2, "x": 3}):
        run.log(record)
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 3, "x"')
    assert run.history() == [{"epoch": 1, "x": 1}, {"epoch": 2, "x": 3}]


def initial_of(net, config: TrainConfig):
    """The (params, state) `fit` draws for ``config.seed``: its model key, split by init_train_state."""
    model_key = jax.random.split(jax.random.key(config.seed))[0]
    _, params, state = net.init(jax.random.split(model_key)[0], (-1, *TRAIN.images.shape[1:]))
    return params, state


def test_fit_from_initial_params_calls_on_epoch_and_keeps_the_callers_arrays(whole):
    params, state = initial_of(tiny_net(), CONFIG)
    seen = []
    result = fit(
        tiny_net(), TRAIN, TEST, CONFIG, initial=(params, state), progress=False,
        on_epoch=lambda record, train_state: seen.append((record, int(train_state.step))),
    )  # fmt: skip
    assert_trees_equal(result.train_state, whole[1].train_state)  # the same start gives the same run
    assert [(record["epoch"], step) for record, step in seen] == [(1, 6), (2, 12), (3, 18)]
    assert [record for record, _ in seen] == result.history
    for leaf in jax.tree_util.tree_leaves((params, state)):
        assert not leaf.is_deleted()  # the donated train state holds copies


def test_initial_params_that_do_not_fit_the_net_fail_before_anything_is_written(tmp_path):
    params, state = initial_of(tiny_net(num_classes=3), CONFIG)
    run = Run(tmp_path / "run")
    with pytest.raises(
        ConfigError,
        match=r"params\['dense_6'\]\['kernel'\] is float32\[196, 3\] but the net needs float32\[196, 10\]",
    ):
        fit(tiny_net(), TRAIN, TEST, CONFIG, initial=(params, state), run=run, progress=False)
    assert not run.path.exists()
