"""Flax linen: ``nn.Module`` classes with ``nn.compact``, BatchNorm statistics in ``batch_stats``."""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
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

BatchNorm = functools.partial(nn.BatchNorm, momentum=BN_MOMENTUM, epsilon=BN_EPS)


class SmallCNN(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        for features in (CNN_WIDTH, 2 * CNN_WIDTH):
            x = nn.Conv(features, (3, 3), padding=1, use_bias=False)(x)
            x = nn.relu(BatchNorm(use_running_average=not train)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(CNN_HIDDEN)(x))
        x = nn.Dropout(CNN_DROPOUT, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class Block(nn.Module):
    spec: BlockSpec

    @nn.compact
    def __call__(self, x, train: bool):
        y = x
        for index, (features, kernel, stride, padding) in enumerate(self.spec.convs):
            y = nn.Conv(features, (kernel, kernel), stride, padding=padding, use_bias=False)(y)
            y = BatchNorm(use_running_average=not train)(y)
            y = nn.relu(y) if index < len(self.spec.convs) - 1 else y
        stride, features = self.spec.stride, self.spec.out_channels
        if self.spec.shortcut == "A":
            x = x[:, ::stride, ::stride, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))
        elif self.spec.shortcut == "B":
            x = nn.Conv(features, (1, 1), stride, use_bias=False)(x)
            x = BatchNorm(use_running_average=not train)(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    config: ResNetConfig
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        config = self.config
        if config.cifar:
            x = nn.Conv(config.stem_width, (3, 3), padding=1, use_bias=False)(x)
        else:
            x = nn.Conv(config.stem_width, (7, 7), 2, padding=3, use_bias=False)(x)
        x = nn.relu(BatchNorm(use_running_average=not train)(x))
        if not config.cifar:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in block_specs(config):
            for spec in stage:
                x = Block(spec)(x, train)
        return nn.Dense(self.num_classes)(x.mean((1, 2)))


def build(workload: Workload) -> Contestant:
    if workload.resnet is None:
        model = SmallCNN(workload.num_classes)
    else:
        model = ResNet(workload.resnet, workload.num_classes)
    images, labels, infer_images = batches(workload)
    variables = model.init(jax.random.key(0), images[:2], train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    optimizer = sgd()

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, images, labels):
        params, batch_stats, opt_state, key = carry
        key, dropout_key = jax.random.split(key)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, images, train=True,
                rngs={"dropout": dropout_key}, mutable=["batch_stats"],
            )  # fmt: skip
            return cross_entropy(logits, labels), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state, key), loss

    carry = (params, batch_stats, optimizer.init(params), jax.random.key(1))
    train_step, current = carried(step, carry, images, labels)
    predict = jax.jit(
        lambda params, batch_stats, x: model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=False
        )
    )

    def infer():
        params, batch_stats, *_ = current()
        return predict(params, batch_stats, infer_images)

    def peak_memory():
        return xla_memory(step.lower(current(), images, labels))

    return Contestant(count(params), train_step, infer, peak_memory, flax.__version__)
