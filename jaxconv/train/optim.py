"""Optax optimisers and learning-rate schedules, chosen by name.

    schedule = make_schedule("onecycle", peak=3e-3, total_steps=2814)
    optimizer = make_optimizer("adamw", schedule, weight_decay=5e-4)

Weight decay applies to kernels only (parameters with two or more axes), not
to biases or normalisation scales, as in the ResNet and AdamW papers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxconv.errors import ConfigError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "onecycle")


def make_schedule(name: str, peak: float, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """The learning rate at each step, rising linearly over ``warmup_steps`` to ``peak``.

    - ``'constant'``: ``peak`` after the warmup.
    - ``'cosine'``: cosine decay from ``peak`` to 0 at ``total_steps``.
    - ``'step'``: ``peak``, then x0.1 at 50% and again at 75% of the steps.
    - ``'onecycle'``: Smith's one-cycle: cosine up from ``peak / 25`` over
      ``warmup_steps`` (30% of the steps if 0), then cosine down to ``peak / 25e4``.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; valid schedules: {SCHEDULES}")
    if name == "onecycle":
        fraction = warmup_steps / total_steps if warmup_steps else 0.3
        return optax.cosine_onecycle_schedule(total_steps, peak, pct_start=fraction)
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1))
    after = total_steps - warmup_steps
    main = (
        optax.constant_schedule(peak)
        if name == "constant"
        else optax.piecewise_constant_schedule(peak, {after // 2: 0.1, (3 * after) // 4: 0.1})
    )
    if not warmup_steps:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), main], [warmup_steps])


def make_optimizer(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> optax.GradientTransformation:
    """``'sgd'`` (momentum), ``'nesterov'``, ``'adam'`` or ``'adamw'``, with weight decay on kernels."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid optimizers: {OPTIMIZERS}")
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay, mask=kernels_only)
    base = (
        optax.adam(learning_rate)
        if name == "adam"
        else optax.sgd(learning_rate, momentum=momentum, nesterov=name == "nesterov")
    )
    if (
        isinstance(weight_decay, int | float) and not weight_decay
    ):  # 0: none; a traced value (a grid under vmap) stays
        return base
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=kernels_only), base)


def kernels_only(params: optax.Params) -> optax.Params:
    """True for parameters with two or more axes (kernels), False for biases and scales."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


class LookaheadState(NamedTuple):
    """The wrapped optimiser's state, the slow weights and the steps taken."""

    inner: optax.OptState
    slow: optax.Params
    count: jax.Array


def with_lookahead(
    optimizer: optax.GradientTransformation, steps: int, alpha: float = 0.5
) -> optax.GradientTransformation:
    """Lookahead (Zhang et al. 2019) around ``optimizer``: the params take ``optimizer``'s steps
    (the fast weights); every ``steps`` steps the slow weights move ``alpha`` of the way to
    them, ``slow += alpha * (fast - slow)``, and the params start again from the slow weights.

    Unlike ``optax.lookahead`` it keeps the slow weights in its state, so the train state's
    params stay a plain params tree. Its ``update`` needs the params.
    """
    if steps < 1 or not 0 < alpha <= 1:
        raise ConfigError(
            f"lookahead steps={steps}, alpha={alpha}: use steps >= 1 and 0 < alpha <= 1, e.g. 5, 0.5"
        )

    def init(params: optax.Params) -> LookaheadState:
        return LookaheadState(
            optimizer.init(params), jax.tree_util.tree_map(jnp.array, params), jnp.zeros((), jnp.int32)
        )

    def update(
        updates: optax.Updates, state: LookaheadState, params: optax.Params | None = None, **extra: Any
    ) -> tuple:
        if params is None:
            raise ValueError(
                "with_lookahead's update needs the params: optimizer.update(grads, state, params)"
            )
        updates, inner = optimizer.update(updates, state.inner, params, **extra)
        fast = optax.apply_updates(params, updates)
        count = state.count + 1
        sync = count % steps == 0
        slow = jax.tree_util.tree_map(lambda s, f: jnp.where(sync, s + alpha * (f - s), s), state.slow, fast)
        new_params = jax.tree_util.tree_map(lambda s, f: jnp.where(sync, s, f), slow, fast)
        updates = jax.tree_util.tree_map(lambda new, old: (new - old).astype(old.dtype), new_params, params)
        return updates, LookaheadState(inner, slow, count)

    return optax.GradientTransformation(init, update)
