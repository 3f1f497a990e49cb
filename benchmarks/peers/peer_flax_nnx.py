"""Flax NNX: stateful ``nnx.Module`` objects, ``nnx.Optimizer`` and ``nnx.jit``."""

from __future__ import annotations

import functools

import flax
import jax.numpy as jnp
from flax import nnx
from harness import Contestant, xla_memory
from jax_common import batches, count, cross_entropy, sgd
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

BatchNorm = functools.partial(nnx.BatchNorm, momentum=BN_MOMENTUM, epsilon=BN_EPS)


def conv(in_channels: int, features: int, kernel: int, stride: int, padding: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(
        in_channels, features, (kernel, kernel), stride, padding=padding, use_bias=False, rngs=rngs
    )


class SmallCNN(nnx.Module):
    def __init__(self, in_channels: int, flat_size: int, num_classes: int, rngs: nnx.Rngs):
        self.conv1 = conv(in_channels, CNN_WIDTH, 3, 1, 1, rngs)
        self.norm1 = BatchNorm(CNN_WIDTH, rngs=rngs)
        self.conv2 = conv(CNN_WIDTH, 2 * CNN_WIDTH, 3, 1, 1, rngs)
        self.norm2 = BatchNorm(2 * CNN_WIDTH, rngs=rngs)
        self.hidden = nnx.Linear(flat_size, CNN_HIDDEN, rngs=rngs)
        self.dropout = nnx.Dropout(CNN_DROPOUT, rngs=rngs)
        self.output = nnx.Linear(CNN_HIDDEN, num_classes, rngs=rngs)

    def __call__(self, x):
        for conv_layer, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            x = nnx.max_pool(nnx.relu(norm(conv_layer(x))), (2, 2), strides=(2, 2))
        x = self.dropout(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))
        return self.output(x)


class Block(nnx.Module):
    def __init__(self, spec: BlockSpec, rngs: nnx.Rngs):
        self.spec = spec
        channels, self.convs, self.norms = spec.in_channels, nnx.List(), nnx.List()
        for features, kernel, stride, padding in spec.convs:
            self.convs.append(conv(channels, features, kernel, stride, padding, rngs))
            self.norms.append(BatchNorm(features, rngs=rngs))
            channels = features
        if spec.shortcut == "B":
            self.projection = conv(spec.in_channels, spec.out_channels, 1, spec.stride, 0, rngs)
            self.projection_norm = BatchNorm(spec.out_channels, rngs=rngs)

    def __call__(self, x):
        y = x
        for index, (conv_layer, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = norm(conv_layer(y))
            y = nnx.relu(y) if index < len(self.convs) - 1 else y
        stride, features = self.spec.stride, self.spec.out_channels
        if self.spec.shortcut == "A":
            x = x[:, ::stride, ::stride, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))
        elif self.spec.shortcut == "B":
            x = self.projection_norm(self.projection(x))
        return nnx.relu(y + x)


class ResNet(nnx.Module):
    def __init__(self, config: ResNetConfig, in_channels: int, num_classes: int, rngs: nnx.Rngs):
        self.cifar = config.cifar
        kernel, stride, padding = (3, 1, 1) if config.cifar else (7, 2, 3)
        self.stem = conv(in_channels, config.stem_width, kernel, stride, padding, rngs)
        self.stem_norm = BatchNorm(config.stem_width, rngs=rngs)
        self.blocks = nnx.List([Block(spec, rngs) for stage in block_specs(config) for spec in stage])
        self.head = nnx.Linear(config.out_channels, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_norm(self.stem(x)))
        if not self.cifar:
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((1, 2)))


@nnx.jit
def train_step(model, optimizer, images, labels):
    def loss_fn(model):
        return cross_entropy(model(images), labels)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, images):
    return model(images)


def build(workload: Workload) -> Contestant:
    height, width, channels = workload.image_shape
    rngs = nnx.Rngs(0, dropout=1)
    if workload.resnet is None:
        flat_size = (height // 4) * (width // 4) * 2 * CNN_WIDTH
        model = SmallCNN(channels, flat_size, workload.num_classes, rngs)
    else:
        model = ResNet(workload.resnet, channels, workload.num_classes, rngs)
    optimizer = nnx.Optimizer(model, sgd(), wrt=nnx.Param)
    images, labels, infer_images = batches(workload)
    training = [True]

    def set_training(mode: bool) -> None:  # switch modes only between blocks, as a training loop would
        if training[0] != mode:
            model.train() if mode else model.eval()
            training[0] = mode

    def step():
        set_training(True)
        return train_step(model, optimizer, images, labels)

    def infer():
        set_training(False)
        return predict(model, infer_images)

    parameters = count(nnx.state(model, nnx.Param))
    return Contestant(
        parameters,
        step,
        infer,
        lambda: xla_memory(train_step.lower(model, optimizer, images, labels)),
        flax.__version__,
    )
