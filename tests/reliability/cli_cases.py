"""Bad command lines for ``jaxconv``, each with a word its error must contain (the value or the
option it names), and a runner that calls `jaxconv.cli.main` as the console script does and
reports the exit status, what it printed, and the traceback of any exception that escaped.

``{data}`` in an argument is a directory of synthetic Fashion-MNIST-shaped IDX files,
``{tmp}`` a scratch directory; `tests/reliability/test_cli_errors.py` runs the issue's cases,
``benchmarks/cli_bad_inputs.py`` all of them.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from typing import NamedTuple

import jaxconv.cli as cli

TRAIN = ["train", "--model", "tiny", "--data-dir", "{data}", "--run-dir", "{tmp}/run", "--no-progress"]

ISSUE_CASES = [  # the hardening issue's findings, in its words
    ([*TRAIN, "--augment", "crop=1000"], "crop=1000"),
    ([*TRAIN, "--augment", "crop=2,crop=3"], "'crop' twice"),
    ([*TRAIN, "--model", "dp_cnn", "--dp-epsilon", "3", "--dp-delta", "0.5"], "dp_delta=0.5"),
    (["summary", "convnet", "--input", "28x28"], "--input '28x28'"),
    ([*TRAIN, "--data-dir", "{tmp}/nowhere"], "nowhere does not exist"),
    ([*TRAIN, "--devices", "0"], "devices=0"),
    ([*TRAIN, "--dp-epsilon", "inf"], "dp_epsilon=inf"),
    ([*TRAIN, "--seed", str(10**30)], f"seed={10**30}"),
    ([*TRAIN, "--model", "lenet5"], "lenet5 takes 32x32x1 images"),
]

MORE_CASES = [
    ([*TRAIN, "--epochs", "0"], "epochs=0"),
    ([*TRAIN, "--epochs", "-3"], "epochs=-3"),
    ([*TRAIN, "--epochs", "two"], "'two'"),
    ([*TRAIN, "--batch-size", "0"], "batch_size=0"),
    ([*TRAIN, "--batch-size", "-8"], "batch_size=-8"),
    ([*TRAIN, "--batch-size", "100000"], "batch_size=100000"),
    ([*TRAIN, "--batch-size", "1.5"], "'1.5'"),
    ([*TRAIN, "--lr", "0"], "lr=0"),
    ([*TRAIN, "--lr", "-1"], "lr=-1"),
    ([*TRAIN, "--lr", "nan"], "lr=nan"),
    ([*TRAIN, "--lr", "inf"], "lr=inf"),
    ([*TRAIN, "--lr", "fast"], "'fast'"),
    ([*TRAIN, "--optimizer", "adagrad"], "optimizer='adagrad'"),
    ([*TRAIN, "--schedule", "linear"], "schedule='linear'"),
    ([*TRAIN, "--warmup-epochs", "-1"], "warmup_epochs=-1"),
    ([*TRAIN, "--warmup-epochs", "100"], "warmup_epochs=100"),
    ([*TRAIN, "--warmup-epochs", "nan"], "warmup_epochs=nan"),
    ([*TRAIN, "--weight-decay", "-1"], "weight_decay=-1"),
    ([*TRAIN, "--weight-decay", "inf"], "weight_decay=inf"),
    ([*TRAIN, "--momentum", "1"], "momentum=1"),
    ([*TRAIN, "--momentum", "-0.5"], "momentum=-0.5"),
    ([*TRAIN, "--label-smoothing", "1"], "label_smoothing=1"),
    ([*TRAIN, "--label-smoothing", "-0.1"], "label_smoothing=-0.1"),
    ([*TRAIN, "--augment", "rotate"], "'rotate'"),
    ([*TRAIN, "--augment", "crop=-1"], "crop=-1"),
    ([*TRAIN, "--augment", "flip,flip"], "'flip' twice"),
    ([*TRAIN, "--augment", "crop=15"], "crop=15"),
    ([*TRAIN, "--seed", str(-(10**30))], "seed="),
    ([*TRAIN, "--seed", "1.5"], "'1.5'"),
    ([*TRAIN, "--eval-batch-size", "0"], "eval_batch_size=0"),
    ([*TRAIN, "--devices", "-1"], "devices=-1"),
    ([*TRAIN, "--devices", "3"], "devices=3"),
    ([*TRAIN, "--dp-epsilon", "0"], "dp_epsilon=0"),
    ([*TRAIN, "--dp-epsilon", "-2"], "dp_epsilon=-2"),
    ([*TRAIN, "--dp-epsilon", "nan"], "dp_epsilon=nan"),
    ([*TRAIN, "--model", "dp_cnn", "--dp-epsilon", "3", "--dp-clip", "0"], "dp_clip=0"),
    ([*TRAIN, "--model", "dp_cnn", "--dp-epsilon", "3", "--dp-delta", "0"], "dp_delta=0"),
    ([*TRAIN, "--model", "dp_cnn", "--dp-epsilon", "3", "--dp-delta", "1"], "dp_delta=1"),
    ([*TRAIN, "--dp-epsilon", "3"], "BatchNorm"),
    ([*TRAIN, "--model", "resnet9000"], "resnet9000"),
    ([*TRAIN, "--dataset", "imagenet"], "imagenet"),
    ([*TRAIN, "--model", "alexnet"], "alexnet takes"),
    ([*TRAIN, "--run-dir", "{data}/train-images-idx3-ubyte.gz/run"], "train-images-idx3-ubyte.gz"),
    ([*TRAIN, "--data-dir", "{data}/train-images-idx3-ubyte.gz"], "does not exist or is not a directory"),
    ([*TRAIN, "--resume", "--run-dir", "{tmp}/empty"], "no config.json"),
    (["train", "--resume"], "--resume needs the --run-dir"),
    ([*TRAIN, "--bogus"], "--bogus"),
    (["evaluate", "{tmp}/missing"], "no config.json"),
    (["evaluate"], "RUN_DIR"),
    (["summary", "resnet9000"], "resnet9000"),
    (["summary", "convnet", "--input", "0x28x1"], "--input '0x28x1'"),
    (["summary", "convnet", "--input", "axbxc"], "--input 'axbxc'"),
    (["summary", "convnet", "--input", "28x28x1x1"], "--input '28x28x1x1'"),
    (["summary", "convnet", "--input", "-28x28x1"], "--input"),
    (["summary", "lenet5", "--input", "8x8x1"], "in c3 (Conv)"),
    (["summary", "convnet", "--num-classes", "0"], "num_classes=0"),
    (["summary", "convnet", "--num-classes", "-3"], "num_classes=-3"),
    (["bench", "no_such_benchmark"], "no_such_benchmark"),
    (["no_such_command"], "no_such_command"),
    ([], "COMMAND"),
]


class Outcome(NamedTuple):
    status: int
    stderr: str
    traceback: str | None


def run_cli(argv: list[str], data: str, tmp: str) -> Outcome:
    """Run ``jaxconv *argv`` in this process; a traceback is an exception `main` let escape."""
    argv = [arg.format(data=data, tmp=tmp) for arg in argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status, escaped = cli.main(argv), None
        except SystemExit as exit:  # argparse's own errors
            status, escaped = int(exit.code or 0), None
        except BaseException:
            status, escaped = -1, traceback.format_exc()
    return Outcome(status, err.getvalue(), escaped)


KINDS = ("traceback", "exit status", "lines", "value not named")


def failure(outcome: Outcome, word: str) -> tuple[str, str] | None:
    """What is wrong with ``outcome`` for a bad input that should name ``word``, as (one of
    `KINDS`, the details); None if nothing."""
    lines = outcome.stderr.strip().splitlines()
    if outcome.traceback is not None:
        return "traceback", outcome.traceback
    if outcome.status != cli.EXIT_USAGE:
        return "exit status", f"{outcome.status}: {outcome.stderr}"
    if len(lines) != 1 or "Traceback" in outcome.stderr:
        return "lines", f"{len(lines)} lines: {outcome.stderr}"
    if word not in lines[0]:
        return "value not named", f"{word!r} not in: {lines[0]}"
    return None
