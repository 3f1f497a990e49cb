"""Timing shared by the benchmarks: interleaved repeats, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function over interleaved rounds, after one warm-up call each.

    Interleaving spreads a shared machine's slow moments over all contenders alike.
    """
    import jax  # here, not at import: a benchmark may set XLA_FLAGS before JAX starts

    times: dict[str, list[float]] = {name: [] for name in functions}
    for fn in functions.values():
        jax.block_until_ready(fn())
    for _ in range(repeats):
        for name, fn in functions.items():
            begin = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()}
