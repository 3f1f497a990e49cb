"""The models of a grid: one configuration per (grid point, seed), their results over seeds, and
``models.json``, which names them in a run directory.

configs = model_configs(config, seeds=[0, 1], grid=parse_grid("lr=0.05,0.1"))
print(format_table(summarize(configs, final_accuracies)))
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxconv.errors import ConfigError
from jaxconv.runs.config import TrainConfig
from jaxconv.runs.directory import Run, is_writer, write_atomic

MODELS = "models.json"  # in the run directory: each model's seed and grid point
GRID_FIELDS = ("lr", "weight_decay", "momentum", "label_smoothing")  # may differ between the models


def model_configs(
    config: TrainConfig, seeds: Sequence[int] | None = None, grid: Mapping[str, Sequence[float]] | None = None
) -> list[TrainConfig]:
    """One configuration per (grid point, seed), grid-major: each checked by `TrainConfig.validate`."""
    seeds = [config.seed] if seeds is None else [int(seed) for seed in seeds]
    grid = dict(grid or {})
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds}: give at least one seed, each once, e.g. seeds=[0, 1, 2, 3]")
    for name, values in grid.items():
        if name not in GRID_FIELDS:
            raise ConfigError(
                f"grid field {name!r} cannot vary between models trained in one program; the grid may "
                f"hold {GRID_FIELDS}. Train other values of {name!r} in separate runs"
            )
        if not len(values):
            raise ConfigError(f"grid {name}=[]: give at least one value, e.g. {name}=0.05,0.1")
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    return [
        dataclasses.replace(config, seed=seed, **{k: float(v) for k, v in point.items()}).validate()
        for point in points
        for seed in seeds
    ]


def parse_grid(text: str) -> dict[str, list[float]]:
    """``'lr=0.05,0.1,0.2'`` or ``'lr=0.05,0.1;weight_decay=0,5e-4'`` as ``{field: [values]}``."""
    grid: dict[str, list[float]] = {}
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip().replace("-", "_")
        try:
            grid[name] = [float(value) for value in values.split(",") if value.strip()]
        except ValueError:
            raise ConfigError(
                f"--grid {text!r}: {part!r} is not name=value,value,...; e.g. lr=0.05,0.1"
            ) from None
        if not values.strip() or not grid[name]:
            raise ConfigError(f"--grid {text!r}: {part!r} has no values; e.g. lr=0.05,0.1,0.2")
    return grid


def summarize(
    configs: Sequence[TrainConfig], values: Sequence[float], diverged: Sequence[str | None] = ()
) -> list[dict[str, Any]]:
    """Per grid point (the `GRID_FIELDS` that differ between ``configs``), the seeds' count,
    mean, standard deviation (ddof 0), min and max of ``values`` (one per config), and, when a
    model has diverged (``diverged``: a reason or None per config), how many of the point's did."""
    fields = varying(configs)
    groups: dict[tuple[float, ...], list[tuple[float, bool]]] = {}
    failed = list(diverged) or [None] * len(configs)
    for model_config, value, reason in zip(configs, values, failed, strict=True):
        point = tuple(getattr(model_config, name) for name in fields)
        groups.setdefault(point, []).append((value, reason is not None))
    rows = []
    for point, group in groups.items():
        array = np.asarray([value for value, _ in group], np.float64)
        statistics = {"mean": array.mean(), "std": array.std(), "min": array.min(), "max": array.max()}
        row = dict(zip(fields, point, strict=True)) | {"models": len(group)}
        row |= {name: float(value) for name, value in statistics.items()}
        if any(reason is not None for reason in failed):
            row["diverged"] = sum(bad for _, bad in group)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]], metric: str = "test_top1") -> str:
    """The rows of `summarize` as an aligned text table titled with ``metric``."""
    if not rows:
        return f"{metric}: no epoch finished"
    names = list(rows[0])
    cells = [[_cell(row[name]) for name in names] for row in rows]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(names)]
    lines = ["  ".join(name.rjust(width) for name, width in zip(names, widths, strict=True))]
    lines += [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return f"{metric} over seeds\n" + "\n".join(lines)


def varying(configs: Sequence[TrainConfig]) -> list[str]:
    """The `GRID_FIELDS` whose values differ between ``configs``."""
    return [name for name in GRID_FIELDS if len({getattr(c, name) for c in configs}) > 1]


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- models.json -----------------------------------------------------------------------------


def check_models(run: Run | None, resume: bool, configs: Sequence[TrainConfig]) -> None:
    """Before resuming ``run``: raise `ConfigError` unless ``configs`` are the models it holds."""
    if run is None or not resume:
        return
    path = run.path / MODELS
    saved = json.loads(path.read_text()) if path.is_file() else None
    models = [_model_fields(c, configs) for c in configs]
    if saved != models:
        raise ConfigError(
            f"cannot resume {run.path} with other models: it holds {saved}, given {models}; "
            "resume with the run's own seeds and grid"
        )


def write_models(run: Run | None, resume: bool, configs: Sequence[TrainConfig]) -> None:
    """A new run's ``models.json``: each model's seed and grid point."""
    if run is not None and not resume and is_writer():
        models = [_model_fields(c, configs) for c in configs]
        write_atomic(run.path / MODELS, json.dumps(models, indent=1) + "\n")


def _model_fields(model_config: TrainConfig, configs: Sequence[TrainConfig]) -> dict[str, Any]:
    return {name: getattr(model_config, name) for name in ("seed", *varying(configs))}
