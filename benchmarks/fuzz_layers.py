"""The layer fuzzer of tests/reliability at scale: random Conv, ConvTranspose, MaxPool and AvgPool
configurations, valid and invalid, each checked against the documented shape formulas
(`tests/reliability/layer_fuzz.py`); prints the count of each outcome and the time.

    python benchmarks/fuzz_layers.py [--cases 10000] [--seed 2020]

The figures the hardening issue asks for: 0 silent wrong shapes, 0 configurations whose init
shape differs from apply's, 0 errors without the layer's name (and 0 crashes, 0 valid
configurations refused).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reliability"))
from layer_fuzz import check, random_case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    rng, key = np.random.default_rng(args.seed), jax.random.key(0)
    outcomes: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    for _ in range(args.cases):
        case = random_case(rng)
        outcome = check(case, key)
        outcomes[outcome.split(":")[0]] += 1
        kinds[case["kind"]] += 1
        if outcome not in ("valid", "rejected"):
            print(f"{outcome}: {case}")
    seconds = time.perf_counter() - started
    print(f"{args.cases} configurations (seed {args.seed}) in {seconds:.1f} s: {dict(kinds)}")
    for outcome in ("valid", "rejected", "silent wrong shape", "init differs from apply",
                    "error without the layer's name", "refused a valid configuration", "crash"):  # fmt: skip
        print(f"  {outcome}: {outcomes[outcome]}")
    failures = args.cases - outcomes["valid"] - outcomes["rejected"]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
