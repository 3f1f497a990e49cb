"""The `jaxconv` command: train, evaluate, resume, list models, and clear errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconv.cli as cli
from jaxconv.models import registry
from jaxconv.runs import Run

sys.path.insert(0, str(Path(__file__).parent / "runs"))
from synthetic import tiny_net, write_idx_dataset

TINY = ["--model", "tiny", "--batch-size", "16", "--eval-batch-size", "40", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def tiny_model():
    """Register a tiny ConvNet as `tiny`, so the tests train in seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny", registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {}))
        yield


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Path:
    """A run of 2 epochs of the tiny model, trained once for the module (tests copy it to change it)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    argv = ["train", *TINY, "--epochs", "2", "--data-dir", data_dir, "--run-dir", run_dir]
    assert cli.main([str(arg) for arg in argv]) == 0
    return run_dir


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def test_train_writes_the_run_and_evaluate_reads_it(trained, capsys, data_dir):
    names = {
        "config.json",
        "metrics.jsonl",
        "orbax",
        "best.npz",
        "results.json",
        "curves.png",
        "filters.png",
        "confusion.png",
        "report.html",
    }
    assert names <= {path.name for path in trained.iterdir()}
    results = json.loads((trained / "results.json").read_text())
    assert results["status"] == "complete" and results["epochs_completed"] == 2
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 2
    status, out, _ = run(capsys, "evaluate", trained, "--data-dir", data_dir)
    assert status == 0
    assert f"test: top-1 {results['test_top1']:.2%}" in out and "(40 examples)" in out

    # the run cannot be overwritten, nor resumed with other settings; both leave it as it was
    before = snapshot(trained)
    status, _, err = run(capsys, "train", *TINY, "--data-dir", data_dir, "--run-dir", trained)
    assert status == 2 and "already holds a run; pass --resume to continue it" in err
    status, _, err = run(
        capsys, "train", "--resume", "--run-dir", trained, "--lr", "0.5", "--data-dir", data_dir
    )
    assert status == 2 and "cannot resume" in err and "lr: 0.003 in the run, 0.5 given" in err
    assert snapshot(trained) == before


def test_resume_of_a_finished_run_trains_nothing_and_a_corrupt_checkpoint_is_kept(
    trained, capsys, data_dir, tmp_path
):
    finished = Path(shutil.copytree(trained, tmp_path / "finished"))
    status, _, err = run(capsys, "train", "--resume", "--run-dir", finished, "--data-dir", data_dir)
    assert status == 0 and "epoch" not in err
    assert (finished / "metrics.jsonl").read_text() == (trained / "metrics.jsonl").read_text()

    corrupt = Path(shutil.copytree(trained, tmp_path / "corrupt"))
    Run(corrupt).checkpoint.joinpath("meta", "metadata").write_bytes(b'{"tree": not really')
    before = snapshot(corrupt)
    status, _, err = run(capsys, "train", "--resume", "--run-dir", corrupt, "--data-dir", data_dir)
    assert (
        status == 2
        and "orbax/8: its metadata is unreadable" in err
        and "orbax/8 to resume from step 4" in err
    )
    assert snapshot(corrupt) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "resnet_tiny"], r"unknown model 'resnet_tiny'; .*valid names: convnet, "),
        (
            ["--dataset", "fashion"],
            r"unknown dataset 'fashion'; valid names: cifar10, fashion_mnist, imagefolder, mnist",
        ),
        (["--lr", "-0.1"], r"lr=-0.1: the learning rate must be positive"),
        (["--batch-size", "100"], r"batch_size=100 is larger than the dataset \(64 examples\)"),
        (["--augment", "jitter"], r"augment='jitter': unknown augmentation 'jitter'"),
        (["--tta", "crop=2,flop"], r"tta='crop=2,flop': unknown augmentation 'flop'"),
        (["--resume"], r"--resume needs the --run-dir"),
    ],
)
def test_bad_input_fails_before_training_and_writes_nothing(options, message, capsys, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    argv = [
        "train",
        *TINY,
        "--data-dir",
        data_dir,
        *(["--run-dir", run_dir] if "--resume" not in options else []),
    ]
    status, _, err = run(capsys, *argv, *options)
    assert status == 2
    assert re.search(message, err), err
    assert not (run_dir / "config.json").exists() and "epoch" not in err


def test_an_unwritable_run_dir_is_refused(capsys, data_dir, tmp_path):
    (tmp_path / "file").write_text("")
    status, _, err = run(
        capsys, "train", *TINY, "--data-dir", data_dir, "--run-dir", tmp_path / "file" / "run"
    )
    assert status == 2 and "cannot write to the run directory" in err


def test_models_lists_the_default_first_and_the_zoo(capsys):
    status, out, _ = run(capsys, "models")
    lines = out.splitlines()
    assert status == 0 and re.fullmatch(r"convnet +421,738 parameters  \(default\)", lines[0])
    names = [line.split()[0] for line in lines]
    assert "tiny" in names  # registered by this module, so not in the table: its name alone
    zoo = pytest.importorskip("jaxconv.models")
    assert set(zoo.names()) <= set(names)
    assert re.search(r"^resnet50_tv +25,557,032 parameters$", out, re.MULTILINE)


def test_summary_and_bench(capsys, tmp_path, monkeypatch):
    status, out, _ = run(capsys, "summary", "tiny")
    assert status == 0 and "Conv" in out
    status, out, _ = run(capsys, "summary", "alexnet", "--input", "227x227x3")
    assert status == 0 and "params 60,965,224" in out and "55x55x96" in out
    status, _, err = run(capsys, "summary", "alexnet", "--input", "227 by 227")
    assert status == 2 and "give HxWxC such as 224x224x3" in err
    monkeypatch.setattr(cli, "_benchmarks_dir", lambda: None)
    status, _, err = run(capsys, "bench")
    assert status == 1 and "benchmarks are scripts in the source checkout" in err
    (tmp_path / "speed.py").write_text("import sys\nprint('ran', sys.argv[1:])\n")
    monkeypatch.setattr(cli, "_benchmarks_dir", lambda: tmp_path)
    assert run(capsys, "bench") == (0, "speed\n", "")
    assert run(capsys, "bench", "speed", "--quick")[:2] == (0, "ran ['--quick']\n")
    status, _, err = run(capsys, "bench", "nothing")
    assert status == 2 and "unknown benchmark 'nothing'; valid names: speed" in err


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "jaxconv"
    if not script.exists():
        pytest.skip("jaxconv is not installed in this environment (pip install -e .)")
    result = subprocess.run([script, "models"], capture_output=True, text=True, check=True, timeout=120)
    first = result.stdout.splitlines()[0]
    assert first.startswith("convnet ") and first.endswith("parameters  (default)")


def test_train_keeps_freed_host_blocks_before_it_trains(monkeypatch, tmp_path):
    """`jaxconv train` tells glibc to keep freed blocks (asynchronous dispatch kept) before the
    first step: without it a CPU step's temporaries over 32 MiB are fresh pages every step."""
    calls = []
    monkeypatch.setattr(cli, "reuse_host_memory", lambda **options: calls.append(("reuse", options)))

    def train_run(*args, **kwargs):
        calls.append(("train", {}))
        raise KeyboardInterrupt  # main() answers it with status 130: nothing is trained

    monkeypatch.setattr(cli, "train_run", train_run)
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "run")]) == 130
    assert calls == [("reuse", {"sync_dispatch": False}), ("train", {})]
