"""Equinox: ``eqx.Module`` pytrees of per-example (C, H, W) layers, vmapped over the batch,
BatchNorm state in ``eqx.nn.State``, ``eqx.filter_jit`` and ``eqx.filter_value_and_grad``."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
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

BATCH_AXIS = "batch"


def conv(in_channels: int, features: int, kernel: int, stride: int, padding: int, key) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(in_channels, features, kernel, stride, padding, use_bias=False, key=key)


def batch_norm(channels: int) -> eqx.nn.BatchNorm:
    return eqx.nn.BatchNorm(channels, BATCH_AXIS, eps=BN_EPS, momentum=BN_MOMENTUM, mode="batch")


class SmallCNN(eqx.Module):
    convs: list[eqx.nn.Conv2d]
    norms: list[eqx.nn.BatchNorm]
    hidden: eqx.nn.Linear
    dropout: eqx.nn.Dropout
    output: eqx.nn.Linear

    def __init__(self, in_channels: int, flat_size: int, num_classes: int, key):
        keys = jax.random.split(key, 4)
        widths = (CNN_WIDTH, 2 * CNN_WIDTH)
        self.convs = [
            conv(c, f, 3, 1, 1, k) for c, f, k in zip((in_channels, CNN_WIDTH), widths, keys[:2], strict=True)
        ]
        self.norms = [batch_norm(features) for features in widths]
        self.hidden = eqx.nn.Linear(flat_size, CNN_HIDDEN, key=keys[2])
        self.dropout = eqx.nn.Dropout(CNN_DROPOUT)
        self.output = eqx.nn.Linear(CNN_HIDDEN, num_classes, key=keys[3])

    def __call__(self, x, state, key=None):
        """(C, H, W) -> (num_classes,), one example (vmap over the batch)."""
        for conv_layer, norm in zip(self.convs, self.norms, strict=True):
            x, state = norm(conv_layer(x), state)
            x = eqx.nn.MaxPool2d(2, 2)(jax.nn.relu(x))
        x = jax.nn.relu(self.hidden(x.reshape(-1)))
        return self.output(self.dropout(x, key=key)), state


class Block(eqx.Module):
    spec: BlockSpec = eqx.field(static=True)
    convs: list[eqx.nn.Conv2d]
    norms: list[eqx.nn.BatchNorm]
    projection: tuple[eqx.nn.Conv2d, eqx.nn.BatchNorm] | None

    def __init__(self, spec: BlockSpec, key):
        keys = jax.random.split(key, len(spec.convs) + 1)
        self.spec, channels, self.convs, self.norms = spec, spec.in_channels, [], []
        for conv_spec, conv_key in zip(spec.convs, keys, strict=False):
            self.convs.append(conv(channels, *conv_spec, conv_key))
            self.norms.append(batch_norm(conv_spec.features))
            channels = conv_spec.features
        self.projection = None
        if spec.shortcut == "B":
            projection = conv(spec.in_channels, spec.out_channels, 1, spec.stride, 0, keys[-1])
            self.projection = (projection, batch_norm(spec.out_channels))

    def __call__(self, x, state):
        y = x
        for index, (conv_layer, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y, state = norm(conv_layer(y), state)
            y = jax.nn.relu(y) if index < len(self.convs) - 1 else y
        stride, features = self.spec.stride, self.spec.out_channels
        if self.spec.shortcut == "A":
            x = x[:, ::stride, ::stride]
            x = jnp.pad(x, ((0, features - x.shape[0]), (0, 0), (0, 0)))
        elif self.projection is not None:
            x, state = self.projection[1](self.projection[0](x), state)
        return jax.nn.relu(y + x), state


class ResNet(eqx.Module):
    stem: eqx.nn.Conv2d
    stem_norm: eqx.nn.BatchNorm
    pool: eqx.nn.MaxPool2d | None
    blocks: list[Block]
    head: eqx.nn.Linear

    def __init__(self, config: ResNetConfig, in_channels: int, num_classes: int, key):
        specs = [spec for stage in block_specs(config) for spec in stage]
        keys = jax.random.split(key, len(specs) + 2)
        kernel, stride, padding = (3, 1, 1) if config.cifar else (7, 2, 3)
        self.stem = conv(in_channels, config.stem_width, kernel, stride, padding, keys[0])
        self.stem_norm = batch_norm(config.stem_width)
        self.pool = None if config.cifar else eqx.nn.MaxPool2d(3, 2, padding=1)
        self.blocks = [Block(spec, block_key) for spec, block_key in zip(specs, keys[2:], strict=True)]
        self.head = eqx.nn.Linear(config.out_channels, num_classes, key=keys[1])

    def __call__(self, x, state, key=None):
        """(C, H, W) -> (num_classes,), one example (vmap over the batch)."""
        x, state = self.stem_norm(self.stem(x), state)
        x = jax.nn.relu(x)
        if self.pool is not None:
            x = self.pool(x)
        for block in self.blocks:
            x, state = block(x, state)
        return self.head(x.mean((1, 2))), state


def batched(model, x, state, key=None):
    """The model over a (N, C, H, W) batch, BatchNorm statistics over ``BATCH_AXIS``."""
    keys = None if key is None else jax.random.split(key, x.shape[0])
    in_axes = (0, None, None if keys is None else 0)
    return jax.vmap(model, axis_name=BATCH_AXIS, in_axes=in_axes, out_axes=(0, None))(x, state, keys)


def make_train_step(optimizer):
    @eqx.filter_jit
    def train_step(carry, images, labels):
        model, state, opt_state, key = carry
        key, dropout_key = jax.random.split(key)

        def loss_fn(model, state):
            logits, state = batched(model, images, state, dropout_key)
            return cross_entropy(logits, labels), state

        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, state)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return (eqx.apply_updates(model, updates), state, opt_state, key), loss

    return train_step


@eqx.filter_jit
def predict(model, state, images):
    return batched(model, images, state)[0]


def build(workload: Workload) -> Contestant:
    height, width, channels = workload.image_shape
    if workload.resnet is None:
        flat_size = (height // 4) * (width // 4) * 2 * CNN_WIDTH
        model, state = eqx.nn.make_with_state(SmallCNN)(
            channels, flat_size, workload.num_classes, jax.random.key(0)
        )
    else:
        model, state = eqx.nn.make_with_state(ResNet)(
            workload.resnet, channels, workload.num_classes, jax.random.key(0)
        )
    optimizer = sgd()
    images, labels, infer_images = batches(workload, channels_first=True)
    train_step = make_train_step(optimizer)
    carry = (model, state, optimizer.init(eqx.filter(model, eqx.is_array)), jax.random.key(1))
    step, current = carried(train_step, carry, images, labels)
    inference_model = [None, None]  # the trained model in inference mode, rebuilt when it changes

    def infer():
        model, state, *_ = current()
        if inference_model[0] is not model:
            inference_model[:] = [model, eqx.nn.inference_mode(model)]
        return predict(inference_model[1], state, infer_images)

    def peak_memory():
        return xla_memory(train_step.lower(current(), images, labels).lowered)  # eqx wraps jax's Lowered

    params = count(eqx.filter(model, eqx.is_inexact_array))
    return Contestant(
        params, step, infer, peak_memory, eqx.__version__, "per-example (C, H, W) modules under vmap"
    )
