"""The model zoo: the ConvNet canon as compositions of jaxconv layers.

>>> import jax
>>> from jaxconv import models
>>> net = models.get("resnet18", num_classes=10)
>>> shape, params, state = net.init(jax.random.key(0), models.input_shape("resnet18"))
>>> shape
(-1, 10)

Every family lives in its own module (`lenet`, `alexnet` with ZFNet, `vgg`,
`nin` with All-CNN-C, `googlenet`, `inception`, `resnet`, `densenet`,
`fractalnet`, `squeezenet`, `mobilenet`) and registers its architectures by name. Names without
a suffix are the paper's architecture; a ``_tv`` suffix marks torchvision's
variant where the two differ.
"""

from jaxconv.models import (
    alexnet,
    densenet,
    fractalnet,
    googlenet,
    inception,
    lenet,
    mobilenet,
    nin,
    resnet,
    squeezenet,
    vgg,
)
from jaxconv.models._registry import ModelSpec, get, input_shape, names, spec

__all__ = [
    "ModelSpec",
    "alexnet",
    "densenet",
    "fractalnet",
    "get",
    "googlenet",
    "inception",
    "input_shape",
    "lenet",
    "mobilenet",
    "names",
    "nin",
    "resnet",
    "spec",
    "squeezenet",
    "vgg",
]
