"""The train state: everything one training step reads and writes, as one pytree."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxconv.core import Layer, Params, PyTree, Shape, State, trace
from jaxconv.errors import ConfigError


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
    net: Layer,
    optimizer: optax.GradientTransformation,
    input_shape: Shape,
    key: jax.Array,
    initial: tuple[Params, State] | None = None,
) -> TrainState:
    """Initialise ``net`` for inputs of ``input_shape`` (N, H, W, C) and the optimiser's state.

    ``key`` is split between the initialisation and the run's training key.
    ``initial``: the (params, state) to start from instead of ``net.init``'s (imported or
    pre-trained weights); they must have the trees, shapes and dtypes ``net.init`` gives.

    Raises:
      ConfigError: ``initial`` does not fit the net, listing each leaf that differs.
    """
    init_key, train_key = jax.random.split(key)
    if initial is None:
        _, params, state = net.init(init_key, input_shape)
    else:
        shapes = trace(net, input_shape)
        _check_initial(initial, (shapes.params, shapes.state))
        # copies: the train step donates its state, and the caller's arrays must outlive it
        params, state = jax.tree_util.tree_map(jnp.array, tuple(initial))
    return TrainState(params, state, optimizer.init(params), jnp.zeros((), jnp.int32), train_key)


def _check_initial(initial: tuple[Params, State], expected: tuple[Params, State]) -> None:
    """Raise `ConfigError` naming every leaf of ``initial`` missing from, extra to or shaped
    differently than ``expected`` (the (params, state) shapes of ``net.init``)."""
    given, wanted = _leaves(initial), _leaves(expected)
    problems = [f"{path} is missing (the net needs {wanted[path]})" for path in wanted if path not in given]
    problems += [f"{path} is not in the net" for path in given if path not in wanted]
    problems += [
        f"{path} is {given[path]} but the net needs {wanted[path]}"
        for path in wanted
        if path in given and given[path] != wanted[path]
    ]
    if problems:
        listed = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ConfigError(
            f"the initial (params, state) do not fit the net: {listed}. Pass the trees that "
            "net.init gives for this input shape (same classes, widths and layers)"
        )


def _leaves(params_and_state: tuple[Params, State]) -> dict[str, str]:
    """``{"params[0]['w']": 'float32[3, 3, 1, 32]', ...}`` for every leaf of (params, state)."""
    described = {}
    for name, tree in zip(("params", "state"), params_and_state, strict=True):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            described[name + jax.tree_util.keystr(path)] = f"{jnp.result_type(leaf)}{list(jnp.shape(leaf))}"
    return described


def step_key(train_state: TrainState) -> jax.Array:
    """The key of the step about to be taken: ``fold_in(key, step)``."""
    return jax.random.fold_in(train_state.key, train_state.step)


def count_params(params: Params) -> int:
    """The number of trained values in ``params``."""
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
