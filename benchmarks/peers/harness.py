"""What every framework module hands to the child process, and how the child measures it."""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _timing

from _timing import median_seconds
from workloads import Workload


@dataclasses.dataclass
class Contestant:
    """One framework's implementation of a workload, ready to run on its fixed batches.

    ``train_step()`` takes one SGD step and ``infer()`` one inference pass; both return
    something to block on. ``peak_memory()`` returns (bytes, how they were measured).
    """

    param_count: int
    train_step: Callable[[], Any]
    infer: Callable[[], Any]
    peak_memory: Callable[[], tuple[int, str]]
    version: str
    notes: str = ""
    eager: bool = False  # no compilation: the compile time reported is the first step's time


def xla_memory(lowered: Any) -> tuple[int, str]:
    """Peak bytes of a lowered JAX train step by XLA's memory analysis."""
    stats = lowered.compile().memory_analysis()
    total = (
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return total, "XLA memory_analysis: temp + arguments + outputs - aliased (donated)"


def max_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(contestant: Contestant, workload: Workload, steps: int, inner_repeats: int = 3) -> dict:
    """Compile time, training and inference throughput and peak memory of ``contestant``.

    Compile time is the first train step's time less a steady step's (an eager contestant's: the
    first step's). Each throughput is the
    median of ``inner_repeats`` interleaved blocks of ``steps`` calls, after a warm-up block.
    """
    begin = time.perf_counter()
    block_until_ready(contestant.train_step())
    first_step = time.perf_counter() - begin

    def repeat(fn: Callable[[], Any]) -> Callable[[], Any]:
        def block() -> Any:
            for _ in range(steps - 1):
                fn()
            return fn()

        return block

    seconds = median_seconds(
        {"train": repeat(contestant.train_step), "infer": repeat(contestant.infer)}, inner_repeats
    )
    train_step_seconds, infer_seconds = seconds["train"] / steps, seconds["infer"] / steps
    memory, memory_method = contestant.peak_memory()
    return {
        "params": contestant.param_count,
        "train_images_per_s": workload.train_batch / train_step_seconds,
        "infer_images_per_s": workload.infer_batch / infer_seconds,
        "train_step_ms": 1e3 * train_step_seconds,
        "first_step_s": first_step,
        "compile_s": first_step if contestant.eager else max(first_step - train_step_seconds, 0.0),
        "peak_memory_mib": memory / 2**20,
        "memory_method": memory_method,
        "version": contestant.version,
        "notes": contestant.notes,
    }


def block_until_ready(value: Any) -> Any:
    """Wait for JAX's asynchronous dispatch (a torch contestant returns Python numbers)."""
    import jax

    return jax.block_until_ready(value)
