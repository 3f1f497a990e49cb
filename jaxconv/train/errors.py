"""The errors `jaxconv.train` raises.

User mistakes (a bad option, an unusable run directory, a corrupt checkpoint)
are `ValueError`s, like the rest of jaxconv's, and are raised before any
training step runs. A loss that stops being finite mid-run is a
`FloatingPointError`.
"""


class ConfigError(ValueError):
    """A training option is out of range or unknown (a negative learning rate, a batch
    larger than the dataset, an unknown model or dataset name)."""


class RunDirError(ValueError):
    """The run directory cannot be used: not writable, already holding another run, or
    (to resume) missing its configuration or checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, corrupt, or does not fit the model."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
