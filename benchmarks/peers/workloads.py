"""The workloads every peer builds: architectures as plain tables, synthetic data, the optimiser.

Each framework module reads these and builds the same network its own idiomatic way; the
parameter counts printed by ``run.py`` prove the architectures are the same.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import numpy as np

LEARNING_RATE = 0.01
MOMENTUM = 0.9  # SGD with momentum, no weight decay, in every framework
BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch (PyTorch: momentum=0.1)
BN_EPS = 1e-5

# The small CNN: jaxconv's default model (jaxconv/models/small.py), 421,738 parameters
# on (N, 28, 28, 1): [CONV 3x3 -> BN -> RELU -> POOL 2]*2 -> FC 128 -> RELU -> DROPOUT -> FC 10.
CNN_WIDTH, CNN_HIDDEN, CNN_DROPOUT = 32, 128, 0.3


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """A residual network as a table: ``depths[i]`` blocks of ``kind`` at width ``widths[i]``.

    ``cifar``: a 3x3 stem conv (He et al.'s CIFAR nets); otherwise a 7x7/2 conv and a 3x3/2
    max pool. ``shortcut``: 'A' (subsample and zero-pad the new channels) or 'B' (1x1 conv + BN)
    where the shape changes. A bottleneck strides its 3x3 conv (torchvision's v1.5).
    """

    kind: Literal["basic", "bottleneck"]
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    cifar: bool
    shortcut: Literal["A", "B"]

    @property
    def stem_width(self) -> int:
        return self.widths[0]

    @property
    def out_channels(self) -> int:
        return self.widths[-1] * (4 if self.kind == "bottleneck" else 1)


class ConvSpec(NamedTuple):
    """One convolution of a block; each is followed by BatchNorm (and ReLU but the last)."""

    features: int
    kernel_size: int
    stride: int
    padding: int


class BlockSpec(NamedTuple):
    """One residual block: its convolutions, and its shortcut ('A', 'B' or None for identity)."""

    in_channels: int
    convs: tuple[ConvSpec, ...]
    shortcut: str | None

    @property
    def out_channels(self) -> int:
        return self.convs[-1].features

    @property
    def stride(self) -> int:
        return max(conv.stride for conv in self.convs)


def block_specs(config: ResNetConfig) -> list[list[BlockSpec]]:
    """The blocks of each stage; stages after the first downsample by 2 in their first block."""
    channels, stages = config.stem_width, []
    for stage, (count, width) in enumerate(zip(config.depths, config.widths, strict=True)):
        blocks = []
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            if config.kind == "basic":
                convs = (ConvSpec(width, 3, stride, 1), ConvSpec(width, 3, 1, 1))
            else:
                convs = (
                    ConvSpec(width, 1, 1, 0),
                    ConvSpec(width, 3, stride, 1),
                    ConvSpec(4 * width, 1, 1, 0),
                )
            changes = stride != 1 or channels != convs[-1].features
            blocks.append(BlockSpec(channels, convs, config.shortcut if changes else None))
            channels = convs[-1].features
        stages.append(blocks)
    return stages


RESNET20 = ResNetConfig("basic", (3, 3, 3), (16, 32, 64), cifar=True, shortcut="A")
RESNET50 = ResNetConfig("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), cifar=False, shortcut="B")


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one measurement runs: a net on (N, H, W, C) images, training and inference batches."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    train_batch: int
    infer_batch: int
    num_classes: int
    resnet: ResNetConfig | None  # None: the small CNN
    steps: int  # steps per timed block, by default

    def sized(self, resolution: int | None = None, batch: int | None = None) -> Workload:
        """This workload at another square ``resolution`` and/or one ``batch`` for both passes."""
        height, width, channels = self.image_shape
        shape = (resolution, resolution, channels) if resolution else (height, width, channels)
        return dataclasses.replace(
            self,
            image_shape=shape,
            train_batch=batch or self.train_batch,
            infer_batch=batch or self.infer_batch,
        )


WORKLOADS = {
    "small_cnn": Workload("small_cnn", (28, 28, 1), 128, 128, 10, None, steps=10),
    "resnet20": Workload("resnet20", (32, 32, 3), 128, 256, 10, RESNET20, steps=3),
    "resnet50": Workload("resnet50", (224, 224, 3), 16, 16, 1000, RESNET50, steps=2),
}
CPU_RESOLUTION = {"resnet50": 64}  # ResNet-50 at 224 is an accelerator's workload


def synthetic_batch(workload: Workload, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random float32 images (N, H, W, C) and int32 labels (N,)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, *workload.image_shape), dtype=np.float32)
    labels = rng.integers(0, workload.num_classes, batch_size, dtype=np.int32)
    return images, labels
