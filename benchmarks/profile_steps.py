"""Where a step's time goes: jaxconv (XLA:CPU) against PyTorch eager, per class of operation.

The default small CNN (batch 128), ResNet-20 (CIFAR, batch 128) and ResNet-50 (64x64, batch 16),
the nets of the peers harness (``benchmarks/peers/``), one SGD-momentum train step and one
inference pass each. For jaxconv the compiled step runs under ``jax.profiler.trace`` with XLA's
per-thunk trace events on (``--xla_cpu_enable_xprof_traceme``); each event is the HLO
instruction of the optimised module (``compiled.as_text()``) it names (XNNPACK/YNNPACK fusions,
reported as one generic name, are matched in schedule order), and each instruction is classed by
what it computes: a convolution by direction (forward; input gradient and weight gradient, told
apart by the shape of the result), matrix products (``dot``), max pooling and its gradient
(``reduce-window``, ``select-and-scatter``, or a fusion over jaxconv's tiled view of the map,
which also holds the BatchNorm and ReLU XLA fused with it), normalisation and the optimiser,
transposes and copies, other elementwise fusions, and the rest. A YNNPACK fusion that holds
convolutions is classed by them, though it may also run the pooling and matrix products around
them (the small CNN's inference pass is one such fusion). For PyTorch ``torch.profiler`` gives
each aten op's self time, classed the same way (``convolution_backward`` computes both gradients
in one op, so PyTorch's backward convolutions are one class; ops under ``Optimizer.step`` are
the optimiser).

Times are per step: the class totals of the trace divided by the steps traced, beside the
median wall time of untraced steps. The inference pass of jaxconv is shown twice: the plain
``net.apply(train=False)`` and the net `jaxconv.inference.fold_batchnorm` folded once.

    python benchmarks/profile_steps.py [--workloads small_cnn,resnet20,resnet50] [--repeats 3]
        [--steps 3] [--xla-flags "--xla_cpu_use_xnnpack=false"] [--no-torch] [--reuse-host-memory]

``--reuse-host-memory`` first calls `jaxconv.host_memory.reuse_host_memory` (as ``jaxconv train``
does): glibc then keeps the step's temporaries between steps instead of handing them out as fresh
pages, whose faults otherwise land on whichever op first writes them.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # before jax starts: per-thunk trace events, and any flags asked for
    _flags = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--xla-flags=")), "")
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_enable_xprof_traceme=true {_flags}"
    )

import jax
import numpy as np
from _timing import median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from jax_common import batches, sgd
from workloads import CPU_RESOLUTION, WORKLOADS, Workload

import jaxconv as jc
import jaxconv.train as jt
from jaxconv.host_memory import reuse_host_memory
from jaxconv.models.small import convnet

CLASSES = (
    "conv forward",
    "conv input grad",
    "conv weight grad",
    "conv backward (both)",
    "matrix products",
    "pooling",
    "normalisation",
    "elementwise/fusions",
    "transposes/copies",
    "optimiser",
    "other",
)
ZOO_NAMES = {"resnet20": "resnet20", "resnet50": "resnet50_tv"}
WORKLOAD_SIZES = {
    "small_cnn": (None, 128),
    "resnet20": (None, 128),
    "resnet50": (CPU_RESOLUTION["resnet50"], 16),
}
# max pooling: XLA's windowed ops, or jaxconv's tiled form, whose view of a 2-D map is rank 6
# (N, H/F, F, W/F, F, C): nothing else in these nets is
_POOLING_OPS = {"reduce-window", "select-and-scatter"}

# --- the optimised HLO: each instruction of the entry computation and what it computes --------

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) (?:\S+ )?([\w\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_DIM_LABELS = re.compile(r"dim_labels=(\w+)_(\w+)->(\w+)")


def computations(hlo: str) -> dict[str, list[str]]:
    """The lines of each computation of an HLO module, by name (the entry as ``'ENTRY'``)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = re.match(r"^(ENTRY )?%([\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            current = "ENTRY" if header.group(1) else header.group(2)
            found[current] = []
        elif current is not None and line.strip() != "}":
            found[current].append(line)
    return found


def _rank(shape: str) -> int:
    """The rank of an HLO shape such as ``f32[128,14,2,14,2,32]{5,4,3,2,1,0}`` (0 for a tuple)."""
    dims = re.match(r"\w+\[([\d,]*)\]", shape)
    return len(dims.group(1).split(",")) if dims and dims.group(1) else 0


def conv_direction(line: str) -> str:
    """'conv forward', 'conv input grad' or 'conv weight grad' of one HLO convolution line. XLA
    writes the weight gradient as a convolution whose window is the activation (larger than any
    7x7 kernel; its line keeps no JAX name), and the input gradient keeps JAX's ``transpose``."""
    window = re.search(r"window=\{size=([\dx]+)", line)
    if window and np.prod([int(size) for size in window.group(1).split("x")]) > 49:
        return "conv weight grad"
    op_name = (_OP_NAME.search(line) or [None, ""])[1]
    return "conv input grad" if "transpose(" in op_name else "conv forward"


def classify(line: str, bodies: dict[str, list[str]], differentiated: bool) -> str:
    """The class of one instruction of the entry computation. Normalisation: a fusion with an
    ``rsqrt`` or a per-channel reduction (BatchNorm's statistics, their gradients). The optimiser:
    in a train step (``differentiated``), a fusion all of whose JAX names are outside ``jvp`` and
    its ``transpose`` (the loss and its gradient are inside them)."""
    match = _INSTRUCTION.match(line)
    opcode = match.group(3) if match else ""
    called = _CALLS.search(line)
    body = bodies.get(called.group(1), []) if called else []
    convs = [inner for inner in [line, *body] if " convolution(" in inner]
    if convs:
        directions = collections.Counter(conv_direction(conv) for conv in convs)
        return directions.most_common(1)[0][0]
    inner = [m for m in map(_INSTRUCTION.match, [line, *body]) if m]
    if any(m.group(3) == "dot" for m in inner):
        return "matrix products"
    if {m.group(3) for m in inner} & _POOLING_OPS or any(_rank(m.group(2)) >= 6 for m in inner):
        return "pooling"
    names = _OP_NAME.findall(" ".join([line, *body]))
    if differentiated and names and not any("jvp(" in name for name in names):
        return "optimiser"
    per_channel = any(m.group(3) == "reduce" and re.match(r"f32\[\d+\]", m.group(2)) for m in inner)
    if any(m.group(3) == "rsqrt" for m in inner) or per_channel:
        return "normalisation"
    inner_ops = {m.group(3) for m in inner[1:]} - {"parameter", "bitcast"}
    if opcode in ("transpose", "copy") or (body and inner_ops <= {"transpose", "copy", "reshape"}):
        return "transposes/copies"
    if opcode == "fusion":
        return "elementwise/fusions"
    return "other"


def instruction_classes(hlo: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each entry instruction's class by name, and the names of the XNN/YNN fusions in schedule
    order, by the generic thunk name their trace events carry ('ynn_fusion', 'xnn_fusion')."""
    bodies = computations(hlo)
    differentiated = "jvp(" in hlo
    classes, generic = {}, collections.defaultdict(list)
    for line in bodies.get("ENTRY", []):
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name = match.group(1)
        classes[name] = classify(line, bodies, differentiated)
        kind = re.match(r"^([xy]nn_fusion)", name)
        if kind:
            generic[kind.group(1)].append(name)
    return classes, generic


# --- the trace -------------------------------------------------------------------------------


def thunk_times(trace_dir: str) -> list[tuple[str, float]]:
    """(thunk name, seconds) of every XLA thunk in a trace, in start order. A thunk runs from its
    start event to its ``end:`` event (an asynchronous one ends later, on another thread); where
    thunks overlap, each instant is shared equally among those running, so the times add up to
    the time XLA was busy."""
    paths = sorted(Path(trace_dir).rglob("*.xplane.pb"))
    data = jax.profiler.ProfileData.from_file(str(paths[-1]))
    starts, ends = {}, {}
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats and "_p" in stats:
                    starts[stats["_p"]] = (
                        event.start_ns,
                        event.start_ns + event.duration_ns,
                        stats["hlo_op"],
                    )
                elif event.name.startswith("end: ") and "_c" in stats:
                    ends[stats["_c"]] = event.start_ns + event.duration_ns
    spans = sorted(
        (start, max(stop, ends.get(flow, 0)), name) for flow, (start, stop, name) in starts.items()
    )
    return [(name, seconds) for (_, _, name), seconds in zip(spans, shared_durations(spans), strict=True)]


def shared_durations(spans: list[tuple[int, int, str]]) -> list[float]:
    """Seconds of each (start_ns, stop_ns, name) span, each instant split among the spans open."""
    edges = sorted({t for start, stop, _ in spans for t in (start, stop)})
    index = {t: i for i, t in enumerate(edges)}
    opened = np.zeros(len(edges))
    for start, stop, _ in spans:
        opened[index[start] : index[stop]] += 1
    share = np.diff(edges) / np.maximum(opened[:-1], 1)  # ns of each elementary interval per span
    cumulative = np.concatenate([[0.0], np.cumsum(share)])
    return [(cumulative[index[stop]] - cumulative[index[start]]) / 1e9 for start, stop, _ in spans]


def jax_breakdown(run, hlo: str, steps: int) -> dict[str, float]:
    """Seconds per step in each class, for a compiled jaxconv step ``run()``."""
    classes, generic = instruction_classes(hlo)
    run()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                jax.block_until_ready(run())
        events = thunk_times(trace_dir)
    totals, by_instruction = dict.fromkeys(CLASSES, 0.0), collections.Counter()
    position = collections.Counter()
    for name, seconds in events:
        if name in generic:  # the k-th event of a generic name, per step, is the k-th such fusion
            generic_name, name = name, generic[name][position[name] % len(generic[name])]
            position[generic_name] += 1
        totals[classes.get(name, "other")] += seconds / steps
        by_instruction[name] += seconds / steps
    return totals, by_instruction


def top_lines(hlo: str, by_instruction: collections.Counter, count: int) -> str:
    """The ``count`` slowest instructions: ms per step, class, and the HLO line (shortened)."""
    classes, _ = instruction_classes(hlo)
    lines = {
        m.group(1): line.strip()
        for line in computations(hlo).get("ENTRY", [])
        if (m := _INSTRUCTION.match(line))
    }
    return "\n".join(
        f"  {1e3 * seconds:8.1f} ms  {classes.get(name, 'other'):<20} {re.sub(r', metadata=.*', '', lines.get(name, name))[:150]}"
        for name, seconds in by_instruction.most_common(count)
    )


# --- the two frameworks ----------------------------------------------------------------------


def sized(name: str) -> Workload:
    resolution, batch = WORKLOAD_SIZES[name]
    return WORKLOADS[name].sized(resolution, batch)


def jaxconv_runs(workload: Workload) -> dict[str, tuple[object, str]]:
    """``{'train': (run, hlo), 'infer': ..., 'infer folded': ...}`` for the net of a workload."""
    if workload.resnet is None:
        net = convnet(num_classes=workload.num_classes)
    else:
        net = jc.models.get(ZOO_NAMES[workload.name], num_classes=workload.num_classes)
    images, labels, infer_images = batches(workload)
    box = [jt.init_train_state(net, sgd(), (-1, *workload.image_shape), jax.random.key(0))]
    step = jt.make_train_step(net, sgd())

    def train():
        box[0], metrics = step(box[0], images, labels)
        return metrics["loss"]

    plain = jax.jit(lambda params, state, x: net.apply(params, state, x, train=False)[0])
    params, state = jax.tree.map(np.array, (box[0].params, box[0].state))  # kept: steps donate theirs
    folded_net, folded_params, folded_state = jc.inference.fold_batchnorm(net, params, state)
    folded = jc.inference.make_predict(folded_net)
    return {
        "train": (train, step.lower(box[0], images, labels).compile().as_text()),
        "infer": (
            lambda: plain(params, state, infer_images),
            plain.lower(params, state, infer_images).compile().as_text(),
        ),
        "infer folded": (
            lambda: folded(folded_params, folded_state, infer_images),
            folded.lower(folded_params, folded_state, infer_images).compile().as_text(),
        ),
    }


def torch_class(name: str, in_optimizer: bool) -> str:
    if in_optimizer:
        return "optimiser"
    if "convolution_backward" in name:
        return "conv backward (both)"
    if "convolution" in name or name.startswith("aten::conv"):
        return "conv forward"
    if any(word in name for word in ("addmm", "aten::mm", "aten::linear")):
        return "matrix products"
    if "pool" in name:
        return "pooling"
    if "batch_norm" in name:
        return "normalisation"
    if any(word in name for word in ("copy", "contiguous", "clone", "transpose", "permute", "aten::to")):
        return "transposes/copies"
    if any(word in name for word in ("add", "mul", "relu", "threshold", "div", "sub", "zero", "fill")):
        return "elementwise/fusions"
    return "other"


def torch_breakdown(run, steps: int) -> dict[str, float]:
    """Seconds per step in each class, from ``torch.profiler`` self times."""
    import torch.profiler  # only when PyTorch is measured

    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(steps):
            run()
    totals = dict.fromkeys(CLASSES, 0.0)
    for event in profile.events():
        if not event.name.startswith("aten::"):
            continue
        parent, in_optimizer = event.cpu_parent, False
        while parent is not None and not in_optimizer:
            in_optimizer = parent.name.startswith("Optimizer.step")
            parent = parent.cpu_parent
        totals[torch_class(event.name, in_optimizer)] += event.self_cpu_time_total / 1e6 / steps
    return totals


def torch_runs(workload: Workload) -> dict[str, object]:
    import peer_torch  # PyTorch only when it is measured

    contestant = peer_torch.build(workload)
    return {"train": contestant.train_step, "infer": contestant.infer}


# --- the table -------------------------------------------------------------------------------


def table(title: str, columns: dict[str, tuple[dict[str, float], float]]) -> str:
    """Per class: ms and % of each column (a breakdown and its wall time), and the ratio of the
    first column to the last."""
    names = list(columns)
    head = f"{title:<22}" + "".join(f"{n:>24}" for n in names) + ("   ratio" if len(names) > 1 else "")
    lines = [head]
    for row in (*CLASSES, "traced total", "wall (median)"):
        cells, values = [], []
        for totals, wall in columns.values():
            value = (
                wall
                if row == "wall (median)"
                else sum(totals.values())
                if row == "traced total"
                else totals[row]
            )
            share = f"{100 * value / max(sum(totals.values()), 1e-12):5.1f}%" if row in CLASSES else "      "
            cells.append(f"{1e3 * value:13.1f} ms {share}")
            values.append(value)
        if all(v == 0 for v in values):
            continue
        ratio = f"{values[0] / values[-1]:8.2f}" if len(values) > 1 and values[-1] > 0 else ""
        lines.append(f"{row:<22}" + "".join(f"{c:>24}" for c in cells) + ratio)
    return "\n".join(lines)


def profile_workload(name: str, args: argparse.Namespace) -> None:
    workload = sized(name)
    runs = jaxconv_runs(workload)
    theirs = {} if args.no_torch else torch_runs(workload)
    for mode, batch in (("train", workload.train_batch), ("infer", workload.infer_batch)):
        labels = [mode, "infer folded"] if mode == "infer" else [mode]
        contenders = {f"jaxconv {label}": runs[label][0] for label in labels}
        if theirs:
            contenders["torch eager"] = theirs[mode]
        walls = median_seconds(contenders, repeats=args.repeats)  # interleaved: the same load
        columns, slowest = {}, []
        for label in labels:
            totals, by_instruction = jax_breakdown(runs[label][0], runs[label][1], args.steps)
            columns[f"jaxconv {label}"] = (totals, walls[f"jaxconv {label}"])
            slowest.append(
                f"jaxconv {label}, slowest XLA ops:\n" + top_lines(runs[label][1], by_instruction, args.top)
            )
        if theirs:
            columns["torch eager"] = (torch_breakdown(theirs[mode], args.steps), walls["torch eager"])
        print(table(f"{name} {mode} b{batch}", columns), end="\n\n", flush=True)
        if args.top:
            print("\n\n".join(slowest), end="\n\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", default="resnet20,resnet50")
    parser.add_argument("--repeats", type=int, default=3, help="untimed-trace wall-time repeats")
    parser.add_argument("--steps", type=int, default=3, help="steps traced per breakdown")
    parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS (write --xla-flags=...)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--top", type=int, default=8, help="list this many slowest XLA ops")
    parser.add_argument(
        "--reuse-host-memory", action="store_true", help="glibc keeps freed blocks (as jaxconv train)"
    )
    args = parser.parse_args()
    if args.reuse_host_memory:
        print(f"reuse_host_memory: {reuse_host_memory(sync_dispatch=False)}")
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '').strip()}")
    print("ratio: first column / last (the wall row: jaxconv's time over PyTorch's)\n")
    for name in args.workloads.split(","):
        profile_workload(name, args)


if __name__ == "__main__":
    main()
