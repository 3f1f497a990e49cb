"""`jaxconv train` as two processes on localhost (the README's launch) trains like one process.

Each test starts, at once, the two processes of

    JAXCONV_COORDINATOR=localhost:PORT JAXCONV_NUM_PROCESSES=2 JAXCONV_PROCESS_ID=I \\
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
    jaxconv train --devices 8 --run-dir RUN ...

and a single-process ``--devices 1`` reference on the same synthetic IDX data, then
compares the two runs' checkpoints, read straight from their ``.npz`` files. The
multi-process mistakes are checked in this process, with JAX told it is one of several.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import xla_flags_with_devices
from test_multiprocess import free_port

import jaxconv.cli as cli
from jaxconv import distributed
from jaxconv.errors import ConfigError
from jaxconv.runs import Run, TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent.parent / "runs"))
from synthetic import dataset, orbax_arrays, tiny_net, write_idx_dataset

PROCESSES, DEVICES_PER_PROCESS = 2, 4
TOLERANCE = 1e-5  # relative: max |a - b| / max |b| over each leaf of the checkpoint
# the default model on 64 training images: 2 steps of 32 per epoch; a constant schedule, so a
# run of 1 epoch is also the first epoch of a run of 2 (the resume test relies on it)
OPTIONS = ["--epochs", "1", "--batch-size", "32", "--optimizer", "sgd", "--schedule", "constant"]


def launch(argv: list[str], **variables: str) -> subprocess.Popen:
    """``jaxconv ARGV`` in a process of its own, on the CPU, outside any multi-process run."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JAXCONV_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))
    }
    env = {
        **inherited,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags_with_devices(DEVICES_PER_PROCESS),
        **variables,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jaxconv.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_both(data_dir: Path, multi_dir: Path, single_dir: Path, *extra: str) -> list[str]:
    """Run the two-process command into ``multi_dir`` and the one-process reference into
    ``single_dir``, all three processes at once; returns the processes' outputs (0, 1, reference)."""
    common = ["train", "--data-dir", str(data_dir), "--no-progress", *extra]
    port = free_port()
    processes = [
        launch(
            [*common, "--devices", str(PROCESSES * DEVICES_PER_PROCESS), "--run-dir", str(multi_dir)],
            JAXCONV_COORDINATOR=f"localhost:{port}",
            JAXCONV_NUM_PROCESSES=str(PROCESSES),
            JAXCONV_PROCESS_ID=str(index),
        )
        for index in range(PROCESSES)
    ]
    processes.append(launch([*common, "--devices", "1", "--run-dir", str(single_dir)]))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    return outputs


def assert_same_training(multi_dir: Path, single_dir: Path) -> None:
    """Equal checkpoints (parameters, BatchNorm statistics, optimiser state, step, key) and logs."""
    multi_metadata, multi = orbax_arrays(Run(multi_dir).checkpoint)
    single_metadata, single = orbax_arrays(Run(single_dir).checkpoint)
    assert list(multi) == list(single) and multi_metadata == single_metadata
    assert any(path.startswith("['params']") for path in multi)
    for path, expected in single.items():
        got, expected = multi[path].astype(np.float64), expected.astype(np.float64)
        scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
        assert float(np.max(np.abs(got - expected), initial=0.0)) / scale <= TOLERANCE, path
    for got, expected in zip(history(multi_dir), history(single_dir), strict=True):
        assert got["epoch"] == expected["epoch"]
        for name in ("train_loss", "test_loss", "test_top1"):
            assert got[name] == pytest.approx(expected[name], rel=TOLERANCE), name


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path, list[str]]:
    """One epoch, in two processes and in one: (data dir, two-process run, reference run, outputs)."""
    root = tmp_path_factory.mktemp("cli_multiprocess")
    data_dir = write_idx_dataset(root / "data")
    outputs = train_both(data_dir, root / "two-process", root / "one-process", *OPTIONS)
    return data_dir, root / "two-process", root / "one-process", outputs


def test_two_processes_write_one_run_that_equals_a_single_process_run(runs):
    _, multi_dir, single_dir, (first, second, _) = runs
    assert {path.name for path in multi_dir.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "orbax",
        "results.json",
        "curves.png",
        "filters.png",
        "confusion.png",
        "best.npz",
    }  # no temporary files left by either process
    assert json.loads((multi_dir / "config.json").read_text())["devices"] == 8
    assert [record["epoch"] for record in history(multi_dir)] == [1]
    assert json.loads((multi_dir / "results.json").read_text())["status"] == "complete"
    assert_same_training(multi_dir, single_dir)
    # process 0 reports; process 1 trains silently
    assert f"run written to {multi_dir}" in first and "test: top-1" in first
    assert "run written to" not in second and "test: top-1" not in second


def test_two_processes_resume_a_run_like_one_process(runs, tmp_path):
    data_dir, multi_done, single_done, _ = runs
    paused = []
    for done in (multi_done, single_done):
        # the run of 1 epoch becomes a run of 2 paused after its first (the schedule is constant)
        run_dir = Path(shutil.copytree(done, tmp_path / done.name))
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps(config | {"epochs": 2}))
        paused.append(run_dir)
    multi_dir, single_dir = paused
    first_epoch = history(multi_dir)
    train_both(data_dir, multi_dir, single_dir, "--resume")
    assert history(multi_dir)[0] == first_epoch[0]  # the log was appended to, once
    assert [record["epoch"] for record in history(multi_dir)] == [1, 2]
    assert orbax_arrays(Run(multi_dir).checkpoint)[0] == {"epoch": 2, "step": 4}
    assert_same_training(multi_dir, single_dir)


@pytest.mark.parametrize("variable", ["JAXCONV_COORDINATOR", "JAX_COORDINATOR_ADDRESS"])
def test_a_coordinator_in_the_environment_joins_the_run_which_needs_one_run_dir(
    variable, monkeypatch, capsys
):
    joined = []
    monkeypatch.setattr(distributed, "initialize", lambda: joined.append(True))
    monkeypatch.setenv(variable, "localhost:12355")
    status = cli.main(["train", "--devices", "8", "--epochs", "0"])  # (epochs: fail fast in any case)
    assert status == 2 and joined == [True]
    assert re.search(
        r"error: the processes of a run .*: give them all the same --run-dir", capsys.readouterr().err
    )


def test_several_processes_train_on_all_their_devices(monkeypatch, tmp_path):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    run = Run(tmp_path / "run")
    with pytest.raises(
        ConfigError, match=r"devices=4, but this run has 2 processes with 8 devices in all; .*use --devices 8"
    ):
        fit(tiny_net(), dataset(64), dataset(40, "test"), TrainConfig(devices=4), run=run, progress=False)
    assert not run.path.exists()
