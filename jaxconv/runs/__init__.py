"""Training runs end to end: the configuration, the run directory, the fit loop, DP-SGD, figures.

    import jaxconv as jc

    result = jc.runs.train_run(jc.runs.TrainConfig(model="convnet", epochs=6), "runs/first")
    evaluation = jc.runs.evaluate_run("runs/first")

or with a net and data of one's own::

    run, config = jc.runs.Run.open("runs/mine", jc.runs.TrainConfig(epochs=6))
    result = jc.runs.fit(net, train_data, test_data, config, run=run)

or many seeds and a grid of learning rates in one program (`fit_many`)::

    result = jc.runs.fit_many(net, train_data, test_data, config, seeds=[0, 1], grid={"lr": [0.01, 0.1]})

This is the driver on top of the library pieces (`jaxconv.train`: train state, steps,
optimisers, checkpoints) and `jaxconv.distributed` (data-parallel steps).
"""

from jaxconv.runs.config import Augmentation, TrainConfig, optimizer_for
from jaxconv.runs.directory import Run, default_run_dir, is_writer
from jaxconv.runs.experiment import evaluate_run, export_run, report, train_run
from jaxconv.runs.figures import first_conv_kernel, plot_confusion, plot_curves, plot_filters
from jaxconv.runs.grid import GRID_FIELDS, model_configs, parse_grid
from jaxconv.runs.html_report import REPORT, write_report
from jaxconv.runs.loop import FitResult, fit
from jaxconv.runs.many import ManyResult, fit_many, model_bytes
from jaxconv.runs.private import PrivacyPlan, privacy_plan
from jaxconv.runs.recipes import RECIPES, recipe
from jaxconv.runs.sweep import train_many_run
from jaxconv.runs.trained import Trained, restore

__all__ = [
    "GRID_FIELDS",
    "RECIPES",
    "REPORT",
    "Augmentation",
    "FitResult",
    "ManyResult",
    "PrivacyPlan",
    "Run",
    "TrainConfig",
    "Trained",
    "default_run_dir",
    "evaluate_run",
    "export_run",
    "first_conv_kernel",
    "fit",
    "fit_many",
    "is_writer",
    "model_bytes",
    "model_configs",
    "optimizer_for",
    "parse_grid",
    "plot_confusion",
    "plot_curves",
    "plot_filters",
    "privacy_plan",
    "recipe",
    "report",
    "restore",
    "train_many_run",
    "train_run",
    "write_report",
]
