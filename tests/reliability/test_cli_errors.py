"""The hardening issue's bad command lines (`cli_cases.ISSUE_CASES`): each exits 2 with one line
naming the value, and no traceback; ``jaxconv bench`` never runs a script of the current
directory. ``benchmarks/cli_bad_inputs.py`` runs 60 more."""

from __future__ import annotations

import pytest
from cli_cases import ISSUE_CASES, failure, run_cli

import jaxconv.cli as cli


@pytest.mark.parametrize(
    ("argv", "word"), ISSUE_CASES, ids=[" ".join(argv[8:] or argv) for argv, _ in ISSUE_CASES]
)
def test_a_bad_command_line_is_one_line_naming_the_value(argv, word, tiny_model, data_dir, tmp_path):
    assert failure(run_cli(argv, str(data_dir), str(tmp_path)), word) is None


def test_the_failing_layer_and_the_size_the_model_takes_are_named(tiny_model, data_dir, tmp_path):
    argv = ["train", "--model", "lenet5", "--data-dir", "{data}", "--run-dir", "{tmp}/run"]
    outcome = run_cli(argv, str(data_dir), str(tmp_path))
    assert "in c5 (Conv) with input shape (-1, 4, 4, 16); lenet5 takes 32x32x1 images" in outcome.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bench_never_runs_a_script_of_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "benchmarks").mkdir()
    planted = tmp_path / "benchmarks" / "planted.py"
    planted.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "planted"]) == cli.EXIT_USAGE
    assert "unknown benchmark 'planted'" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()
