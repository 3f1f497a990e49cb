"""Many models by name: what ``jaxconv train --seeds 8`` and ``--grid lr=0.05,0.1,0.2`` do.

    result = train_many_run(TrainConfig(epochs=6), "runs/seeds", seeds=range(8))
    result = train_many_run(None, "runs/seeds", resume=True)   # the seeds and grid of the run

The run directory is `fit`'s (config.json, metrics.jsonl with a list of M per metric, one
Orbax checkpoint holding every model) with ``models.json`` (each model's seed and grid point), and
``results.json`` (each model's final metrics and the table over seeds) and ``curves.png`` (every
model's curves on one plot) written when training ends.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jaxconv.errors import DivergenceError
from jaxconv.runs.directory import CURVES, Options, Run, is_writer
from jaxconv.runs.experiment import PathLike, _load
from jaxconv.runs.figures import plot_model_curves
from jaxconv.runs.grid import GRID_FIELDS, MODELS, summarize
from jaxconv.runs.many import ManyResult, fit_many


def train_many_run(
    config: Options = None,
    run_dir: PathLike | None = None,
    *,
    seeds: Sequence[int] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    shared_order: bool = False,
    shard: str = "models",
    memory_budget: int | None = None,
    resume: bool = False,
    data_root: PathLike | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> ManyResult:
    """Train ``config.model`` on ``config.dataset`` once per (grid point, seed) with `fit_many`,
    writing one run directory. ``config`` and ``run_dir`` as in `train_run`; with ``resume``
    and no ``seeds`` or ``grid``, those the run was started with (``models.json``)."""
    run, config = Run.open(run_dir, config, resume=resume)
    if resume and seeds is None and grid is None:
        seeds, grid = saved_models(run)
    net, train_data, test_data = _load(config, data_root)
    started = time.perf_counter()
    if is_writer() and progress:
        print(f"training {config.model} on {config.dataset}, many models -> {run.path}", file=sys.stderr)
    options = {
        "seeds": seeds,
        "grid": grid,
        "shared_order": shared_order,
        "shard": shard,
        "memory_budget": memory_budget,
    }
    try:
        result = fit_many(
            net, train_data, test_data, config,
            **options, run=run, resume=resume, stop_after_epoch=stop_after_epoch, progress=progress,
        )  # fmt: skip
    except (DivergenceError, KeyboardInterrupt) as error:
        if is_writer() and run.path.is_dir():
            status = "failed" if isinstance(error, DivergenceError) else "stopped"
            report_many(run, status=status, seconds=time.perf_counter() - started)
        raise
    if is_writer():
        status = "complete" if len(result.history) == config.epochs else "paused"
        report_many(run, status=status, seconds=time.perf_counter() - started)
    return result


def report_many(run: Run, *, status: str, seconds: float) -> dict[str, Any]:
    """Write ``results.json`` (each model's last metrics and why it diverged, if it did; the mean,
    std, min and max of the test accuracy per grid point) and ``curves.png`` of a run of many models, from what it has logged."""
    history = run.history()
    models = json.loads((run.path / MODELS).read_text())
    results: dict[str, Any] = {
        "status": status,
        "epochs_completed": len(history),
        "seconds": round(seconds, 1),
    }
    if history:
        last = history[-1]
        metrics = ("test_top1", "test_top5", "test_loss", "train_loss")
        diverged = last.get("diverged", [None] * len(models))
        results["models"] = [
            model | {name: last[name][index] for name in metrics} | {"diverged": diverged[index]}
            for index, model in enumerate(models)
        ]
        saved = run.saved_config()
        configs = [dataclasses.replace(saved, **model) for model in models]
        results["summary"] = summarize(configs, last["test_top1"], diverged)
        results["images_per_second_all_models"] = last["train_images_per_second"] * len(models)
        labels = [", ".join(f"{name} {value:g}" for name, value in model.items()) for model in models]
        plot_model_curves(history, labels, run.path / CURVES)
    run.write_results(results)
    return results


def is_many_run(run_dir: PathLike | None) -> bool:
    """Whether ``run_dir`` holds a run of many models (None: no)."""
    return run_dir is not None and (Run(run_dir).path / MODELS).is_file()


def saved_models(run: Run) -> tuple[list[int], dict[str, list[float]]]:
    """The seeds and grid of a run of many models, read from its ``models.json``."""
    models = json.loads((run.path / MODELS).read_text())
    seeds = list(dict.fromkeys(model["seed"] for model in models))
    fields = [name for name in GRID_FIELDS if name in models[0]]
    grid = {name: list(dict.fromkeys(model[name] for model in models)) for name in fields}
    return seeds, grid
