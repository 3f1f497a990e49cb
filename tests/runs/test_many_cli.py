"""``jaxconv train --seeds N --grid ...``: one run directory of many models, resumable by its path."""

from __future__ import annotations

import json

import pytest
from synthetic import tiny_registered, write_idx_dataset

from jaxconv import cli

TINY = ["--model", "tiny", "--batch-size", "16", "--eval-batch-size", "40", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    with tiny_registered():
        yield


def test_seeds_and_a_grid_train_together_and_resume_by_the_run_dir(tmp_path, capsys):
    data, run_dir = write_idx_dataset(tmp_path / "data"), tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "1", "--seed", "7", "--seeds", "2", "--grid", "lr=0.03,0.01"]
    assert cli.main([*argv, "--data-dir", str(data), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "test_top1 over seeds"
    assert out.splitlines()[1].split() == ["lr", "models", "mean", "std", "min", "max"]
    results = json.loads((run_dir / "results.json").read_text())
    assert [(m["seed"], m["lr"]) for m in results["models"]] == [(7, 0.03), (8, 0.03), (7, 0.01), (8, 0.01)]
    assert [row["models"] for row in results["summary"]] == [2, 2]
    assert results["summary"][0]["mean"] == pytest.approx(
        sum(m["test_top1"] for m in results["models"][:2]) / 2
    )
    assert (run_dir / "curves.png").stat().st_size > 0 and results["status"] == "complete"
    resume = ["train", "--resume", "--run-dir", str(run_dir), "--data-dir", str(data), "--no-progress"]
    assert cli.main(resume) == 0  # finished: trains nothing, reads the models from models.json
    assert "one checkpoint of 4 models" in capsys.readouterr().out
