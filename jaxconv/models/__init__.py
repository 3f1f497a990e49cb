"""The model zoo: the ConvNet canon as compositions of jaxconv layers.

>>> import jax
>>> from jaxconv import models
>>> net = models.get("resnet18", num_classes=10)
>>> shape, params, state = net.init(jax.random.key(0), models.input_shape("resnet18"))
>>> shape
(-1, 10)

Every family lives in its own module (`lenet`, `alexnet` with ZFNet, `vgg`,
`nin` with All-CNN-C, `googlenet`, `inception`, `resnet`, `densenet`,
`fractalnet`, `squeezenet`, `mobilenet`, and `small`: the default ``convnet`` and
``dp_cnn``) and registers its architectures by name in the one `registry`. Names without
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
    registry,
    resnet,
    small,
    squeezenet,
    vgg,
)
from jaxconv.models.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    count_model_params,
    get,
    input_shape,
    names,
    param_counts,
    register,
    spec,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "alexnet",
    "count_model_params",
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
    "param_counts",
    "register",
    "registry",
    "resnet",
    "small",
    "spec",
    "squeezenet",
    "vgg",
]
