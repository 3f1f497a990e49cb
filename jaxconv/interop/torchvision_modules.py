"""torchvision's module names for each architecture it shares with jaxconv's zoo, in the order
jaxconv's network runs its Conv, Dense and BatchNorm layers: the i-th such layer takes the tensors
of the i-th module (`jaxconv.interop.torchvision.from_torchvision`).

>>> list(TORCHVISION["alexnet"].module_names({}))[:2]
['features.0', 'features.3']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from jaxconv.models import densenet, googlenet, inception, mobilenet, squeezenet, vgg


def _basic_conv(prefix: str) -> list[str]:
    """torchvision's BasicConv2d (GoogLeNet, Inception v3): a conv and its BatchNorm."""
    return [f"{prefix}.conv", f"{prefix}.bn"]


def _resnet(options: dict) -> Iterator[str]:
    convs = 2 if options["kind"] == "basic" else 3
    yield from ("conv1", "bn1")
    for stage, count in enumerate(options["depths"], 1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            for index in range(1, convs + 1):
                yield from (f"{prefix}.conv{index}", f"{prefix}.bn{index}")
            if block == 0 and (stage > 1 or options["kind"] == "bottleneck"):
                yield from (f"{prefix}.downsample.0", f"{prefix}.downsample.1")
    yield "fc"


def _vgg(options: dict) -> Iterator[str]:
    per_conv = 3 if options.get("batch_norm") else 2  # conv, [bn,] relu
    index = 0
    for stage in vgg.CONFIGS[options["config"]]:
        for _ in stage:
            yield from (f"features.{index + offset}" for offset in range(per_conv - 1))
            index += per_conv
        index += 1  # the max pool
    yield from ("classifier.0", "classifier.3", "classifier.6")


def _alexnet(options: dict) -> Iterator[str]:
    yield from (f"features.{index}" for index in (0, 3, 6, 8, 10))
    yield from (f"classifier.{index}" for index in (1, 4, 6))


def _googlenet(options: dict) -> Iterator[str]:
    for stem in ("conv1", "conv2", "conv3"):
        yield from _basic_conv(stem)
    for name in googlenet.GOOGLENET:  # branch1 is one conv; branch4 a max pool, then a conv
        for branch in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1"):
            yield from _basic_conv(f"{name}.{branch}")
    yield "fc"
    for aux in ("aux1", "aux2") if options.get("aux_logits") else ():
        yield from (*_basic_conv(f"{aux}.conv"), f"{aux}.fc1", f"{aux}.fc2")


def _inception_v3(options: dict) -> Iterator[str]:
    for stem in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"):
        yield from _basic_conv(stem)
    for mixed, branches in inception.MIXED.items():
        for branch, steps in branches.items():
            convs = [step for step in steps if step[0] not in ("max", "avg")]
            for index, step in enumerate(convs, 1):  # one conv keeps the branch's name
                name = f"{mixed}.{branch}" + (f"_{index}" if len(convs) > 1 or step[0] == "split" else "")
                for part in ("a", "b") if step[0] == "split" else ("",):
                    yield from _basic_conv(name + part)
    yield "fc"
    if options.get("aux_logits"):
        yield from (*_basic_conv("AuxLogits.conv0"), *_basic_conv("AuxLogits.conv1"), "AuxLogits.fc")


def _densenet(options: dict) -> Iterator[str]:
    yield from ("features.conv0", "features.norm0")
    blocks = options["block_sizes"]
    for block, size in enumerate(blocks, 1):
        for layer in range(1, size + 1):
            prefix = f"features.denseblock{block}.denselayer{layer}"
            yield from (f"{prefix}.{part}" for part in ("norm1", "conv1", "norm2", "conv2"))
        if block < len(blocks):
            yield from (f"features.transition{block}.norm", f"features.transition{block}.conv")
    yield from (f"features.norm{len(blocks) + 1}", "classifier")


def _squeezenet(options: dict) -> Iterator[str]:
    yield "features.0"  # then its ReLU at 1
    for index, row in enumerate(squeezenet.VERSIONS[options["version"]][2], 2):
        if row != "pool":
            yield from (f"features.{index}.{part}" for part in ("squeeze", "expand1x1", "expand3x3"))
    yield "classifier.1"


def _mobilenet_v2(options: dict) -> Iterator[str]:
    yield from ("features.0.0", "features.0.1")
    index = 1
    for expansion, _, repeats, _ in mobilenet.MOBILENET_V2:
        for _ in range(repeats):
            prefix, unit = f"features.{index}.conv", 0
            if expansion != 1:  # the 1x1 expansion, a conv-norm-ReLU6 unit
                yield from (f"{prefix}.0.0", f"{prefix}.0.1")
                unit = 1
            yield from (
                f"{prefix}.{unit}.0",
                f"{prefix}.{unit}.1",
                f"{prefix}.{unit + 1}",
                f"{prefix}.{unit + 2}",
            )
            index += 1
    yield from (f"features.{index}.0", f"features.{index}.1", "classifier.1")


@dataclasses.dataclass(frozen=True)
class Entry:
    """The zoo's builder for a torchvision name, and the generator of its module names from the
    builder's options."""

    zoo_name: str
    module_names: Callable[[dict], Iterator[str]]


def _table() -> dict[str, Entry]:
    """torchvision's name -> the zoo's builder (the ``_tv`` variant where the paper's differs) and names."""
    table = {
        "alexnet": Entry("alexnet_tv", _alexnet),
        "googlenet": Entry("googlenet_tv", _googlenet),
        "inception_v3": Entry("inception_v3", _inception_v3),
        "mobilenet_v2": Entry("mobilenet_v2", _mobilenet_v2),
    }
    for depth in (11, 13, 16, 19):
        table[f"vgg{depth}"] = Entry(f"vgg{depth}", _vgg)
        table[f"vgg{depth}_bn"] = Entry(f"vgg{depth}_bn", _vgg)
    for depth in (18, 34, 50, 101, 152):
        table[f"resnet{depth}"] = Entry(f"resnet{depth}_tv", _resnet)
    for name in (
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ):
        table[name] = Entry(name, _resnet)
    for depth in densenet.IMAGENET:
        if depth != 264:  # torchvision has no DenseNet-264
            table[f"densenet{depth}"] = Entry(f"densenet{depth}", _densenet)
    for version in squeezenet.VERSIONS:
        table[f"squeezenet{version}"] = Entry(f"squeezenet{version}", _squeezenet)
    return table


TORCHVISION: dict[str, Entry] = _table()


__all__ = ["TORCHVISION", "Entry"]
