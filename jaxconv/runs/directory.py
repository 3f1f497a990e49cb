"""The run directory: what a training run leaves behind.

    run_dir/
      config.json       the full `TrainConfig`
      metrics.jsonl     one JSON object per epoch: losses, top-1/top-5, throughput, time
      orbax/<step>/     the train states of the last `KEEP_LAST` epochs, Orbax checkpoints
                        (`jaxconv.train.OrbaxStore`), the latest the one a resume continues
      best.npz          the train state of the epoch with the best test accuracy, one portable
                        file written in the background (`save_checkpoint_in_background`, read by
                        `jaxconv.train.load_checkpoint`)
      results.json      the summary: final and best test accuracy, time, status
      curves.png        loss and accuracy per epoch, train and test
      filters.png       the first convolution's filters (as the notes show for AlexNet)
      confusion.png     the test set's confusion matrix
      report.html       all of it on one self-contained page (`jaxconv.runs.write_report`)

`Run.open` is the one place that checks a directory before training and
settles the configuration to train with (a new run's options, or a resumed
run's own); it writes nothing, and the directory is created when training
starts. A run written before the Orbax checkpoints holds ``checkpoint.npz`` (and
``checkpoints/epoch-<e>.npz``) instead; it resumes from that file and saves through
Orbax from then on. Every file is written to a temporary name and renamed into place, and
metrics.jsonl is only appended to, so nothing already written is lost: a crash in the
middle of an append loses only that line, and the next append (or a resume) cuts the torn
line off first. A run stopped before its first checkpoint can be resumed: it starts over
with its saved configuration. In a
run of several processes (`jaxconv.distributed.initialize`) every process
reads the directory and only process 0, the `is_writer`, writes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxconv.core import PyTree
from jaxconv.errors import CheckpointError, ConfigError, RunDirError
from jaxconv.runs.config import TrainConfig
from jaxconv.train import OrbaxStore, complete_steps, load_checkpoint, read_metadata
from jaxconv.train.checkpoint import disk_space, readable_mode, save_checkpoint_in_background

CONFIG = "config.json"
METRICS = "metrics.jsonl"
ORBAX = "orbax"
LEGACY_CHECKPOINT = "checkpoint.npz"  # the last good train state of a run written before `ORBAX`
BEST = "best.npz"
KEEP_LAST = 3
RESULTS = "results.json"
CURVES = "curves.png"
FILTERS = "filters.png"
CONFUSION = "confusion.png"


Options = TrainConfig | Mapping[str, Any] | None  # a config, or the options given by name


def is_writer() -> bool:
    """Whether this process writes the run directory and shows progress: process 0 of a
    multi-process run, or the only process."""
    return jax.process_index() == 0


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<model>-<dataset>-<date>-<time>`` under the current directory."""
    return Path("runs") / f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


