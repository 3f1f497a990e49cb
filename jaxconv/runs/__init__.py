"""Training runs end to end: the configuration, the run directory, the fit loop, DP-SGD, figures.

    import jaxconv as jc

    result = jc.runs.train_run(jc.runs.TrainConfig(model="convnet", epochs=6), "runs/first")
    evaluation = jc.runs.evaluate_run("runs/first")

or with a net and data of one's own::

    run, config = jc.runs.Run.open("runs/mine", jc.runs.TrainConfig(epochs=6))
    result = jc.runs.fit(net, train_data, test_data, config, run=run)

This is the driver on top of the library pieces (`jaxconv.train`: train state, steps,
optimisers, checkpoints) and `jaxconv.distributed` (data-parallel steps).
"""

from jaxconv.runs.config import Augmentation, TrainConfig, optimizer_for
from jaxconv.runs.directory import Run, default_run_dir, is_writer
from jaxconv.runs.experiment import evaluate_run, export_run, report, train_run
from jaxconv.runs.figures import first_conv_kernel, plot_confusion, plot_curves, plot_filters
from jaxconv.runs.loop import FitResult, fit
from jaxconv.runs.private import PrivacyPlan, privacy_plan

__all__ = [
    "Augmentation",
    "FitResult",
    "PrivacyPlan",
    "Run",
    "TrainConfig",
    "default_run_dir",
    "evaluate_run",
    "export_run",
    "first_conv_kernel",
    "fit",
    "is_writer",
    "optimizer_for",
    "plot_confusion",
    "plot_curves",
    "plot_filters",
    "privacy_plan",
    "report",
    "train_run",
]
