"""Differentially private training: DP-SGD on Poisson-sampled batches, as ``jaxconv train --dp-epsilon``.

    plan = privacy_plan(config, num_examples=60_000)      # the noise for the target epsilon
    step = make_private_train_step(net, optimizer, plan)  # step(train_state, images, labels, mask)
    for images, labels, mask in private_batches(train_data, plan, key, epoch): ...

Each step samples every training example independently with probability
q = batch_size / N (Poisson sampling, what the accountant assumes), pads the
batch to a fixed size so that one step is compiled, clips each example's
gradient to L2 norm C, adds Gaussian noise of std ``noise_multiplier * C`` and
divides by the expected batch size (`jaxconv.privacy`). With ``augmult`` K each
example enters in K augmented copies whose gradients are averaged before
clipping; with ``physical_batch_size`` the batch is computed in chunks of that
many examples (`jaxconv.privacy.in_chunks`) and noised once (De et al. 2022). The noise multiplier is
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

from jaxconv.core import Layer, LayerInfo, info, walk
from jaxconv.data import Dataset, prefetch_to_device
from jaxconv.errors import ConfigError
from jaxconv.losses import Metrics, accuracies, cross_entropy
from jaxconv.per_example import Strategy, net_loss
from jaxconv.privacy import (
    chunked_batch_size,
    clipped_grad_sum,
    epsilon,
    in_chunks,
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
      augmult: K, the augmented copies of each example whose gradients are averaged.
      physical_batch_size: the examples computed at once (None: the whole batch).
    """

    sampling_rate: float
    steps: int
    noise_multiplier: float
    l2_norm_clip: float
    delta: float
    num_examples: int
    augmult: int = 1
    physical_batch_size: int | None = None

    @property
    def expected_batch_size(self) -> float:
        return self.sampling_rate * self.num_examples

    @property
    def max_batch_size(self) -> int:
        """The padded batch size (`jaxconv.privacy.padded_batch_size`), in whole chunks."""
        padded = padded_batch_size(self.num_examples, self.sampling_rate)
        return chunked_batch_size(padded, self.physical_batch_size) if self.physical_batch_size else padded

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
    return PrivacyPlan(
        sampling_rate,
        steps,
        noise,
        config.dp_clip,
        config.dp_delta,
        num_examples,
        config.augmult,
        config.physical_batch_size,
    )


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
    ``plan.max_batch_size`` rows, ``mask`` (B,) marks the real ones; they are
    computed ``plan.physical_batch_size`` rows at a time (all at once if None),
    each example in ``plan.augmult``
    augmented copies. The metrics (the batch's mean loss, top-1 and top-5 over
    the real rows, on the first copies) come from a forward pass in evaluation
    mode and are not private: they are for the progress bar only, never released.
    """
    loss = functools.partial(cross_entropy, label_smoothing=label_smoothing)
    clipped_sum = clipped_grad_sum(
        net_loss(net, loss, copies=plan.augmult), plan.l2_norm_clip, strategy=strategy
    )

    def chunk_sum(params, state, images, labels, key, mask):
        augment_key, dropout_key = jax.random.split(key)
        x = _augmented_copies(preprocess, augment_key, images, plan.augmult)
        summed, _ = clipped_sum(params, state, x, labels, dropout_key, mask)
        logits, _ = net.apply(params, state, x[:, 0] if plan.augmult > 1 else x, train=False)
        return summed, logits

    summed_in_chunks = (
        in_chunks(chunk_sum, plan.physical_batch_size) if plan.physical_batch_size else chunk_sum
    )

    def train_step(train_state: TrainState, images, labels, mask) -> tuple[TrainState, Metrics]:
        chunks_key, noise_key = jax.random.split(step_key(train_state))
        params, state = train_state.params, train_state.state
        summed, logits = summed_in_chunks(params, state, images, labels, chunks_key, mask)
        grads = noisy_mean(
            summed,
            noise_key,
            l2_norm_clip=plan.l2_norm_clip,
            noise_multiplier=plan.noise_multiplier,
            batch_size=plan.expected_batch_size,
        )
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        metrics = _batch_metrics(logits, labels, mask)
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


def _augmented_copies(preprocess: Preprocess | None, key: jax.Array, images: jax.Array, copies: int):
    """The preprocessed images (B, ...), or with ``copies`` K > 1 (B, K, ...): K augmentations each."""
    if preprocess is None:
        preprocess = _as_float
    if copies == 1:
        return preprocess(key, images)
    augmented = jax.vmap(preprocess, (0, None))(jax.random.split(key, copies), images)
    return jnp.swapaxes(augmented, 0, 1)


def _as_float(key: jax.Array, images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32)


def _batch_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    weights = mask / jnp.maximum(mask.sum(), 1)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def weighted_mean(values: jax.Array) -> jax.Array:
        return jnp.sum(values * weights)

    return {"loss": weighted_mean(losses), **accuracies(logits, labels, weighted_mean)}