class Run:
    """A run directory: `Run.open` checks it for training, `start` writes the configuration,
    `log` and `history` keep the epochs' records. ``Run(path)`` alone reads an existing run."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._store: OrbaxStore | None = None
        self._best_written: Callable[[], Path] = lambda: self.path / BEST  # waits for best.npz

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint a resume continues from: the latest complete ``orbax/<step>``, else an
        older run's checkpoint.npz; None before the first epoch's. Waits for a save in progress."""
        if self._store is not None:
            self._store.wait()
        steps = complete_steps(self.path / ORBAX)
        if steps:
            return self.path / ORBAX / str(steps[-1])
        legacy = self.path / LEGACY_CHECKPOINT
        return legacy if legacy.is_file() else None

    def save(self, train_state: PyTree, metadata: dict[str, Any]) -> None:
        """Start saving ``train_state`` as Orbax step ``metadata["step"]`` (the write goes on in the
        background; `close` waits for it), keeping the last `KEEP_LAST`. Every process calls it."""
        if self._store is None:
            self._store = OrbaxStore(self.path / ORBAX, keep=KEEP_LAST)
        self._store.save(metadata["step"], train_state, metadata)

    def load(self, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """The latest checkpoint (see `checkpoint`) read into ``like``'s structure and placement,
        and its metadata. Every process calls it.

        Raises:
          CheckpointError: there is none, or it is corrupt or does not fit ``like``.
        """
        path = self.checkpoint
        if path is None:
            raise CheckpointError(
                f"{self.path} holds no checkpoint (no {ORBAX}/<step> nor {LEGACY_CHECKPOINT}); "
                "give the --run-dir of a run with a finished epoch, or start a new run"
            )
        if path.suffix == ".npz":
            return load_checkpoint(path, like)
        store = self._store or OrbaxStore(path.parent, writer=False)
        try:
            return store.restore(like, int(path.name))
        finally:
            if store is not self._store:
                store.close()

    def keep_best(self, train_state: PyTree, metadata: dict[str, Any]) -> None:
        """Start writing ``train_state`` as best.npz in the background, once the one before is
        written (every process calls it; process 0 writes)."""
        self._best_written()
        self._best_written = save_checkpoint_in_background(self.path / BEST, train_state, metadata)

    def close(self) -> None:
        """Wait until the last checkpoint and best.npz are written (raising an error of theirs)."""
        store, self._store = self._store, None
        try:
            self._best_written()
        finally:
            if store is not None:
                store.close()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None, config: Options = None, *, resume: bool = False
    ) -> tuple[Run, TrainConfig]:
        """The run directory ``path``, checked before any training, and the configuration to train with.

        A new run takes ``config`` (a `TrainConfig`, or the options given as ``{field: value}``
        with the other fields at their defaults; None: every default) and needs a directory
        that holds no run and can be written (None: `default_run_dir`). Resuming takes the
        configuration saved in ``path`` and needs its checkpoint; every option given must
        agree with the saved one. Nothing is written; `start` creates the directory.

        Raises:
          ConfigError: an unknown or bad option, or one that differs from the resumed run's.
          RunDirError: the directory cannot be used (see the message for the fix).
        """
        options = _options(config)
        if resume:
            if path is None:
                raise RunDirError("--resume needs the --run-dir of the run to continue")
            run = cls(path)
            run.check(resume=True)
            return run, run._resumed_config(options).validate()
        config = TrainConfig.from_dict(options).validate()
        run = cls(path if path is not None else default_run_dir(config))
        run.check(resume=False)
        return run, config

    def check(self, *, resume: bool) -> None:
        """Raise `RunDirError` unless the directory can take a new run (it holds none and can be
        written) or, with ``resume``, holds a run to continue; writes nothing."""
        if resume:
            self.require_saved("resume from", checkpoint=False)
        elif self.checkpoint is not None:
            raise RunDirError(
                f"{self.path} already holds a run; pass --resume to continue it, "
                "or choose another --run-dir (nothing was changed)"
            )
        elif (self.path / CONFIG).exists():
            raise RunDirError(
                f"{self.path} holds a run stopped before its first checkpoint (nothing was trained); "
                "pass --resume to start it over with its configuration, or choose another --run-dir"
            )
        self._check_writable()

    def require_saved(self, action: str = "use", *, checkpoint: bool = True) -> None:
        """Raise `RunDirError` unless the directory holds a configuration and (``checkpoint``) a
        checkpoint."""
        missing = (
            CONFIG if not (self.path / CONFIG).is_file()
            else f"checkpoint ({ORBAX}/<step>)" if checkpoint and self.checkpoint is None
            else None
        )  # fmt: skip
        if missing is not None:
            raise RunDirError(
                f"cannot {action} {self.path}: it has no {missing}; "
                "give the --run-dir of an earlier run, or start a new run without --resume"
            )

    def start(self, config: TrainConfig) -> None:
        """Create the directory and write the configuration (a new run)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / CONFIG, config.to_json())

    def saved_config(self) -> TrainConfig:
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
        """Append one epoch's record to metrics.jsonl (a metric of M models as a list of M), after cutting off a line torn by a crash."""
        self.repair()
        with disk_space(self.path / METRICS), open(self.path / METRICS, "a") as file:
            file.write(json.dumps(record, default=_listed) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def repair(self) -> None:
        """Cut a torn last line (a crash in the middle of an append) off metrics.jsonl, and remove
        the temporary files an interrupted write left behind (after best.npz's write in progress)."""
        self._best_written()
        for temporary in self.path.glob(".*.tmp"):
            temporary.unlink(missing_ok=True)
        path = self.path / METRICS
        if not path.is_file():
            return
        with open(path, "rb+") as file:
            data = file.read()
            if data and not data.endswith(b"\n"):
                file.truncate(data.rfind(b"\n") + 1)

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

    def _resumed_config(self, options: dict[str, Any]) -> TrainConfig:
        """The saved configuration, after checking that every option given agrees with it."""
        saved = self.saved_config()
        differences = saved.differences(TrainConfig.from_dict(dataclasses.asdict(saved) | options))
        if differences:
            listed = ", ".join(
                f"{name}: {old!r} in the run, {new!r} given" for name, (old, new) in differences.items()
            )
            raise ConfigError(
                f"cannot resume {self.path} with other settings ({listed}); a resumed run continues "
                "with its own configuration: drop those options, or start a new run"
            )
        return saved

    def _check_writable(self) -> None:
        """Raise unless the directory, or where it does not exist yet the nearest folder above
        it, is a folder this process may write in; creates nothing."""
        existing = self.path.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problem = os.strerror(errno.ENOTDIR)
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = os.strerror(errno.EACCES)
        else:
            return
        raise RunDirError(
            f"cannot write to the run directory {self.path} ({problem}: {existing}); choose another --run-dir"
        )


def _options(config: Options) -> dict[str, Any]:
    """The options of ``config`` by name: every field of a `TrainConfig`, the given ones of a mapping."""
    if config is None:
        return {}
    if isinstance(config, TrainConfig):
        return dataclasses.asdict(config)
    return dict(config)


def _listed(value: Any) -> Any:
    """JSON for what `json` cannot write itself: a NumPy array (M models' metric) as a list."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(handle, readable_mode())
    try:
        with disk_space(path), os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The metadata (epoch, step) of a checkpoint: an Orbax step directory or a ``.npz`` file."""
    if path.suffix == ".npz":
        return read_metadata(path)
    store = OrbaxStore(path.parent, writer=False)
    try:
        return store.metadata(int(path.name))
    finally:
        store.close()


@contextlib.contextmanager
def saving(run: Run | None) -> Iterator[None]:
    """Train inside it: at its end (also on an error) the run's last checkpoint is written."""
    try:
        yield
    finally:
        if run is not None:
            run.close()
