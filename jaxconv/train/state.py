"""The train state: everything one training step reads and writes, as one pytree."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxconv.core import Layer, Params, PyTree, Shape, State


class TrainState(NamedTuple):
    """The state of a training run between two steps.

    Attributes:
      params: what the optimiser trains (the net's params tree).
      state: the net's other state (BatchNorm running statistics).
      opt_state: the Optax optimiser's state (moments, step count of the schedule).
      step: the number of steps taken, an int32 scalar.
      key: the run's training key; step ``t`` uses ``fold_in(key, t)`` for its
        augmentation and dropout, so a resumed run draws what it would have drawn.
    """

    params: Params
    state: State
    opt_state: PyTree
    step: jax.Array
    key: jax.Array


def init_train_state(
    net: Layer, optimizer: optax.GradientTransformation, input_shape: Shape, key: jax.Array
) -> TrainState:
    """Initialise ``net`` for inputs of ``input_shape`` (N, H, W, C) and the optimiser's state.

    ``key`` is split between the initialisation and the run's training key.
    """
    init_key, train_key = jax.random.split(key)
    _, params, state = net.init(init_key, input_shape)
    return TrainState(params, state, optimizer.init(params), jnp.zeros((), jnp.int32), train_key)


def step_key(train_state: TrainState) -> jax.Array:
    """The key of the step about to be taken: ``fold_in(key, step)``."""
    return jax.random.fold_in(train_state.key, train_state.step)


def count_params(params: Params) -> int:
    """The number of trained values in ``params``."""
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
