"""What every experiment shares: budgets, the command line, Fashion-MNIST subsets, training, results.

An experiment script states its budgets at the top (`Budget` for ``--smoke``,
the default and ``--full``), calls `parse_args`, trains its nets with
`train_and_evaluate` (which is `jaxconv.runs.fit`) and ends with `finish`,
which writes ``results.json`` to ``experiments/results/<name>/`` (or ``--out``)
and prints its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np

import jaxconv as jc
from jaxconv.runs import TrainConfig, fit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much an experiment trains: examples (None: the whole split), epochs, batch size and
    the number of seeds each net is trained with (the results average them)."""

    name: str  # 'smoke', 'default' or 'full'
    train_size: int | None
    test_size: int | None
    epochs: int
    batch_size: int = 128
    seeds: int = 1

    def describe(self) -> str:
        train = "60k" if self.train_size is None else f"{self.train_size:,}"
        test = "10k" if self.test_size is None else f"{self.test_size:,}"
        seeds = f", mean of {self.seeds} seeds" if self.seeds > 1 else ""
        return f"{train} train / {test} test images, {self.epochs} epoch(s), batch {self.batch_size}{seeds}"


SMOKE = Budget("smoke", 256, 128, 1, 64)


def parse_args(
    doc: str, default: Budget, full: Budget, smoke: Budget = SMOKE, rows: Sequence[str] = ()
) -> argparse.Namespace:
    """``--smoke`` / ``--full`` / ``--out``: the namespace gets ``budget`` and ``out`` (a Path).

    With ``rows`` (the names of the script's nets) also ``--only``: the namespace's ``rows``
    are those whose names contain one of its comma-separated words (all by default).
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help=f"seconds, for the tests: {smoke.describe()}")
    size.add_argument("--full", action="store_true", help=f"the paper-like setting: {full.describe()}")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default experiments/results/<name>)"
    )
    if rows:
        parser.add_argument(
            "--only",
            default="",
            help=f"comma-separated words; train only the nets they name, of: {'; '.join(rows)}",
        )
    args = parser.parse_args()
    args.budget = smoke if args.smoke else full if args.full else default
    if rows:
        args.rows = _chosen(parser, rows, args.only)
    return args


def _chosen(parser: argparse.ArgumentParser, rows: Sequence[str], only: str) -> list[str]:
    """The ``rows`` whose names contain one of ``only``'s comma-separated words (case ignored)."""
    words = [word.strip().lower() for word in only.split(",") if word.strip()]
    unmatched = [word for word in words if not any(word in row.lower() for row in rows)]
    if unmatched:
        parser.error(f"--only {', '.join(unmatched)} names no net; the nets are: {'; '.join(rows)}")
    return [row for row in rows if not words or any(word in row.lower() for word in words)]


def load_fashion_mnist(
    budget: Budget, *, pad_to: int | None = None, channels: int = 1
) -> tuple[jc.data.Dataset, jc.data.Dataset]:
    """The first ``budget`` train and test images of Fashion-MNIST, (N, 28, 28, 1) uint8.

    ``pad_to`` zero-pads to (N, pad_to, pad_to, C) (LeNet-5 reads 32x32), ``channels=3``
    repeats the grey channel (an ImageNet backbone). A smoke run without the data
    files gets random images of the same shapes, so the tests run anywhere.
    """
    try:
        splits = [jc.data.load("fashion_mnist", split) for split in ("train", "test")]
    except jc.data.DatasetNotFoundError:
        if budget.name != "smoke":
            raise
        splits = [
            _synthetic(split, size)
            for split, size in (("train", budget.train_size), ("test", budget.test_size))
        ]
    sizes = (budget.train_size, budget.test_size)
    return tuple(_shaped(data, size, pad_to, channels) for data, size in zip(splits, sizes, strict=True))


def _synthetic(split: str, size: int) -> jc.data.Dataset:
    rng = np.random.default_rng(0 if split == "train" else 1)
    images = rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size).astype(np.int32)
    names = tuple(f"class {k}" for k in range(10))
    return jc.data.Dataset("fashion_mnist", split, images, labels, names, (0.5,), (0.29,))


def _shaped(data: jc.data.Dataset, size: int | None, pad_to: int | None, channels: int) -> jc.data.Dataset:
    images, labels = data.images[:size], data.labels[:size]
    if pad_to is not None:
        before = (pad_to - images.shape[1]) // 2
        after = pad_to - images.shape[1] - before
        images = np.pad(images, ((0, 0), (before, after), (before, after), (0, 0)))
    if channels != images.shape[-1]:
        images = np.repeat(images, channels, axis=-1)
    repeat = channels if len(data.mean) == 1 else 1  # a grey image's statistics, per channel
    return dataclasses.replace(
        data, images=images, labels=labels, mean=data.mean * repeat, std=data.std * repeat
    )


