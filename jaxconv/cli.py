"""The ``jaxconv`` command.

    jaxconv train [--model convnet] [--dataset fashion_mnist] [--epochs 8] ...   train, write a run dir
    jaxconv train --resume --run-dir runs/X                                       continue a run
    jaxconv train --data PATH [--model resnet18]                                  on PATH/<class>/<image>
    jaxconv evaluate RUN_DIR                                                       test accuracy of a run
    jaxconv export RUN_DIR [--format stablehlo|onnx]                               RUN_DIR/model.<format>
    jaxconv models                                                                 the model names
    jaxconv summary MODEL                                                          per-layer table
    jaxconv bench [NAME]                                                           the benchmarks/ scripts
    jaxconv report RUN_DIR                                                         RUN_DIR/report.html
    jaxconv demo conv [--example notes] [--input 5x5x3 --filters 2 --size 3 ...]  the notes' conv demo page

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
from jaxconv.host_memory import reuse_host_memory
from jaxconv.inspect import conv_demo, write_conv_demo
from jaxconv.runs import (
    GRID_FIELDS,
    TrainConfig,
    evaluate_run,
    export_run,
    is_writer,
    parse_grid,
    train_run,
    write_report,
)
from jaxconv.runs.experiment import EXPORT_FORMATS
from jaxconv.runs.recipes import RECIPES, recipe
from jaxconv.runs.sweep import is_many_run, train_many_run
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

    export = commands.add_parser("export", help="write a run's net as StableHLO or ONNX into the run")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="stablehlo")
    export.add_argument("--data-dir", help="a directory to look for the dataset in first")
    export.set_defaults(handler=_export)

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
    _add_inspect(commands)
    return parser


def _add_inspect(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="write RUN_DIR/report.html, one self-contained page")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--data-dir", help="a directory to look for the dataset in first")
    report.add_argument("--images", type=int, default=8, help="test images for Grad-CAM and mistakes (8)")
    report.set_defaults(handler=_report)
    demo = commands.add_parser("demo", help="write a demo page: `jaxconv demo conv`, the notes' convolution")
    demo.add_argument("name", choices=("conv",))
    demo.add_argument("--example", choices=("notes",), help="the notes' printed numbers (their sizes too)")
    demo.add_argument("--input", default="5x5x3", help="HxWxC of the input volume (default 5x5x3)")
    for flag, default, text in (
        ("--filters", 2, "K, the number of filters"),
        ("--size", 3, "F, the filters' width and height"),
        ("--stride", 2, "S"),
        ("--pad", 1, "P, zeros around the input"),
        ("--dilation", 1, "D (1: contiguous filters)"),
        ("--seed", 0, "for the random small integers"),
    ):
        demo.add_argument(flag, type=int, default=default, help=f"{text} (default {default})")
    demo.add_argument("--output", default="conv-demo.html", help="the page to write (default conv-demo.html)")
    demo.set_defaults(handler=_demo)


def _report(args: argparse.Namespace, extra: Sequence[str]) -> int:
    print(f"report written to {write_report(args.run_dir, data_root=args.data_dir, images=args.images)}")
    return 0


def _demo(args: argparse.Namespace, extra: Sequence[str]) -> int:
    demo = conv_demo(
        _hwc(args.input, "--input"), args.filters, args.size, args.stride, args.pad, args.dilation,
        example=args.example, seed=args.seed,
    )  # fmt: skip
    print(f"convolution demo written to {write_conv_demo(args.output, demo)}")
    return 0


def _hwc(text: str, flag: str) -> tuple[int, int, int]:
    try:
        height, width, channels = (int(size) for size in re.split(r"[x,]", text))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give HxWxC such as 5x5x3") from None
    return height, width, channels


def _add_train(commands: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    train = commands.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model. Unset options take the defaults shown; with --resume, the run's own.",
    )
    options = [
        ("--model", str, f"a name from `jaxconv models` (default {defaults.model})"),
        ("--dataset", str, f"fashion_mnist, mnist, cifar10 or imagefolder (default {defaults.dataset})"),
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
        ("--ema-decay", float, "keep and evaluate an EMA of the weights, e.g. 0.999 (default: none)"),
        ("--lookahead-steps", int, "Lookahead: sync the slow weights every k steps, e.g. 5 (default: none)"),
        ("--lookahead-alpha", float, f"Lookahead's slow step (default {defaults.lookahead_alpha})"),
        ("--mix", str, "none, mixup, mixup=ALPHA, cutmix or cutmix=ALPHA (default none)"),
        ("--tta", str, "test-time augmentation: none, flip, crop=P or crop=P,flip (default none)"),
        ("--checkpoint-every", int, "also checkpoint every N steps, to resume mid-epoch (default: off)"),
        *_private_options(defaults),
    ]
    for flag, kind, text in options:
        train.add_argument(flag, type=kind, default=None, help=text)
    train.add_argument("--run-dir", help="where to write the run (default runs/<model>-<dataset>-<time>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    train.add_argument("--data-dir", help="a directory to look for the dataset in first")
    train.add_argument(
        "--data", metavar="PATH", help="train on an image folder PATH/<class>/<image> (--dataset imagefolder)"
    )
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar, nor the line naming the run"
    )
    _add_many(train)
    train.set_defaults(handler=_train)


def _private_options(defaults: TrainConfig) -> list[tuple[str, type, str]]:
    """The DP-SGD options of ``jaxconv train``: (flag, type, help)."""
    return [
        ("--dp-epsilon", float, "train with DP-SGD to this epsilon, e.g. 3 (default: not private)"),
        ("--dp-delta", float, f"DP-SGD's delta (default {defaults.dp_delta})"),
        ("--dp-clip", float, f"DP-SGD's per-example gradient clip norm C (default {defaults.dp_clip})"),
        ("--augmult", int, f"DP-SGD: augmented copies per example, averaged (default {defaults.augmult})"),
        ("--physical-batch-size", int, "DP-SGD: examples computed at once, in chunks (default: all)"),
    ]


def _add_many(train: argparse.ArgumentParser) -> None:
    """``--recipe``, and the options that train many models in one program (`jaxconv.runs.fit_many`)."""
    many = train.add_argument_group("many models in one program")
    train.add_argument("--recipe", help=f"start from a named recipe's options: {', '.join(sorted(RECIPES))}")
    many.add_argument("--seeds", type=int, help="train N models, seeds --seed ... --seed + N - 1, together")
    many.add_argument(
        "--grid",
        help=f"values to try, e.g. lr=0.05,0.1,0.2 or 'lr=0.05,0.1;weight_decay=0,5e-4' ({', '.join(GRID_FIELDS)})",
    )
    shard = {"choices": ("models", "batch"), "default": "models"}
    many.add_argument("--shard", **shard, help="with --devices: split the models or each batch")
    many.add_argument("--shared-order", action="store_true", help="every model sees the first seed's batches")
    many.add_argument(
        "--memory-budget-mb", type=float, help="train the models in chunks that fit this memory"
    )


def _train_many(args: argparse.Namespace) -> int:
    """``jaxconv train --seeds N`` / ``--grid ...`` (or ``--resume`` of such a run)."""
    first = args.seed if args.seed is not None else TrainConfig().seed
    result = train_many_run(
        _options(args),
        args.run_dir,
        seeds=None if args.seeds is None else range(first, first + args.seeds),
        grid=None if args.grid is None else parse_grid(args.grid),
        shared_order=args.shared_order,
        shard=args.shard,
        memory_budget=None if args.memory_budget_mb is None else int(args.memory_budget_mb * 2**20),
        resume=args.resume,
        data_root=args.data_dir,
        progress=not args.no_progress,
    )
    if is_writer():
        print(result.table())
        print(
            f"run written to {result.run.path}: one checkpoint of {len(result.configs)} models, results.json"
        )
    return 0


def _train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    reuse_host_memory(sync_dispatch=False)  # else CPU temporaries over 32 MiB are fresh pages every step
    if args.seeds is not None or args.grid is not None or is_many_run(args.run_dir if args.resume else None):
        return _train_many(args)
    if _join_processes() and args.run_dir is None:
        raise ValueError("the processes of a run write one run directory: give them all the same --run-dir")
    if args.data is not None:  # an image folder: its root is where the dataset is
        args.dataset, args.data_dir = "imagefolder", args.data
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
        f"run written to {result.run.path}: config.json metrics.jsonl orbax/ best.npz results.json report.html and figures"
    )
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` options given on the command line, by name (the others are left out),
    over those of ``--recipe`` if one is named."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    given = {name: value for name, value in vars(args).items() if name in fields and value is not None}
    return (recipe(args.recipe) if getattr(args, "recipe", None) else {}) | given


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


def _export(args: argparse.Namespace, extra: Sequence[str]) -> int:
    path = export_run(args.run_dir, args.format, data_root=args.data_dir)
    print(f"{args.format} written to {path}: (N, H, W, C) uint8 images in, (N, classes) logits out")
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
