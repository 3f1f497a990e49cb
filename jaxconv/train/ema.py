"""An exponential moving average (EMA) of the weights, kept in the optimiser's state.

    optimizer = with_ema(make_optimizer("sgd", 0.1), decay=0.999)
    train_state = init_train_state(net, optimizer, input_shape, key)   # any step trains it
    averaged = ema_params(train_state.opt_state)                       # a params tree, or None

After step t the average is ``a_t = sum_k (1 - decay) decay^(t-k) p_k / (1 - decay^t)`` over
the params p_1 ... p_t the steps made: the exponential average with its bias corrected (as
Adam's moments are), so the initial params weigh nothing once a step is taken (without the
correction they would still weigh decay^t: 31% after 1,160 steps at 0.999) and a_1 = p_1. It
is kept as the recurrence ``a_t = (decay (1 - decay^(t-1)) a_{t-1} + (1 - decay) p_t) /
(1 - decay^t)``, starting from a_0 = p_0. Being
optimiser state, it needs nothing of the step that applies the optimiser (the train step,
the sharded and DP-SGD steps, `jaxconv.runs.fit_many` under ``vmap``), is saved in the
checkpoint and resumes with it. The BatchNorm statistics stay the trained model's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxconv.core import Params, PyTree
from jaxconv.data import Dataset
from jaxconv.errors import ConfigError
from jaxconv.train.evaluation import Evaluation, evaluate
from jaxconv.train.state import TrainState
from jaxconv.train.step import EvalStep


class EmaState(NamedTuple):
    """The wrapped optimiser's state, the average of the params and decay^t after t steps."""

    inner: optax.OptState
    average: Params
    power: jax.Array  # () float32


def with_ema(optimizer: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
    """``optimizer`` that also keeps the EMA of the params it produces, with ``decay`` in [0, 1).

    Its ``update`` needs the params (as every jaxconv step passes them).
    """
    if not 0 <= decay < 1:
        raise ConfigError(f"ema decay={decay}: must be in [0, 1), e.g. 0.999 (about the last 1000 steps)")

    def init(params: Params) -> EmaState:
        average = jax.tree_util.tree_map(jnp.array, params)  # a copy
        return EmaState(optimizer.init(params), average, jnp.ones((), jnp.float32))

    def update(updates: PyTree, state: EmaState, params: Params | None = None, **extra: Any) -> tuple:
        if params is None:
            raise ValueError("with_ema's update needs the params: optimizer.update(grads, state, params)")
        updates, inner = optimizer.update(updates, state.inner, params, **extra)
        new_params = optax.apply_updates(params, updates)
        power = decay * state.power
        kept, new = decay * (1 - state.power) / (1 - power), (1 - decay) / (1 - power)
        average = jax.tree_util.tree_map(
            lambda a, p: (kept * a + new * p).astype(a.dtype), state.average, new_params
        )
        return updates, EmaState(inner, average, power)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state: PyTree) -> Params | None:
    """The averaged params kept by `with_ema` in ``opt_state``, or None without an EMA."""
    return opt_state.average if isinstance(opt_state, EmaState) else None


def evaluate_ema(
    eval_step: EvalStep, train_state: TrainState, data: Dataset, batch_size: int
) -> Evaluation | None:
    """`evaluate` with the averaged params (and the trained BatchNorm statistics); None without an EMA."""
    average = ema_params(train_state.opt_state)
    if average is None:
        return None
    return evaluate(eval_step, average, train_state.state, data, batch_size)
