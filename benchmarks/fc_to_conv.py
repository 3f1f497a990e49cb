"""FC -> CONV: one pass of the converted net over a 384x384 image against 36 crops of the original.

The net is VGG-16's layout (13 3x3 convs in 5 stages, 2x2 max pools, three FC
layers; total stride 32) with every width divided by ``--width-divisor`` (default
4: 16-32-64-128-128 channels and FC 1024, a 16th of VGG-16's compute; 1 gives VGG-16
itself). The original net scores the 36 crops of 224x224 at stride 32 in one
batched, jitted pass (`jc.analysis.surgery.crop_scores`); the converted net
(`jc.analysis.surgery.fc_to_conv`) scores the whole image in one jitted pass, giving the
same 6x6 map up to the effect of zero padding at the crops' borders (printed).
Timings are medians of interleaved repeats on the same inputs.

    python benchmarks/fc_to_conv.py [--width-divisor 4] [--repeats 7] [--batch-size 1]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds  # benchmarks/ is on the path when run as a script

import jaxconv as jc
from jaxconv.analysis import surgery

VGG16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_layout(divisor: int, num_classes: int = 1000) -> jc.Layer:
    """VGG-16 with every width divided by ``divisor``, (N, 224, 224, 3) -> (N, num_classes)."""
    layers = []
    for width, convs in VGG16:
        layers += [jc.Conv(width // divisor, 3, padding=1), jc.Relu] * convs + [jc.MaxPool(2)]
    fc = 4096 // divisor
    return jc.serial(*layers, jc.Flatten, jc.Dense(fc), jc.Relu, jc.Dense(fc), jc.Relu, jc.Dense(num_classes))


def random_params(net: jc.Layer, shape: tuple[int, ...], seed: int = 0):
    """He-normal weights drawn with NumPy at the shapes init gives (no eager init ops)."""
    abstract = jax.eval_shape(lambda key: net.init(key, shape)[1], jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in), leaf.dtype)

    return jax.tree_util.tree_map(draw, abstract)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-divisor", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    net = vgg16_layout(args.width_divisor)
    params = random_params(net, (-1, 224, 224, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, 224, 224, 3))
    image = jax.random.normal(jax.random.key(1), (args.batch_size, 384, 384, 3))

    crops = jax.jit(lambda p, x: surgery.crop_scores(net, p, {}, x, (224, 224), stride=32))
    converted = jax.jit(lambda p, x: conv_net.apply(p, {}, x)[0])
    seconds = median_seconds(
        {"36 crops": lambda: crops(params, image), "converted": lambda: converted(conv_params, image)},
        args.repeats,
    )
    by_crop, by_map = crops(params, image), converted(conv_params, image)
    difference = float(jnp.max(jnp.abs(by_crop - by_map)) / jnp.max(jnp.abs(by_crop)))
    macs = jc.summary(net, (-1, 224, 224, 3)).macs
    print(f"VGG-16 layout, widths / {args.width_divisor} ({macs / 1e9:.2f} G multiply-adds per 224x224 crop)")
    print(f"device {jax.devices()[0].device_kind}, batch {args.batch_size}, median of {args.repeats}")
    print(
        f"score map {by_map.shape[1:3]}; max |crops - converted| / max |crops| = {difference:.3g} (zero padding)"
    )
    print(f"36 crop passes at 224: {seconds['36 crops'] * 1e3:.1f} ms")
    print(f"one converted pass at 384: {seconds['converted'] * 1e3:.1f} ms")
    print(f"speed-up: {seconds['36 crops'] / seconds['converted']:.2f}x")


if __name__ == "__main__":
    main()
