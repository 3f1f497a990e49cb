"""VGG (Simonyan & Zisserman 2015): configurations A, A-LRN, B, C, D, E, with and without BatchNorm.

Each configuration is the paper's Table 1 column: stages of 3x3 (or, in C,
1x1) convolutions with padding 1, each stage closed by a 2x2 stride-2 max
pool, then FC-4096, FC-4096, FC-classes. An adaptive average pool to 7x7
before the FC layers (the identity at 224x224) lets other input sizes through,
as in torchvision, whose ``vggNN`` and ``vggNN_bn`` have exactly these
parameters (BatchNorm adds a scale and a bias per channel after every conv, whose bias
stays as in torchvision;
its running statistics are state, not parameters).
"""

from __future__ import annotations

from jaxconv.combinators import serial
from jaxconv.core import Layer, named
from jaxconv.layers import LocalResponseNorm, MaxPool
from jaxconv.models.blocks import conv_norm, fc_classifier
from jaxconv.models.registry import register

# configuration -> stages; an int is a conv3-<int>, ("conv1", n) a conv1-<n>, "LRN" a normalisation
CONFIGS: dict[str, tuple[tuple, ...]] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "A-LRN": ((64, "LRN"), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "C": (
        (64, 64),
        (128, 128),
        (256, 256, ("conv1", 256)),
        (512, 512, ("conv1", 512)),
        (512, 512, ("conv1", 512)),
    ),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _stage(items: tuple, batch_norm: bool) -> Layer:
    layers, count = [], 0
    for item in items:
        if item == "LRN":
            layers.append(LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
            continue
        kernel, features = item if isinstance(item, tuple) else ("conv3", item)
        size = 3 if kernel == "conv3" else 1
        count += 1
        unit = conv_norm(
            features, size, padding=size // 2, norm="batch" if batch_norm else None, use_bias=True
        )
        layers.append(named(f"conv{count}", unit))
    return serial(*layers, MaxPool(2))


def vgg(config: str, num_classes: int = 1000, batch_norm: bool = False, dropout: float = 0.5) -> Layer:
    """VGG configuration ``config`` (``'A'``, ``'A-LRN'``, ``'B'``, ``'C'``, ``'D'``, ``'E'``).

    (N, 224, 224, 3) -> (N, num_classes); any H, W >= 32 work. Params
    ``stage1..5`` / ``convK`` / ``conv`` (and ``norm`` with BatchNorm), then
    ``classifier`` / ``fc1..fc3``.
    """
    if config not in CONFIGS:
        raise ValueError(f"vgg(config={config!r}): choose one of {sorted(CONFIGS)}")
    stages = [named(f"stage{i}", _stage(items, batch_norm)) for i, items in enumerate(CONFIGS[config], 1)]
    return serial(*stages, named("classifier", fc_classifier(num_classes, dropout=dropout, pool_to=7)))


for _name, _config in {
    "vgg11": "A",
    "vgg11_lrn": "A-LRN",
    "vgg13": "B",
    "vgg16_c": "C",
    "vgg16": "D",
    "vgg19": "E",
}.items():
    register(_name, vgg, config=_config)
    if _config != "A-LRN":
        register(f"{_name}_bn", vgg, config=_config, batch_norm=True)
