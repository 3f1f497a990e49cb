"""``jaxconv train --data PATH``: a run on an image folder, end to end from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconv as jc
import jaxconv.cli as cli
from jaxconv.errors import ConfigError
from jaxconv.models import registry
from jaxconv.runs import experiment, loop
from jaxconv.runs.directory import checkpoint_metadata

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import CORRUPT, tiny_net, write_folder


def test_jaxconv_train_on_an_image_folder(tmp_path, capsys):
    """End to end from the command line, Grain's worker processes decoding: RGB, grayscale and a
    corrupt file, a model of 16x16x3 inputs, one epoch; then the run evaluates and exports."""
    folder, run = write_folder(tmp_path / "images"), tmp_path / "run"
    spec = registry.ModelSpec("tiny_rgb", tiny_net, (16, 16, 3), 10, {})
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny_rgb", spec)
        argv = ["train", "--data", folder, "--model", "tiny_rgb", "--epochs", "1", "--batch-size", "4"]
        status = cli.main([str(a) for a in [*argv, "--run-dir", run, "--no-progress"]])
        assert status == 0
        captured = capsys.readouterr()
        assert cli.main(["evaluate", str(run), "--data-dir", str(folder)]) == 0
        assert "test: top-1" in capsys.readouterr().out
        assert cli.main(["export", str(run), "--data-dir", str(folder)]) == 0
    exported = jax.export.deserialize((run / "model.stablehlo").read_bytes())
    assert str(exported.in_avals[0]) == "uint8[N,16,16,3]"
    assert f"skipping unreadable image {folder / CORRUPT}" in captured.err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "complete" and 0 <= results["test_top1"] <= 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == "imagefolder" and config["model"] == "tiny_rgb"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "tiny_rgb on imagefolder" in page and "data:image/png;base64," in page


def test_several_processes_are_refused_an_image_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    config = jc.runs.TrainConfig(dataset="imagefolder", model="lenet5")
    with pytest.raises(ConfigError, match="train on an image folder in one process"):
        experiment._load(config, write_folder(tmp_path / "images", per_class=1))


def test_dp_sgd_is_refused_an_image_folder(tmp_path):
    config = jc.runs.TrainConfig(dataset="imagefolder", model="dp_cnn", dp_epsilon=3.0)
    with pytest.raises(ConfigError, match="DP-SGD samples Poisson batches from data in memory"):
        experiment._load(config, write_folder(tmp_path / "images", per_class=1))


class Killed(Exception):
    """Stands for a kill of the training process."""


def test_a_run_on_an_image_folder_resumes_in_the_middle_of_an_epoch_exactly(tmp_path, monkeypatch):
    """A run saving every 3 steps (4 a epoch) is stopped in its second epoch after the save of step 6;
    resumed from it, where Grain's iterator state stood (workers decoding, a corrupt file shifting
    the batches' rows), it ends as the run never stopped: train state, records."""
    folder = write_folder(tmp_path / "images")

    def data():
        options = {"root": folder, "image_size": (8, 8, 3)}
        return jc.data.load("imagefolder", "train", workers=0, **options), jc.data.load("imagefolder", "test", workers=0, **options)  # fmt: skip

    config = jc.runs.TrainConfig(
        model="tiny", dataset="imagefolder", epochs=2, batch_size=4, lr=3e-2, eval_batch_size=8,
        augment="flip", checkpoint_every=3,
    )  # fmt: skip
    whole = jc.runs.fit(tiny_net(3), *data(), config, run=jc.runs.Run(tmp_path / "whole"), progress=False)
    make_step, calls = loop._make_train_step, []

    def killed_at_step_7(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def counted(*step_args):
            calls.append(1)
            if len(calls) == 7:
                raise Killed
            return step(*step_args)

        return counted

    run = jc.runs.Run(tmp_path / "killed")
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_make_train_step", killed_at_step_7)
        with pytest.raises(Killed):
            jc.runs.fit(tiny_net(3), *data(), config, run=run, progress=False)
    assert sorted(int(path.name) for path in (run.path / "orbax").iterdir()) == [3, 4, 6]
    midway = checkpoint_metadata(run.checkpoint)
    assert (midway["epoch"], midway["step"], midway["midway"]["position"]["batches"]) == (1, 6, 2)
    resumed = jc.runs.fit(tiny_net(3), *data(), config, run=run, resume=True, progress=False)
    for a, b in zip(leaves(resumed.train_state), leaves(whole.train_state), strict=True):
        np.testing.assert_array_equal(a, b)
    for got, want in zip(run.history(), whole.history, strict=True):
        assert {k: got[k] for k in ("train_loss", "test_loss", "step")} == {
            k: want[k] for k in ("train_loss", "test_loss", "step")
        }


def leaves(train_state) -> list[np.ndarray]:
    return [
        np.asarray(leaf)
        for leaf in jax.tree_util.tree_leaves(train_state._replace(key=jax.random.key_data(train_state.key)))
    ]
