"""The ``jaxconv`` command.

    jaxconv train [--model convnet] [--dataset fashion_mnist] [--epochs 8] ...   train, write a run dir
    jaxconv train --resume --run-dir runs/X                                       continue a run
    jaxconv evaluate RUN_DIR                                                       test accuracy of a run
    jaxconv models                                                                 the model names
    jaxconv summary MODEL                                                          per-layer table
    jaxconv bench [NAME]                                                           the benchmarks/ scripts

With ``JAXCONV_COORDINATOR`` (or ``JAX_COORDINATOR_ADDRESS``) set, ``jaxconv train`` is
one process of a multi-process run (`jaxconv.distributed.initialize` reads the
settings from the environment): every process runs the same command, ``--devices``
counts the devices of all processes, and process 0 writes the run directory.

Mistakes (an unknown name, a bad option, an unusable run directory, a corrupt
checkpoint) print one clear message and exit with status 2 before anything
is trained or overwritten; a loss that stops being finite exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from jaxconv import distributed, models
from jaxconv.analysis import summary
from jaxconv.distributed.multiprocess import ENVIRONMENT
from jaxconv.runs import TrainConfig, evaluate_run, is_writer, train_run
from jaxconv.train import OPTIMIZERS, SCHEDULES

EXIT_ERROR, EXIT_USAGE = 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args, extra)
    except BrokenPipeError:  # the reader went away (`jaxconv models | head`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silences the flush at exit)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except FloatingPointError as error:
        print(f"jaxconv: {_message(error)}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError) as error:  # every jaxconv user mistake is a ValueError
        print(f"jaxconv: error: {_message(error)}", file=sys.stderr)
        return EXIT_USAGE


def _message(error: BaseException) -> str:
    """The error's message with its notes (the layer that failed, how to go on) on the same line."""
    text = (
        str(error)
        if not isinstance(error, OSError) or error.filename is None
        else f"{error.filename}: {error.strerror}"
    )
    notes = [note for note in getattr(error, "__notes__", ()) if "JAX_TRACEBACK_FILTERING" not in note]
    return "; ".join([text, *notes])


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (and its subcommands' too), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxconv", description="A functional ConvNet framework for JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)

    evaluate = commands.add_parser("evaluate", help="evaluate a run's checkpoint on its test set")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.add_argument("--data-dir", help="a directory to look for the dataset in first")
    evaluate.set_defaults(handler=_evaluate)

    models = commands.add_parser("models", help="list the model names")
    models.set_defaults(handler=_models)

    summary = commands.add_parser("summary", help="print a model's per-layer table")
    summary.add_argument("model", nargs="?", default=None, help="a name from `jaxconv models`")
    summary.add_argument(
        "--input",
        "--input-shape",
        help="HxWxC, e.g. 224x224x3 (default: the model's own, 28x28x1 for convnet)",
    )
    summary.add_argument("--num-classes", type=int, help="default: the model's own")
    summary.set_defaults(handler=_summary)

    bench = commands.add_parser("bench", help="run a script of benchmarks/ (from a source checkout)")
    bench.add_argument("name", nargs="?", help="the script's name, e.g. framework_overhead")
    bench.set_defaults(handler=_bench)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    train = commands.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model. Unset options take the defaults shown; with --resume, the run's own.",
    )
    options = [
        ("--model", str, f"a name from `jaxconv models` (default {defaults.model})"),
        ("--dataset", str, f"fashion_mnist, mnist or cifar10 (default {defaults.dataset})"),
        ("--epochs", int, f"default {defaults.epochs}"),
        ("--batch-size", int, f"default {defaults.batch_size}"),
        ("--lr", float, f"peak learning rate (default {defaults.lr})"),
        ("--optimizer", str, f"{', '.join(OPTIMIZERS)} (default {defaults.optimizer})"),
        ("--schedule", str, f"{', '.join(SCHEDULES)} (default {defaults.schedule})"),
        ("--warmup-epochs", float, f"default {defaults.warmup_epochs}"),
        ("--weight-decay", float, f"on kernels (default {defaults.weight_decay})"),
        ("--momentum", float, f"for sgd and nesterov (default {defaults.momentum})"),
        ("--label-smoothing", float, f"default {defaults.label_smoothing}"),
        ("--augment", str, f"none, flip, crop, crop=P or e.g. crop=2,flip (default {defaults.augment})"),
        ("--seed", int, f"default {defaults.seed}"),
        ("--eval-batch-size", int, f"default {defaults.eval_batch_size}"),
        ("--devices", int, f"devices, data parallel, of all processes together (default {defaults.devices})"),
        ("--dp-epsilon", float, "train with DP-SGD to this epsilon, e.g. 3 (default: not private)"),
        ("--dp-delta", float, f"DP-SGD's delta (default {defaults.dp_delta})"),
        ("--dp-clip", float, f"DP-SGD's per-example gradient clip norm C (default {defaults.dp_clip})"),
    ]
    for flag, kind, text in options:
        train.add_argument(flag, type=kind, default=None, help=text)
    train.add_argument("--run-dir", help="where to write the run (default runs/<model>-<dataset>-<time>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    train.add_argument("--data-dir", help="a directory to look for the dataset in first")
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar, nor the line naming the run"
    )
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    if _join_processes() and args.run_dir is None:
        raise ValueError("the processes of a run write one run directory: give them all the same --run-dir")
    result = train_run(
        _options(args),
        args.run_dir,
        resume=args.resume,
        data_root=args.data_dir,
        progress=not args.no_progress,
    )
    if not is_writer():
        return 0
    if result.evaluation is not None:
        ev = result.evaluation
        print(f"test: top-1 {ev.top1:.2%}  top-5 {ev.top5:.2%}  loss {ev.loss:.4f}")
    if result.privacy is not None and result.history:
        plan = result.privacy
        print(
            f"privacy: ({result.history[-1]['epsilon']:.3g}, {plan.delta:g})-DP by DP-SGD, noise "
            f"multiplier {plan.noise_multiplier:.4g}, clip {plan.l2_norm_clip:g}, sampling rate "
            f"{plan.sampling_rate:.4g}, {plan.steps} steps planned"
        )
    print(
        f"run written to {result.run.path}: config.json metrics.jsonl checkpoint.npz results.json and figures"
    )
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` options given on the command line, by name (the others are left out)."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    return {name: value for name, value in vars(args).items() if name in fields and value is not None}


def _join_processes() -> bool:
    """Join a multi-process run when the environment names a coordinator; before any JAX device
    is touched. Returns whether it did."""
    if not any(os.environ.get(name) for name in ENVIRONMENT["coordinator_address"]):
        return False
    distributed.initialize()
    return True


def _evaluate(args: argparse.Namespace, extra: Sequence[str]) -> int:
    ev = evaluate_run(args.run_dir, data_root=args.data_dir, split=args.split)
    print(
        f"{args.split}: top-1 {ev.top1:.2%}  top-5 {ev.top5:.2%}  loss {ev.loss:.4f}  ({len(ev.labels)} examples)"
    )
    return 0


def _models(args: argparse.Namespace, extra: Sequence[str]) -> int:
    counts = models.param_counts()
    names = sorted(models.names(), key=lambda name: name != models.DEFAULT_MODEL)  # the default first
    width = max(map(len, names))
    for name in names:
        count = f"{counts[name]:>13,} parameters" if name in counts else ""
        print(f"{name:<{width}}  {count}{'  (default)' if name == models.DEFAULT_MODEL else ''}".rstrip())
    return 0


def _summary(args: argparse.Namespace, extra: Sequence[str]) -> int:
    name = args.model or models.DEFAULT_MODEL
    shape = models.input_shape(name)
    if args.input:
        example = "x".join(map(str, shape[1:]))
        try:
            given = tuple(int(size) for size in re.split(r"[x,]", args.input))
        except ValueError:
            raise ValueError(f"--input {args.input!r}: give HxWxC such as 224x224x3") from None
        if len(given) != len(shape) - 1 or min(given) < 1:
            raise ValueError(
                f"--input {args.input!r}: {name} takes {len(shape) - 1} positive sizes, such as {example}"
            )
        shape = (-1, *given)
    print(summary(models.get(name, num_classes=args.num_classes), shape))
    return 0


def _bench(args: argparse.Namespace, extra: Sequence[str]) -> int:
    directory = _benchmarks_dir()
    if directory is None:
        print(
            "jaxconv bench: the benchmarks are scripts in the source checkout (benchmarks/*.py); "
            "install jaxconv from a checkout (pip install -e .) to run them",
            file=sys.stderr,
        )
        return EXIT_ERROR
    scripts = sorted(path.stem for path in directory.glob("*.py") if not path.stem.startswith("_"))
    if args.name is None:
        print("\n".join(scripts))
        return 0
    if args.name not in scripts:
        raise ValueError(f"unknown benchmark {args.name!r}; valid names: {', '.join(scripts)}")
    sys.argv = [str(directory / f"{args.name}.py"), *extra]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


def _benchmarks_dir() -> Path | None:
    """The benchmarks/ of the checkout jaxconv itself runs from (never the current directory's:
    ``jaxconv bench NAME`` must not run a script someone left there)."""
    directory = Path(__file__).resolve().parent.parent / "benchmarks"
    return directory if directory.is_dir() else None


if __name__ == "__main__":
    sys.exit(main())
