"""Differentially private training: DP-SGD on Poisson-sampled batches, as ``jaxconv train --dp-epsilon``.

    plan = privacy_plan(config, num_examples=60_000)      # the noise for the target epsilon
    step = make_private_train_step(net, optimizer, plan)  # step(train_state, images, labels, mask)
    for images, labels, mask in private_batches(train_data, plan, key, epoch): ...

Each step samples every training example independently with probability
q = batch_size / N (Poisson sampling, what the accountant assumes), pads the
batch to a fixed size so that one step is compiled, clips each example's
gradient to L2 norm C, adds Gaussian noise of std ``noise_multiplier * C`` and
divides by the expected batch size (`jaxconv.privacy`). The noise multiplier is
the smallest whose epsilon after all the run's steps is at most the target
(`jaxconv.privacy.noise_multiplier_for`, RDP accountant), so the whole run is
(epsilon, delta)-DP; each epoch's record holds the epsilon spent so far.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv.core import Layer, LayerInfo, Params, info, walk
from jaxconv.data import Dataset, prefetch_to_device
from jaxconv.errors import ConfigError
from jaxconv.losses import Metrics, accuracies, cross_entropy
from jaxconv.per_example import Strategy, net_loss
from jaxconv.privacy import (
    clipped_grad_sum,
    epsilon,
    noise_multiplier_for,
    noisy_mean,
    padded_batch_size,
    poisson_batches,
)
from jaxconv.runs.config import TrainConfig
from jaxconv.train import Preprocess, TrainState, step_key


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD settings of a run, fixed before its first step.

    Attributes:
      sampling_rate: q, the probability that an example joins a batch.
      steps: T, the run's number of steps.
      noise_multiplier: sigma, the noise std over the clip norm.
      l2_norm_clip: C, the largest per-example gradient norm.
      delta: the delta of the (epsilon, delta) guarantee.
      num_examples: N, the training set's size.
    """

    sampling_rate: float
    steps: int
    noise_multiplier: float
    l2_norm_clip: float
    delta: float
    num_examples: int

    @property
    def expected_batch_size(self) -> float:
        return self.sampling_rate * self.num_examples

    @property
    def max_batch_size(self) -> int:
        """The padded batch size (`jaxconv.privacy.padded_batch_size`)."""
        return padded_batch_size(self.num_examples, self.sampling_rate)

    def epsilon(self, steps: int | None = None) -> float:
        """The epsilon spent after ``steps`` steps (default: the whole run)."""
        steps = self.steps if steps is None else steps
        return epsilon(self.sampling_rate, self.noise_multiplier, steps, self.delta)


def privacy_plan(config: TrainConfig, num_examples: int) -> PrivacyPlan:
    """The plan of ``config`` (which has ``dp_epsilon`` set) for a training set of ``num_examples``."""
    if config.dp_epsilon is None:
        raise ConfigError("privacy_plan needs a config with dp_epsilon set, e.g. --dp-epsilon 3")
    sampling_rate = config.batch_size / num_examples
    steps = config.epochs * (num_examples // config.batch_size)
    noise = noise_multiplier_for(config.dp_epsilon, sampling_rate, steps, config.dp_delta)
    return PrivacyPlan(sampling_rate, steps, noise, config.dp_clip, config.dp_delta, num_examples)


def check_private(net: Layer, model_name: str) -> None:
    """Refuse a net with a layer that mixes the examples of a batch (BatchNorm's statistics,
    ``traits.mixes_examples``): an example's gradient then depends on the others and clipping it
    bounds nothing."""
    root = info(net).name or "net"
    mixing = {
        "/".join((root, *path)): layer_info.kind for path, layer_info in walk(net) if _mixes(layer_info)
    }
    if mixing:
        kinds = " and ".join(sorted(set(mixing.values())))
        raise ConfigError(
            f"model {model_name!r} has {kinds} ({len(mixing)} layers, the first at "
            f"{next(iter(mixing))}), which mixes the examples of a batch, so DP-SGD cannot "
            "bound one example's influence; use --model dp_cnn (the CNN of Papernot et al. 2021), or a "
            "zoo model built with norm='group'"
        )


def _mixes(layer_info: LayerInfo) -> bool:
    return layer_info.traits is not None and layer_info.traits.mixes_examples


def make_private_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    plan: PrivacyPlan,
    *,
    preprocess: Preprocess | None = None,
    label_smoothing: float = 0.0,
    strategy: Strategy = "auto",
    donate: bool = True,
):
    """A jitted DP-SGD ``step(train_state, images, labels, mask) -> (train_state, metrics)``.

    ``images`` (B, H, W, C) and ``labels`` (B,) are a Poisson batch padded to
    ``plan.max_batch_size`` rows, ``mask`` (B,) marks the real ones. The
    metrics (the batch's mean loss, top-1 and top-5 over the real rows) come
    from a forward pass in evaluation mode and are not private: they are for
    the progress bar only, never released.
    """
    loss = functools.partial(cross_entropy, label_smoothing=label_smoothing)
    clipped_sum = clipped_grad_sum(net_loss(net, loss), plan.l2_norm_clip, strategy=strategy)

    def train_step(train_state: TrainState, images, labels, mask) -> tuple[TrainState, Metrics]:
        augment_key, dropout_key, noise_key = jax.random.split(step_key(train_state), 3)
        x = preprocess(augment_key, images) if preprocess else images
        summed, _ = clipped_sum(train_state.params, train_state.state, x, labels, dropout_key, mask)
        grads = noisy_mean(
            summed,
            noise_key,
            l2_norm_clip=plan.l2_norm_clip,
            noise_multiplier=plan.noise_multiplier,
            batch_size=plan.expected_batch_size,
        )
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        metrics = _batch_metrics(net, train_state.params, train_state.state, x, labels, mask)
        new_state = TrainState(params, train_state.state, opt_state, train_state.step + 1, train_state.key)
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=0 if donate else ())


def private_batches(
    data: Dataset, plan: PrivacyPlan, key: jax.Array, epoch: int, *, prefetch: int = 2
) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
    """One epoch (``N // batch_size`` steps) of Poisson batches ``(images, labels, mask)`` on the
    device, padded to ``plan.max_batch_size``; drawn from ``fold_in(key, epoch)``."""
    steps = plan.num_examples // round(plan.expected_batch_size)
    images, labels = data.arrays

    def host() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        epoch_key = jax.random.fold_in(key, epoch)
        for batch in poisson_batches(
            plan.num_examples,
            plan.sampling_rate,
            epoch_key,
            steps=steps,
            max_batch_size=plan.max_batch_size,
        ):
            indices, mask = np.asarray(batch.indices), np.asarray(batch.mask)
            yield images[indices], labels[indices], mask

    return prefetch_to_device(host(), prefetch)


def _batch_metrics(net: Layer, params: Params, state, x, labels, mask) -> Metrics:
    logits, _ = net.apply(params, state, x, train=False)
    weights = mask / jnp.maximum(mask.sum(), 1)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def weighted_mean(values: jax.Array) -> jax.Array:
        return jnp.sum(values * weights)

    return {"loss": weighted_mean(losses), **accuracies(logits, labels, weighted_mean)}
