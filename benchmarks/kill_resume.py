"""Kill ``jaxconv train`` with SIGKILL at random moments and continue it: is there ever a dead end,
and does the resumed run end with the same checkpoint as one never killed?

A reference run (the tests' tiny ConvNet on synthetic Fashion-MNIST-shaped data, 3 epochs) is
timed; a quarter of the kill points are uniform random moments of its start-up (before it
writes config.json), the others uniform random moments of its training, measured from the
moment the killed run wrote its config.json (before the first checkpoint, during a save, between
epochs, during the report). After the
kill, the way out is ``--resume`` when the run directory holds a configuration, else the same
command again (nothing was written). A dead end is a way out that fails; a resumed run must
end with a checkpoint (its latest Orbax step, read by Orbax alone) whose arrays have the
reference's SHA-256 digest. A kill during an Orbax save leaves its temporary directory: the
resume continues from the step before.

    python benchmarks/kill_resume.py [--kills 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS / "runs"))
from synthetic import orbax_arrays, synthetic, write_idx  # noqa: E402


def command(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, str(TESTS / "reliability" / "tiny_cli.py"), "train", "--model", "tiny",
            "--epochs", "3", "--batch-size", "32", "--data-dir", str(data), "--run-dir", str(run_dir),
            "--no-progress"]  # fmt: skip


def steps(run_dir: Path) -> list[int]:
    """The complete Orbax steps of the run (a save in progress is a temporary directory)."""
    folder = run_dir / "orbax"
    return (
        sorted(int(path.name) for path in folder.iterdir() if path.name.isdigit()) if folder.is_dir() else []
    )


def digest(run_dir: Path) -> str:
    """SHA-256 of the latest checkpoint's metadata and arrays, in key-path order."""
    metadata, arrays = orbax_arrays(run_dir / "orbax" / str(steps(run_dir)[-1]))
    hashed = hashlib.sha256(repr(sorted(metadata.items())).encode())
    for path in sorted(arrays):
        hashed.update(path.encode() + np.ascontiguousarray(arrays[path]).tobytes())
    return hashed.hexdigest()


def wait_for_config(run_dir: Path, process: subprocess.Popen) -> float:
    """Wait until the run has written its config.json (or ended); the seconds waited."""
    started = time.perf_counter()
    while not (run_dir / "config.json").exists() and process.poll() is None:
        time.sleep(0.005)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        for prefix, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
            images, labels = synthetic(n, seed=seed)
            write_idx(data / f"{prefix}-images-idx3-ubyte.gz", images[..., 0])
            write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels)
        started = time.perf_counter()
        process = subprocess.Popen(command(data, Path(scratch) / "reference"), stdout=subprocess.DEVNULL)
        start_up = wait_for_config(Path(scratch) / "reference", process)
        assert process.wait() == 0
        duration = time.perf_counter() - started
        reference = digest(Path(scratch) / "reference")
        print(f"reference run: {duration:.1f} s, of which {start_up:.1f} s before its config.json")
        dead_ends = different = 0
        for kill in range(args.kills):
            run_dir = Path(scratch) / f"killed{kill}"
            launched = time.perf_counter()
            process = subprocess.Popen(
                command(data, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if kill % 4 == 0:  # during start-up
                at = float(rng.uniform(0, start_up))
            else:  # once training has begun: the run directory exists
                at = wait_for_config(run_dir, process) + float(rng.uniform(0, duration - start_up))
            time.sleep(max(0.0, at - (time.perf_counter() - launched)))
            os.kill(process.pid, signal.SIGKILL)
            finished = process.wait() == 0
            torn = " and a torn save" if list(run_dir.glob("orbax/*.orbax-checkpoint-tmp*")) else ""
            state = "no directory" if not run_dir.exists() else (
                f"{len(steps(run_dir))} epochs saved{torn}" if steps(run_dir) else f"configuration only{torn}"
            )  # fmt: skip
            resume = ["--resume"] if (run_dir / "config.json").exists() else []
            way_out = subprocess.run([*command(data, run_dir), *resume], capture_output=True, text=True)
            same = way_out.returncode == 0 and digest(run_dir) == reference
            dead_ends += way_out.returncode != 0
            different += way_out.returncode == 0 and not same
            print(
                f"kill {kill + 1:2d} at {at:5.2f} s ({'finished first' if finished else state}): "
                f"{' '.join(resume) or 'ran again'} -> exit {way_out.returncode}, "
                f"{'bit-identical' if same else 'DIFFERENT' if way_out.returncode == 0 else way_out.stderr.strip()}"
            )
    print(f"{args.kills} kills: {dead_ends} dead ends, {different} resumed runs not bit-identical")
    return 1 if dead_ends or different else 0


if __name__ == "__main__":
    sys.exit(main())
