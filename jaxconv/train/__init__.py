"""Training: the train state, jitted steps, Optax optimisers, the fit loop, checkpoints, runs.

    import jaxconv as jc
    from jaxconv.train import TrainConfig, train

    result = train(TrainConfig(model="convnet", dataset="fashion_mnist", epochs=6), "runs/first")

or, piece by piece::

    optimizer = jc.train.make_optimizer("adamw", jc.train.make_schedule("cosine", 1e-3, total_steps))
    train_state = jc.train.init_train_state(net, optimizer, (-1, 28, 28, 1), key)
    step = jc.train.make_train_step(net, optimizer, label_smoothing=0.1)
    train_state, metrics = step(train_state, images, labels)
"""

from jaxconv.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirError
from jaxconv.losses import correct, cross_entropy
from jaxconv.train.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from jaxconv.train.config import OPTIMIZERS, SCHEDULES, Augmentation, TrainConfig
from jaxconv.train.default_model import DEFAULT_MODEL, convnet, get_model, model_names
from jaxconv.train.experiment import default_run_dir, evaluate_run, train
from jaxconv.train.figures import confusion_matrix, plot_confusion, plot_curves, plot_filters
from jaxconv.train.loop import Evaluation, FitResult, evaluate, fit
from jaxconv.train.optim import make_optimizer, make_schedule
from jaxconv.train.run import Run
from jaxconv.train.state import TrainState, count_params, init_train_state
from jaxconv.train.step import make_eval_step, make_preprocess, make_train_step

__all__ = [
    "DEFAULT_MODEL",
    "OPTIMIZERS",
    "SCHEDULES",
    "Augmentation",
    "CheckpointError",
    "ConfigError",
    "Evaluation",
    "FitResult",
    "NonFiniteLossError",
    "Run",
    "RunDirError",
    "TrainConfig",
    "TrainState",
    "confusion_matrix",
    "convnet",
    "correct",
    "count_params",
    "cross_entropy",
    "default_run_dir",
    "evaluate",
    "evaluate_run",
    "fit",
    "get_model",
    "init_train_state",
    "load_checkpoint",
    "make_eval_step",
    "make_optimizer",
    "make_preprocess",
    "make_schedule",
    "make_train_step",
    "model_names",
    "plot_confusion",
    "plot_curves",
    "plot_filters",
    "read_metadata",
    "save_checkpoint",
    "train",
]
