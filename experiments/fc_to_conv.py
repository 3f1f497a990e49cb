"""FC -> CONV: the converted net's score map against 36 crop evaluations, and the speed ratio.

The CS231n notes: converting a net's FC layers to convolutions lets it slide over a
larger image in one pass, "evaluating the original ConvNet at 36 locations" of a
384x384 image (224x224 crops at stride 32) while "sharing computation", the same
scores as 36 separate passes. Measured with `jc.analysis.surgery.fc_to_conv` and
`jc.analysis.surgery.crop_scores`:

- a net without zero padding (VGG-16's five stages of 3x3 convs and 2x2 pools, one
  conv per stage, no padding; 222x222 crops of a 382x382 image): the map equals the
  crops up to float rounding;
- VGG-16's layout with padding 1 (`benchmarks/fc_to_conv.py`): padded crops see zeros
  at their borders where the converted net sees neighbouring pixels, so the map
  differs from the crops, and the table says by how much;
- the time of 36 crop passes against one converted pass (medians of interleaved repeats).

    python experiments/fc_to_conv.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import dataclasses

import common
import jax
import jax.numpy as jnp

import jaxconv as jc
from jaxconv.analysis import surgery

benchmark = common.load_benchmark("fc_to_conv")  # vgg16_layout, random_params, median_seconds


@dataclasses.dataclass(frozen=True)
class Scale:
    """VGG-16's widths divided by ``divisor``; ``repeats`` timed rounds."""

    name: str
    divisor: int
    repeats: int

    def describe(self) -> str:
        return f"VGG-16 widths / {self.divisor}, median of {self.repeats} timed rounds, batch 1"


SMOKE, DEFAULT, FULL = Scale("smoke", 16, 1), Scale("default", 4, 5), Scale("full", 1, 7)
MAP = 6  # a 6x6 map: 36 crops, 32 pixels apart


def unpadded_layout(divisor: int, num_classes: int = 1000) -> jc.Layer:
    """[CONV 3x3 (no padding) -> RELU -> POOL]*5 -> FC -> RELU -> FC -> RELU -> FC: (N, 222, 222, 3) -> (N, K)."""
    layers = [  # 222 -> 110 -> 54 -> 26 -> 12 -> 5
        layer
        for width, _ in benchmark.VGG16
        for layer in (jc.Conv(width // divisor, 3), jc.Relu, jc.MaxPool(2))
    ]
    fc = 4096 // divisor
    return jc.serial(*layers, jc.Flatten, jc.Dense(fc), jc.Relu, jc.Dense(fc), jc.Relu, jc.Dense(num_classes))


def compare(name: str, net: jc.Layer, crop: int, repeats: int) -> dict:
    """Score a (1, crop + 160, crop + 160, 3) image by 36 crops and by the converted net."""
    params = benchmark.random_params(net, (-1, crop, crop, 3))
    conv_net, conv_params = surgery.fc_to_conv(net, params, (-1, crop, crop, 3))
    size = crop + 32 * (MAP - 1)
    image = jax.random.normal(jax.random.key(1), (1, size, size, 3))
    by_crops = jax.jit(lambda p, x: surgery.crop_scores(net, p, {}, x, (crop, crop), stride=32))
    by_map = jax.jit(lambda p, x: conv_net.apply(p, {}, x)[0])
    with jax.default_matmul_precision("highest"):
        crops, scores = by_crops(params, image), by_map(conv_params, image)
        seconds = benchmark.median_seconds(
            {"crops": lambda: by_crops(params, image), "converted": lambda: by_map(conv_params, image)},
            repeats,
        )
    return {
        "net": name,
        "image": f"{size}x{size}",
        "crop": f"{crop}x{crop}",
        "map": "x".join(map(str, scores.shape[1:3])),
        "max_relative_difference": float(jnp.max(jnp.abs(crops - scores)) / jnp.max(jnp.abs(crops))),
        "crops_ms": seconds["crops"] * 1e3,
        "converted_ms": seconds["converted"] * 1e3,
        "speedup": seconds["crops"] / seconds["converted"],
    }


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL, SMOKE)
    divisor = args.budget.divisor
    rows = [
        compare("no zero padding", unpadded_layout(divisor), 222, args.budget.repeats),
        compare("VGG-16 layout, padding 1", benchmark.vgg16_layout(divisor), 224, args.budget.repeats),
    ]
    common.finish("fc_to_conv", args, rows, device=jax.devices()[0].device_kind)


if __name__ == "__main__":
    main()
