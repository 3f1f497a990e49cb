"""Every error jaxconv raises for a user mistake, in one place.

Each is a `ValueError` (but for the `FloatingPointError` of a diverged run), so
``except ValueError`` catches every mistake; the
subclasses let a caller (or a test) tell the kind of mistake apart. Messages
name the layer, file or option, put the numbers into the rule that failed and
offer a fix.
"""


class ShapeError(ValueError):
    """An input or intermediate volume has the wrong rank or size for a layer."""


class SizeError(ShapeError):
    """A filter, stride and padding do not tile the input (the notes' sizing rule)."""


class LayerPathError(ValueError):
    """A layer path (``"block_1/conv_0"``) that the net does not have, or one whose output does not
    fit the tool asked of it (Grad-CAM needs an (N, H, W, K) map)."""


class MissingKeyError(ValueError):
    """A layer needs a `jax.random` key (Dropout in training mode) and got none."""


class LayerTypeError(ValueError, TypeError):
    """Something that is not a layer where a layer belongs, e.g. the constructor ``Elu`` where
    ``Elu()`` was meant, or a layer called as if it were a constructor (``Relu()``)."""


class StateDictError(ValueError):
    """Weights to import (a torchvision ``state_dict``) do not fit the architecture: a tensor is
    missing, unexpected or has the wrong shape."""


class PatternError(ValueError):
    """A malformed layer pattern; the message shows the pattern with a caret at the fault."""

    def __init__(self, message: str, pattern: str, position: int):
        super().__init__(f"{message}\n  {pattern}\n  {' ' * position}^")
        self.position = position


class DatasetError(ValueError):
    """A dataset file is malformed: wrong magic number, truncated, too long, bad gzip.

    The message names the file and what is wrong with the numbers (expected and found bytes,
    dimensions, label values).
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No searched directory holds the files of the requested dataset split; the message lists
    every directory searched, what each one lacks, and how to get the files. Also a
    `FileNotFoundError`, so ``except OSError`` works as it would for `open`."""


class ConfigError(ValueError):
    """A training option is out of range or unknown (a negative learning rate, a batch larger
    than the dataset, an unknown model or dataset name)."""


class RunDirError(ValueError):
    """The run directory cannot be used: not writable, already holding another run, or (to
    resume) missing its configuration or checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, corrupt, or does not fit the model."""


class DataParallelError(ValueError):
    """The devices, the mesh or the net do not fit a data-parallel step."""


class DivergenceError(FloatingPointError):
    """Training diverged (`jaxconv.runs.divergence`): the loss exploded or the run is stuck at
    chance. The checkpoints of the last good and the best epoch are kept. A `FloatingPointError`,
    not a user mistake caught before training."""


class NonFiniteLossError(DivergenceError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DiskFullError(RunDirError, OSError):
    """A run's file could not be written for lack of space (or over a file-size limit); the
    previous checkpoint is kept. Also an `OSError`."""
