"""Files a run meets: crafted checkpoints, a malicious .pth, a full disk, a run directory left by
a kill before its first checkpoint, and a kill in the middle of a run."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from synthetic import dataset, tiny_net

import jaxconv.cli as cli
from jaxconv.errors import CheckpointError, ConfigError, DiskFullError, RunDirError, StateDictError
from jaxconv.interop import from_torchvision
from jaxconv.runs import Run, TrainConfig, fit
from jaxconv.runs.config import optimizer_for
from jaxconv.runs.directory import checkpoint_metadata, write_atomic
from jaxconv.train import init_train_state, load_checkpoint, read_metadata, save_checkpoint

HERE = Path(__file__).resolve().parent
TREE = {"a": np.arange(3, dtype=np.float32)}


def rewrite(path: Path, change) -> None:
    """Rewrite the checkpoint at ``path`` with ``change(manifest, entries)`` applied."""
    with np.load(path) as archive:
        entries = {name: archive[name] for name in archive.files}
    manifest = json.loads(entries.pop("__manifest__").tobytes())
    change(manifest, entries)
    with open(path, "wb") as file:
        np.savez(file, **entries, __manifest__=np.frombuffer(json.dumps(manifest).encode(), np.uint8))


def test_a_manifest_without_its_digest_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", TREE)
    rewrite(path, lambda manifest, entries: manifest.pop("sha256"))
    with pytest.raises(CheckpointError, match=r"c\.npz is not a readable .*manifest lacks sha256"):
        load_checkpoint(path, like=TREE)


def test_a_header_claiming_a_trillion_floats_is_refused_before_allocating(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", TREE)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    # a second leaf_0.npy entry, read in place of the first
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("leaf_0.npy", header.getvalue() + bytes(12))
    with pytest.raises(CheckpointError, match=r"leaf_0 claims 1000000000000 values of float32"):
        load_checkpoint(path, like=TREE)


def test_metadata_without_an_epoch_is_refused_before_training(tmp_path):
    config = TrainConfig(epochs=2, batch_size=32)
    train, test = dataset(64), dataset(32, "test")
    run, config = Run.open(tmp_path / "run", config)
    run.start(config)
    template = init_train_state(tiny_net(), optimizer_for(config, 2), (-1, 28, 28, 1), jax.random.key(0))
    save_checkpoint(run.path / "checkpoint.npz", template, {"step": 4})  # a run from before Orbax
    with pytest.raises(CheckpointError, match=r"checkpoint\.npz: its metadata gives epoch None"):
        fit(tiny_net(), train, test, config, run=run, resume=True, progress=False)
    run.save(template, {"step": 4})
    run.close()
    with pytest.raises(CheckpointError, match=r"orbax/4: its metadata gives epoch None"):
        fit(tiny_net(), train, test, config, run=run, resume=True, progress=False)


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_malicious_pth_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"conv1.weight": Planted(marker)}, path)
    with pytest.raises(StateDictError, match=r"evil\.pth is not a state_dict of tensors .*UnpicklingError"):
        from_torchvision("resnet18", path)
    assert not marker.exists()


def test_a_full_disk_is_one_error_and_the_previous_checkpoint_survives(tmp_path):
    """A file-size limit (``ulimit -f``) in a process of its own stands for the full disk."""
    script = f"""
import resource, numpy as np
from jaxconv.train import save_checkpoint
save_checkpoint({str(tmp_path / "c.npz")!r}, {{"a": np.zeros(10, np.float32)}}, {{"epoch": 1}})
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
save_checkpoint({str(tmp_path / "c.npz")!r}, {{"a": np.zeros(10**6, np.float32)}}, {{"epoch": 2}})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxconv.errors.DiskFullError: cannot write") and "File too large" in last
    assert "(the previous checkpoint is kept); free at least 3.8 MiB" in last
    assert "During handling" not in done.stderr  # one error, not three chained tracebacks
    assert read_metadata(tmp_path / "c.npz") == {"epoch": 1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_command_says_how_to_resume_after_a_full_disk(
    tiny_model, data_dir, tmp_path, monkeypatch, capsys
):
    saves, save = [], Run.save

    def failing_save(run, tree, metadata):
        if saves:
            raise DiskFullError(f"cannot write {run.path}: No space left on device; free at least 1 MiB")
        saves.append(save(run, tree, metadata))

    monkeypatch.setattr(Run, "save", failing_save)
    argv = ["train", "--model", tiny_model, "--epochs", "2", "--batch-size", "32", "--no-progress"]
    run_dir = tmp_path / "run"
    status = cli.main([*argv, "--data-dir", str(data_dir), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_USAGE and len(err) == 1
    assert err[0].endswith(f"then continue with: jaxconv train --resume --run-dir {run_dir}")
    assert checkpoint_metadata(Run(run_dir).checkpoint)["epoch"] == 1


def test_a_run_stopped_before_its_first_checkpoint_is_no_dead_end(tmp_path):
    config = TrainConfig(epochs=1, batch_size=32)
    run, config = Run.open(tmp_path / "run", config)
    run.start(config)  # what a kill in the first epoch leaves: a configuration and nothing more
    (tmp_path / "run" / ".checkpoint.npz.x1.tmp").write_bytes(b"half")
    with pytest.raises(
        RunDirError, match=r"stopped before its first checkpoint .*pass --resume to start it over"
    ):
        Run.open(run.path, config)
    resumed, _ = Run.open(run.path, resume=True)
    result = fit(
        tiny_net(), dataset(64), dataset(32, "test"), config, run=resumed, resume=True, progress=False
    )
    assert [record["epoch"] for record in result.history] == [1]
    assert checkpoint_metadata(run.checkpoint)["epoch"] == 1
    assert not list(run.path.glob(".*.tmp"))


def test_an_empty_test_split_is_refused_before_the_first_step(tmp_path):
    empty = dataset(32, "test")
    empty = dataclasses.replace(empty, images=empty.images[:0], labels=empty.labels[:0])
    with pytest.raises(ConfigError, match=r"the test split of fashion_mnist holds no examples"):
        fit(tiny_net(), dataset(64), empty, TrainConfig(epochs=1, batch_size=32), progress=False)


def test_a_kill_before_the_first_checkpoint_resumes(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(HERE / "tiny_cli.py"), "train", "--model", "tiny", "--epochs", "1",
               "--batch-size", "32", "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "config.json").exists() and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert Run(run_dir).checkpoint is None  # killed before its first checkpoint
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"


def test_saved_files_are_readable_like_any_new_file(tmp_path):
    """`tempfile.mkstemp` makes 0o600 files; once renamed, a run's files follow the umask."""
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.npz", TREE)
        write_atomic(tmp_path / "report.html", "<p>")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
