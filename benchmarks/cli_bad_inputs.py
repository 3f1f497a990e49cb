"""Bad command lines against ``jaxconv``: the hardening issue's findings and 60 more
(`tests/reliability/cli_cases.py`), each run as the console script runs `jaxconv.cli.main`.
Prints each failure and the counts: tracebacks, exit statuses other than 2, messages of more
than one line, messages that do not name the value.

    python benchmarks/cli_bad_inputs.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(HERE / "reliability"), str(HERE / "runs")]

from cli_cases import ISSUE_CASES, KINDS, MORE_CASES, failure, run_cli  # noqa: E402
from synthetic import synthetic, tiny_net, write_idx  # noqa: E402

from jaxconv.models import registry  # noqa: E402


def write_data(directory: Path) -> None:
    directory.mkdir()
    for prefix, n, seed in (("train", 128, 0), ("t10k", 64, 1)):
        images, labels = synthetic(n, seed=seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


def main() -> int:
    registry._MODELS["tiny"] = registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {})
    counts = dict.fromkeys(KINDS, 0)
    started = time.perf_counter()
    cases = ISSUE_CASES + MORE_CASES
    with tempfile.TemporaryDirectory() as scratch:
        write_data(Path(scratch) / "data")
        for number, (argv, word) in enumerate(cases):
            tmp = Path(scratch) / f"case{number}"
            tmp.mkdir()
            problem = failure(run_cli(argv, str(Path(scratch) / "data"), str(tmp)), word)
            if problem is not None:
                counts[problem[0]] += 1
                print(f"jaxconv {' '.join(argv)}\n  {problem[0]}: {problem[1]}")
    print(
        f"{len(cases)} bad command lines ({len(ISSUE_CASES)} from the issue, {len(MORE_CASES)} more) "
        f"in {time.perf_counter() - started:.1f} s: tracebacks {counts['traceback']}, exit status not 2 "
        f"{counts['exit status']}, more than one line {counts['lines']}, value not named {counts['value not named']}"
    )
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