def train_and_evaluate(
    net: jc.Layer,
    train: jc.data.Dataset,
    test: jc.data.Dataset,
    budget: Budget,
    initial: tuple[Any, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``net`` with `jaxconv.runs.fit` once per seed of ``budget``, from ``initial``
    (params, state) if given (``options`` override `TrainConfig` fields).

    Returns the test top-1 (final and best epoch), the last epoch's training loss and
    accuracy (each the mean over seeds), the parameter count, the seconds taken (all
    seeds) and the first seed's per-epoch history; with several seeds also
    ``test_top1_seeds`` and ``test_top1_spread`` (largest minus smallest).
    """
    runs = [_train_once(net, train, test, budget, seed, initial, options) for seed in range(budget.seeds)]
    mean = {
        key: float(np.mean([run[key] for run in runs]))
        for key in ("test_top1", "best_test_top1", "train_loss", "train_top1")
    }
    spread = {}
    if len(runs) > 1:
        finals = [run["test_top1"] for run in runs]
        spread = {"test_top1_seeds": finals, "test_top1_spread": max(finals) - min(finals)}
    return {
        **mean,
        **spread,
        "params": runs[0]["params"],
        "seconds": round(sum(run["seconds"] for run in runs), 1),
        "history": runs[0]["history"],
    }


def _train_once(
    net: jc.Layer,
    train: jc.data.Dataset,
    test: jc.data.Dataset,
    budget: Budget,
    seed: int,
    initial: tuple[Any, Any] | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    config = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, seed=seed, **options)
    started = time.perf_counter()
    # a net that learns nothing is a result here (normalisation.py's plain VGG), not a failure
    result = fit(net, train, test, config, initial=initial, progress=False, divergence_rule=None)
    history = [{key: _plain(value) for key, value in record.items()} for record in result.history]
    return {
        "test_top1": history[-1]["test_top1"],
        "best_test_top1": max(record["test_top1"] for record in history),
        "train_loss": history[-1]["train_loss"],
        "train_top1": history[-1]["train_top1"],
        "params": jc.train.count_params(result.train_state.params),
        "seconds": time.perf_counter() - started,
        "history": history,
    }


def results_dir(name: str, out: Path | None) -> Path:
    path = out if out is not None else RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def finish(name: str, args: argparse.Namespace, rows: list[dict[str, Any]], **extra: Any) -> Path:
    """Write ``results.json`` (rows, budget, command, machine) and print the rows as a table."""
    path = results_dir(name, args.out) / "results.json"
    record = {
        "experiment": name,
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "budget": dataclasses.asdict(args.budget) | {"description": args.budget.describe()},
        "rows": rows,
        **extra,
        "machine": {
            "device": jax.devices()[0].device_kind,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
    }
    path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")
    print(format_table(rows))
    print(f"[{args.budget.describe()}; results in {os.path.relpath(path, Path.cwd())}]")
    return path


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as an aligned text table (or a Markdown one) of their scalar columns."""
    columns = [key for key in rows[0] if not isinstance(rows[0][key], (list, dict))] if rows else []
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    if markdown:
        lines = [columns, ["---"] * len(columns), *cells]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data (NumPy and JAX scalars and arrays become numbers and lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic, jax.Array)):
        return np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (with ``benchmarks/`` on the path for its helpers)."""
    folder = ROOT / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def input_gradient_field(
    net: jc.Layer, params: Any, state: Any, input_shape: tuple[int, ...]
) -> tuple[int, int]:
    """The receptive field measured by gradients: the (rows, cols) extent of input pixels whose
    gradient is non-zero for the centre output neuron (summed over its channels).

    Averages |gradient| over 4 random inputs so that a ReLU switched off by one input
    does not hide a pixel. ``input_shape`` is (1, H, W, C).
    """

    def centre(x):
        y, _ = net.apply(params, state, x)
        return y[0, y.shape[1] // 2, y.shape[2] // 2].sum()

    inputs = jax.random.normal(jax.random.key(0), (4, *input_shape[1:]))
    grads = jax.vmap(lambda x: jax.grad(centre)(x[None])[0])(inputs)
    seen = np.asarray(jax.numpy.abs(grads).sum(axis=(0, 3))) > 0
    rows, cols = np.nonzero(seen.any(axis=1))[0], np.nonzero(seen.any(axis=0))[0]
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
