"""The run directory: what a training run leaves behind.

    run_dir/
      config.json       the full `TrainConfig`
      metrics.jsonl     one JSON object per epoch: losses, top-1/top-5, throughput, time
      checkpoint.npz    the last good train state (`jaxconv.train.checkpoint`)
      results.json      the summary: final and best test accuracy, time, status
      curves.png        loss and accuracy per epoch, train and test
      filters.png       the first convolution's filters (as the notes show for AlexNet)
      confusion.png     the test set's confusion matrix

Every file is written to a temporary name and renamed into place, and
metrics.jsonl is only appended to, so nothing already written is lost. In a
run of several processes (`jaxconv.distributed.initialize`) every process
reads the directory and only process 0, the `is_writer`, writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax

from jaxconv.errors import ConfigError, RunDirError
from jaxconv.train.config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.npz"
RESULTS = "results.json"
CURVES = "curves.png"
FILTERS = "filters.png"
CONFUSION = "confusion.png"


def is_writer() -> bool:
    """Whether this process writes the run directory and shows progress: process 0 of a
    multi-process run, or the only process."""
    return jax.process_index() == 0


class Run:
    """A run directory; `Run.prepare` checks it, `start` writes the configuration."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def prepare(self, *, resume: bool) -> None:
        """Check, before any training, that the directory can be used.

        A new run needs a writable directory (created if missing) without a
        previous run's checkpoint; resuming needs the configuration and the
        checkpoint of a previous run.
        """
        if resume:
            self.require_saved("resume from")
        elif self.checkpoint.exists() or (self.path / CONFIG).exists():
            raise RunDirError(
                f"{self.path} already holds a run; pass --resume to continue it, "
                "or choose another --run-dir (nothing was changed)"
            )
        self._check_writable()

    def require_saved(self, action: str = "use") -> None:
        """Raise `RunDirError` unless the directory holds a configuration and a checkpoint."""
        for name in (CONFIG, CHECKPOINT):
            if not (self.path / name).is_file():
                raise RunDirError(
                    f"cannot {action} {self.path}: it has no {name}; "
                    "give the --run-dir of an earlier run, or start a new run without --resume"
                )

    def start(self, config: TrainConfig) -> None:
        """Write the configuration (a new run)."""
        write_atomic(self.path / CONFIG, config.to_json())

    def config(self) -> TrainConfig:
        """The configuration saved in the directory."""
        path = self.path / CONFIG
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise RunDirError(f"cannot read the configuration {path}: {error}") from error
        try:
            return TrainConfig.from_dict(data)
        except (ConfigError, TypeError) as error:
            raise RunDirError(f"{path}: {error}") from error

    def log(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to metrics.jsonl."""
        with open(self.path / METRICS, "a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def history(self) -> list[dict[str, Any]]:
        """The epoch records, one per epoch (the latest, where a resumed run repeated one)."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        records: dict[int, dict[str, Any]] = {}
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a crash
                record = json.loads(line)
                records[record["epoch"]] = record
        return [records[epoch] for epoch in sorted(records)]

    def write_results(self, results: dict[str, Any]) -> None:
        write_atomic(self.path / RESULTS, json.dumps(results, indent=2) + "\n")

    def _check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise RunDirError(
                f"cannot write to the run directory {self.path} ({error.strerror or error}); "
                "choose another --run-dir"
            ) from error


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
