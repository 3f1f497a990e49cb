"""jax.example_libraries.stax: (init, apply) pairs, composed with serial / parallel / FanOut.

stax has no bias-free convolution and no zero-padding shortcut, so they are written here as
stax layers (an ``(init_fun, apply_fun)`` pair each), as a stax user would. stax's BatchNorm
keeps no running statistics: it normalises with the batch's in inference too; its Dropout
takes the keep probability.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from harness import Contestant, xla_memory
from jax import lax
from jax.example_libraries import stax
from jax.nn.initializers import he_normal
from jax_common import batches, carried, count, cross_entropy, sgd
from workloads import (
    BN_EPS,
    CNN_DROPOUT,
    CNN_HIDDEN,
    CNN_WIDTH,
    BlockSpec,
    ResNetConfig,
    Workload,
    block_specs,
)


def Conv(features: int, kernel_size: int, stride: int = 1, padding: int = 0):
    """A bias-free NHWC convolution (stax.Conv always has a bias)."""
    window, pads = (kernel_size, kernel_size), ((padding, padding),) * 2
    numbers = ("NHWC", "HWIO", "NHWC")

    def init_fun(rng, input_shape):
        n, h, w, channels = input_shape
        kernel_shape = (*window, channels, features)
        h, w = ((size + 2 * padding - kernel_size) // stride + 1 for size in (h, w))
        return (n, h, w, features), he_normal()(rng, kernel_shape)

    def apply_fun(params, inputs, **kwargs):
        return lax.conv_general_dilated(inputs, params, (stride, stride), pads, dimension_numbers=numbers)

    return init_fun, apply_fun


def Lambda(function, output_shape):
    """A parameter-free layer ``function(x)`` with ``output_shape(input_shape)``."""
    return (lambda rng, input_shape: (output_shape(input_shape), ())), (lambda params, x, **kw: function(x))


def ZeroPadShortcut(features: int, stride: int):
    """Option A: keep every ``stride``-th position, zero-pad the new channels."""

    def function(x):
        x = x[:, ::stride, ::stride, :]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))

    def shape(input_shape):
        n, h, w, _ = input_shape
        return (n, -(-h // stride), -(-w // stride), features)

    return Lambda(function, shape)


GlobalAvgPool = Lambda(lambda x: x.mean((1, 2)), lambda shape: (shape[0], shape[-1]))
BatchNorm = stax.BatchNorm(axis=(0, 1, 2), epsilon=BN_EPS)


def small_cnn(num_classes: int, mode: str):
    def stage(features):
        return [Conv(features, 3, padding=1), BatchNorm, stax.Relu, stax.MaxPool((2, 2), strides=(2, 2))]

    return stax.serial(
        *stage(CNN_WIDTH),
        *stage(2 * CNN_WIDTH),
        stax.Flatten,
        stax.Dense(CNN_HIDDEN),
        stax.Relu,
        stax.Dropout(1 - CNN_DROPOUT, mode),
        stax.Dense(num_classes),
    )


def block(spec: BlockSpec):
    layers = []
    for index, conv in enumerate(spec.convs):
        layers += [Conv(*conv), BatchNorm] + ([stax.Relu] if index < len(spec.convs) - 1 else [])
    if spec.shortcut is None:
        shortcut = stax.Identity
    elif spec.shortcut == "A":
        shortcut = ZeroPadShortcut(spec.out_channels, spec.stride)
    else:
        shortcut = stax.serial(Conv(spec.out_channels, 1, spec.stride), BatchNorm)
    return stax.serial(
        stax.FanOut(2), stax.parallel(stax.serial(*layers), shortcut), stax.FanInSum, stax.Relu
    )


def resnet(config: ResNetConfig, num_classes: int):
    if config.cifar:
        stem = [Conv(config.stem_width, 3, padding=1), BatchNorm, stax.Relu]
    else:
        pool = stax.MaxPool(
            (3, 3), strides=(2, 2), padding="SAME"
        )  # stax takes no explicit pads; same shapes
        stem = [Conv(config.stem_width, 7, 2, 3), BatchNorm, stax.Relu, pool]
    blocks = [block(spec) for stage in block_specs(config) for spec in stage]
    return stax.serial(*stem, *blocks, GlobalAvgPool, stax.Dense(num_classes))


def build(workload: Workload) -> Contestant:
    def net(mode):
        if workload.resnet is None:
            return small_cnn(workload.num_classes, mode)
        return resnet(workload.resnet, workload.num_classes)

    init, apply = net("train")
    _, predict_apply = net("test")
    _, params = init(jax.random.key(0), (-1, *workload.image_shape))
    optimizer = sgd()
    images, labels, infer_images = batches(workload)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry, images, labels):
        params, opt_state, key = carry
        key, dropout_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(apply(p, images, rng=dropout_key), labels))(
            params
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), loss

    carry = (params, optimizer.init(params), jax.random.key(1))
    train_step, current = carried(step, carry, images, labels)
    predict = jax.jit(predict_apply)
    unused_key = jax.random.key(2)  # stax's Dropout wants a key even in test mode

    def infer():
        return predict(current()[0], infer_images, rng=unused_key)

    def peak_memory():
        return xla_memory(step.lower(current(), images, labels))

    return Contestant(
        count(params), train_step, infer, peak_memory, jax.__version__, "BatchNorm without running statistics"
    )
