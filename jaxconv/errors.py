"""The errors jaxconv raises for user mistakes.

Every one is a `ValueError`, so `except ValueError` still catches them; the
subclasses let a caller (or a test) tell the kind of mistake apart. Messages
name the layer, put the numbers into the rule that failed and offer a fix.
"""


class ShapeError(ValueError):
    """An input or intermediate volume has the wrong rank or size for a layer."""


class SizeError(ShapeError):
    """A filter, stride and padding do not tile the input (the notes' sizing rule)."""


class MissingKeyError(ValueError):
    """A layer needs a `jax.random` key (Dropout in training mode) and got none."""


class StateDictError(ValueError):
    """Weights to import (a torchvision ``state_dict``) do not fit the architecture: a tensor is
    missing, unexpected or has the wrong shape."""
