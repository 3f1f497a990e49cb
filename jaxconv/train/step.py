"""The jitted train and evaluation steps on one device (loss and metrics: `jaxconv.losses`).

    train_step = make_train_step(net, optimizer, preprocess=augmenter, label_smoothing=0.1)
    train_state, metrics = train_step(train_state, images, labels)  # donates train_state

Images arrive as the dataset stores them ((N, H, W, C) uint8) and are
augmented and normalised inside the step, on the device (``preprocess``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxconv.core import Layer, Params, State
from jaxconv.data import Mix, augment, normalize, test_views
from jaxconv.losses import Metrics, accuracies, cross_entropy
from jaxconv.train.state import TrainState, step_key

Preprocess = Callable[[jax.Array | None, jax.Array], jax.Array]  # (key or None, images) -> x
TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]
MIX_STREAM = 2  # the mixing key: fold_in(step key, MIX_STREAM)
EvalStep = Callable[[Params, State, jax.Array, jax.Array], Metrics]


def make_train_step(
    net: Layer,
    optimizer: optax.GradientTransformation,
    *,
    preprocess: Preprocess | None = None,
    label_smoothing: float = 0.0,
    mix: Mix | None = None,
    donate: bool = True,
) -> TrainStep:
    """A jitted ``step(train_state, images, labels) -> (train_state, metrics)``.

    One step of ``optimizer`` on the mean ``cross_entropy`` of a batch. The
    metrics are the batch's mean ``loss`` (with smoothing), ``top1`` and ``top5``
    accuracy. With ``donate`` the input train state's buffers are reused for the
    output, so the caller must not touch the old state after the call. ``mix``
    (`jaxconv.data.mixup`, `cutmix`) mixes the preprocessed batch, and the loss is
    ``lam * loss(labels) + (1 - lam) * loss(labels[partner])``; the accuracies count
    the labels of the unmixed examples.
    """
    step = train_step_function(
        net, optimizer, preprocess=preprocess, label_smoothing=label_smoothing, mix=mix
    )
    return jax.jit(step, donate_argnums=0 if donate else ())


def train_step_function(
    net: Layer,
    optimizer: optax.GradientTransformation,
    *,
    preprocess: Preprocess | None = None,
    label_smoothing: float | jax.Array = 0.0,
    mix: Mix | None = None,
) -> TrainStep:
    """The step of `make_train_step` before ``jax.jit``: the one train step that `make_train_step`,
    the sharded steps and `jaxconv.runs.fit_many` (under ``vmap``, where ``optimizer`` and
    ``label_smoothing`` may hold traced hyperparameters) all run."""

    def train_step(
        train_state: TrainState, images: jax.Array, labels: jax.Array
    ) -> tuple[TrainState, Metrics]:
        augment_key, dropout_key = jax.random.split(step_key(train_state))
        x = preprocess(augment_key, images) if preprocess else images
        if mix is not None:  # a key of its own: the other draws stay those of a run without mixing
            x, partner, lam = mix(jax.random.fold_in(step_key(train_state), MIX_STREAM), x)

        def loss_fn(params: Params) -> tuple[jax.Array, tuple[jax.Array, State]]:
            logits, state = net.apply(params, train_state.state, x, key=dropout_key, train=True)
            loss = cross_entropy(logits, labels, label_smoothing)
            if mix is not None:
                loss = lam * loss + (1 - lam) * cross_entropy(logits, labels[partner], label_smoothing)
            return loss, (logits, state)

        (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state.params)
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        new_state = TrainState(params, state, opt_state, train_state.step + 1, train_state.key)
        return new_state, {"loss": loss, **accuracies(logits, labels, jnp.mean)}

    return train_step


def make_eval_step(
    net: Layer, *, preprocess: Preprocess | None = None, crop_padding: int = 0, flip: bool = False
) -> EvalStep:
    """A jitted ``step(params, state, images, labels) -> metrics`` in evaluation mode.

    The metrics are sums over the batch, to be added up over a dataset: ``loss``
    (cross-entropy without smoothing), ``top1`` and ``top5`` (correct counts),
    and the (N,) ``predictions``. With ``crop_padding`` or ``flip`` it averages the
    softmax probabilities over `jaxconv.data.test_views` (test-time augmentation) and
    the loss and predictions are those of the averaged probabilities.
    """
    return jax.jit(eval_step_function(net, preprocess=preprocess, crop_padding=crop_padding, flip=flip))


def eval_step_function(
    net: Layer, *, preprocess: Preprocess | None = None, crop_padding: int = 0, flip: bool = False
) -> EvalStep:
    """The step of `make_eval_step` before ``jax.jit`` (`jaxconv.runs.fit_many` maps it over models)."""

    def predict(params: Params, state: State, images: jax.Array) -> jax.Array:
        x = preprocess(None, images) if preprocess else images
        return net.apply(params, state, x, train=False)[0]

    def eval_step(params: Params, state: State, images: jax.Array, labels: jax.Array) -> Metrics:
        if crop_padding or flip:  # log of the mean probability over the views
            views = test_views(images, crop_padding=crop_padding, flip=flip)
            probabilities = [jax.nn.softmax(predict(params, state, view)) for view in views]
            logits = jnp.log(sum(probabilities) / len(views))
        else:
            logits = predict(params, state, images)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
        predictions = jnp.argmax(logits, -1)
        return {"loss": loss, **accuracies(logits, labels, jnp.sum), "predictions": predictions}

    return eval_step


def make_preprocess(mean: Any, std: Any, *, crop_padding: int = 0, flip: bool = False) -> Preprocess:
    """``preprocess(key, images)``: augment (with a key, in training) and normalise (N, H, W, C) uint8
    images to float32 with the dataset's per-channel ``mean`` and ``std`` (see `jaxconv.data.augment`)."""

    def preprocess(key: jax.Array | None, images: jax.Array) -> jax.Array:
        if key is None:
            return normalize(images, mean, std)
        return augment(key, images, mean=mean, std=std, crop_padding=crop_padding, flip=flip)

    return preprocess
