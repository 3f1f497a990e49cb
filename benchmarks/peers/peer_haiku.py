"""Haiku: ``hk.Module`` classes under ``hk.transform_with_state``, BatchNorm statistics in ``state``."""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from harness import Contestant, xla_memory
from jax_common import batches, carried, count, cross_entropy, sgd
from workloads import (
    BN_EPS,
    BN_MOMENTUM,
    CNN_DROPOUT,
    CNN_HIDDEN,
    CNN_WIDTH,
    BlockSpec,
    ResNetConfig,
    Workload,
    block_specs,
)

BatchNorm = functools.partial(
    hk.BatchNorm, create_scale=True, create_offset=True, decay_rate=BN_MOMENTUM, eps=BN_EPS
)


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, name: str | None = None) -> hk.Conv2D:
    return hk.Conv2D(features, kernel, stride, padding=((padding, padding),) * 2, with_bias=False, name=name)


class SmallCNN(hk.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def __call__(self, x, is_training: bool):
        for features in (CNN_WIDTH, 2 * CNN_WIDTH):
            x = jax.nn.relu(BatchNorm()(conv(features, 3, padding=1)(x), is_training))
            x = hk.max_pool(x, 2, 2, "VALID")
        x = jax.nn.relu(hk.Linear(CNN_HIDDEN)(hk.Flatten()(x)))
        if is_training:
            x = hk.dropout(hk.next_rng_key(), CNN_DROPOUT, x)
        return hk.Linear(self.num_classes)(x)


class Block(hk.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec

    def __call__(self, x, is_training: bool):
        y = x
        for index, spec in enumerate(self.spec.convs):
            y = BatchNorm()(conv(*spec)(y), is_training)
            y = jax.nn.relu(y) if index < len(self.spec.convs) - 1 else y
        stride, features = self.spec.stride, self.spec.out_channels
        if self.spec.shortcut == "A":
            x = x[:, ::stride, ::stride, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))
        elif self.spec.shortcut == "B":
            x = BatchNorm(name="projection_norm")(
                conv(features, 1, stride, name="projection")(x), is_training
            )
        return jax.nn.relu(y + x)


class ResNet(hk.Module):
    def __init__(self, config: ResNetConfig, num_classes: int):
        super().__init__()
        self.config, self.num_classes = config, num_classes

    def __call__(self, x, is_training: bool):
        config = self.config
        stem = conv(config.stem_width, 3, 1, 1) if config.cifar else conv(config.stem_width, 7, 2, 3)
        x = jax.nn.relu(BatchNorm()(stem(x), is_training))
        if not config.cifar:
            x = hk.max_pool(x, 3, 2, "SAME")  # as haiku's ResNet: the shapes of padding 1
        for stage in block_specs(config):
            for spec in stage:
                x = Block(spec)(x, is_training)
        return hk.Linear(self.num_classes)(x.mean((1, 2)))


def build(workload: Workload) -> Contestant:
    def forward(x, is_training):
        if workload.resnet is None:
            return SmallCNN(workload.num_classes)(x, is_training)
        return ResNet(workload.resnet, workload.num_classes)(x, is_training)

    model = hk.transform_with_state(forward)
    images, labels, infer_images = batches(workload)
    params, state = model.init(jax.random.key(0), images[:2], True)
    optimizer = sgd()

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, images, labels):
        params, state, opt_state, key = carry
        key, dropout_key = jax.random.split(key)

        def loss_fn(params):
            logits, state_out = model.apply(params, state, dropout_key, images, True)
            return cross_entropy(logits, labels), state_out

        (loss, state_out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state_out, opt_state, key), loss

    carry = (params, state, optimizer.init(params), jax.random.key(1))
    train_step, current = carried(step, carry, images, labels)
    predict = jax.jit(lambda params, state, x: model.apply(params, state, None, x, False)[0])

    def infer():
        params, state, *_ = current()
        return predict(params, state, infer_images)

    def peak_memory():
        return xla_memory(step.lower(current(), images, labels))

    return Contestant(count(params), train_step, infer, peak_memory, hk.__version__)
