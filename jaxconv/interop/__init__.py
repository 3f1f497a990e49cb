"""Weights from other frameworks: `from_torchvision` loads a torchvision ``state_dict``.

>>> from jaxconv import interop
>>> "resnet50" in interop.names()
True
"""

from jaxconv.interop.torchvision import from_torchvision, model, names

__all__ = ["from_torchvision", "model", "names"]
