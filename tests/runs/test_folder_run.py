"""``jaxconv train --data PATH``: a run on an image folder, end to end from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import pytest

import jaxconv as jc
import jaxconv.cli as cli
from jaxconv.errors import ConfigError
from jaxconv.models import registry
from jaxconv.runs import experiment

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
