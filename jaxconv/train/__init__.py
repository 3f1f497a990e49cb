"""The training library: the train state, single-device steps, Optax optimisers, checkpoints.

    import jaxconv as jc

    optimizer = jc.train.make_optimizer("adamw", jc.train.make_schedule("cosine", 1e-3, total_steps))
    train_state = jc.train.init_train_state(net, optimizer, (-1, 28, 28, 1), key)
    step = jc.train.make_train_step(net, optimizer, label_smoothing=0.1)
    train_state, metrics = step(train_state, images, labels)   # (N, H, W, C), (N,)
    jc.train.save_checkpoint("best.npz", train_state, {"step": 1})     # one portable file
    store = jc.train.OrbaxStore("run/orbax", keep=3)                  # a run's checkpoints
    store.save(1, train_state, {"epoch": 1})                          # written in the background

Data-parallel steps are in `jaxconv.distributed`; a whole training run (configuration,
run directory, epochs, figures) is `jaxconv.runs`.
"""

from jaxconv.train.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from jaxconv.train.ema import EmaState, ema_params, evaluate_ema, with_ema
from jaxconv.train.evaluation import Evaluation, confusion_matrix, evaluate, per_model
from jaxconv.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    LookaheadState,
    kernels_only,
    make_optimizer,
    make_schedule,
    with_lookahead,
)
from jaxconv.train.orbax_store import OrbaxStore, complete_steps
from jaxconv.train.state import TrainState, count_params, init_train_state, step_key
from jaxconv.train.step import (
    EvalStep,
    Preprocess,
    TrainStep,
    eval_step_function,
    make_eval_step,
    make_preprocess,
    make_train_step,
    train_step_function,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "EmaState",
    "EvalStep",
    "Evaluation",
    "LookaheadState",
    "OrbaxStore",
    "Preprocess",
    "TrainState",
    "TrainStep",
    "complete_steps",
    "confusion_matrix",
    "count_params",
    "ema_params",
    "eval_step_function",
    "evaluate",
    "evaluate_ema",
    "init_train_state",
    "kernels_only",
    "load_checkpoint",
    "make_eval_step",
    "make_optimizer",
    "make_preprocess",
    "make_schedule",
    "make_train_step",
    "per_model",
    "read_metadata",
    "save_checkpoint",
    "step_key",
    "train_step_function",
    "with_ema",
    "with_lookahead",
]
