"""A `jaxconv.analysis.Summary` as the text table ``str(summary)`` prints: a line per layer, then
the totals, the training memory of one example, and the warnings."""

from __future__ import annotations

from typing import Any

HEADER = ("layer", "kind", "output", "activations", "params", "MACs", "field", "jump", "")
_RIGHT_ALIGNED = {3, 4, 5}  # the counts


def render(summary: Any) -> str:
    """The table of a `jaxconv.analysis.Summary` (any object with its rows, totals and ``memory``)."""
    lines = [_cells(row) for row in summary.rows]
    widths = [max(len(cells[i]) for cells in (HEADER, *lines)) for i in range(len(HEADER))]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if i in _RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(fmt(HEADER))
    return "\n".join([fmt(HEADER), rule, *map(fmt, lines), rule, *_totals(summary)])


def _cells(row: Any) -> tuple[str, ...]:
    return (
        row.path,
        row.kind,
        _dims(row.output_shape),
        f"{row.activations:,}" if row.stored else f"({row.activations:,})",
        f"{row.params:,}",
        f"{row.macs:,}",
        _dims(row.field),
        _dims(row.jump),
        "!" if row.warning else "",
    )


def _totals(s: Any) -> list[str]:
    memory = s.memory(1)
    out = [
        f"params {s.params:,}   stored activations per example {s.activations:,}   MACs {s.macs:,} "
        f"({s.valid_macs:,} without the taps on zero padding)",
        f"training memory per example ({s.dtype}): activations + gradients "
        f"{_megabytes(memory.activations + memory.activation_gradients + memory.input)}; "
        f"fixed: params + gradients + optimiser + state "
        f"{_megabytes(memory.params + memory.param_gradients + memory.optimizer + memory.state)}",
    ]
    if s.budget_bytes is not None:
        out.append(f"largest batch within {_megabytes(s.budget_bytes)}: {s.max_batch()}")
    out += [f"! {warning}" for warning in s.warnings]
    out.append("(activations in parentheses are views or in place and not stored)")
    return out


def _dims(value: Any) -> str:
    if value is None:
        return "-"
    if value and isinstance(value[0], tuple):
        return ", ".join(_dims(v) for v in value)
    return "x".join(str(d) for d in value) or "1"


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


__all__ = ["HEADER", "render"]
