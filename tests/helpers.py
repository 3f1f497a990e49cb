"""Helpers shared by the test files (import with ``from helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxconv as jc


def random_params(net: jc.Layer, shape: tuple[int, ...], seed: int = 0):
    """Params drawn with NumPy at the shapes init gives, and the state init gives.

    ``net.init`` run eagerly compiles each initialiser op per shape (slow); here the
    params' shapes come from `jax.eval_shape` and the state from a jitted init, whose
    random ops are dead code. Weights are normal with variance 1/fan_in.
    """
    params = jax.eval_shape(lambda key: net.init(key, shape)[1], jax.random.key(0))
    state = jax.jit(lambda key: net.init(key, shape)[2])(jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = math.prod(leaf.shape[:-1]) or 1
        return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map(draw, params), state


def init_shapes(net: jc.Layer, input_shape: tuple[int, ...]):
    """``net.init`` traced without running it: the output shape and the params' and state's shapes.

    For tests that bring their own parameters and need not compile the random initialisers.
    """
    shapes = {}

    def init(key):
        shapes["output"], params, state = net.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0))
    return shapes["output"], params, state


def loop_of_grads(loss_fn, params, state, x, y, key):
    """The per-example reference: one jitted `jax.grad` per example, each with its batch axis of
    one and key ``fold_in(key, i)``; leaves stacked along a leading example axis."""
    grad_fn = jax.jit(jax.grad(loss_fn))
    grads = [
        grad_fn(params, state, x[i : i + 1], y[i : i + 1], jax.random.fold_in(key, i))
        for i in range(x.shape[0])
    ]
    return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *grads)


def family_representatives() -> list[str]:
    """The smallest model of each zoo family module, plus the torchvision-shaped ResNet and
    GoogLeNet and the stochastic-depth ResNet, whose blocks differ."""
    counts, smallest = jc.models.param_counts(), {}
    for name in sorted(jc.models.names(), key=lambda name: counts.get(name, 0)):
        smallest.setdefault(jc.models.spec(name).builder.__module__, name)
    return sorted({*smallest.values(), "resnet18_tv", "googlenet_tv", "resnet110_sd"})


def xla_flags_with_devices(count: int) -> str:
    """``XLA_FLAGS`` for a subprocess with ``count`` forced CPU devices, keeping the flags this
    process was given (conftest's optimisation level)."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
