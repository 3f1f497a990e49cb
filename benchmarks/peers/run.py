"""Side-by-side benchmark of jaxconv against stax, Flax (linen, NNX), Equinox, Haiku and PyTorch.

Every framework trains the same architecture (parameter counts printed) with SGD momentum 0.9
on fixed synthetic batches, each measurement in its own fresh process, repeats interleaved
(round robin over the frameworks, the order rotated each repeat). Prints, per workload, the
median and spread (min-max) of training and inference throughput, compile time and peak
memory, and jaxconv's ratios to the fastest JAX peer and to PyTorch eager.

    python benchmarks/peers/run.py [--workloads small_cnn,resnet20,resnet50]
        [--frameworks jaxconv,stax,flax_linen,flax_nnx,equinox,haiku,torch,torch_compile]
        [--repeats 5] [--steps N] [--resolution R] [--batch B] [--single-thread]
        [--keep-host-blocks] [--json out.json]
    python benchmarks/peers/run.py --quick      # a smoke test: small_cnn, 1 repeat, 2 steps

``--keep-host-blocks`` starts every process with glibc's thresholds at 1 GiB (``KEEP_HOST_BLOCKS``,
what `jaxconv.host_memory.reuse_host_memory` sets and ``jaxconv train`` runs with): freed large
blocks stay in the heap instead of coming back as fresh pages, faulted in on every step. It is
the same for every framework, PyTorch included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import FRAMEWORKS, JAX_PEERS
from workloads import WORKLOADS

HERE = Path(__file__).resolve().parent
METRICS = {  # key -> (column, format, higher is better)
    "train_images_per_s": ("train img/s", "{:,.0f}", True),
    "infer_images_per_s": ("infer img/s", "{:,.0f}", True),
    "compile_s": ("compile s", "{:.2f}", False),
    "peak_memory_mib": ("peak MiB", "{:,.1f}", False),
}
KEEP_HOST_BLOCKS = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
SINGLE_THREAD = {  # one compute thread in every framework: a fairer race on a busy machine
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def run_child(framework: str, workload: str, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process; its last stdout line is its JSON record."""
    command = [sys.executable, str(HERE / "measure.py"), framework, workload]
    for option in ("steps", "resolution", "batch"):
        if getattr(args, option):
            command += [f"--{option}", str(getattr(args, option))]
    env = {**os.environ, **(SINGLE_THREAD if args.single_thread else {})}
    env |= KEEP_HOST_BLOCKS if args.keep_host_blocks else {}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"framework": framework, "workload": workload, "failed": f"timed out after {args.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"framework": framework, "workload": workload, "failed": f"exit {done.returncode}: {error}"}
    return json.loads(lines[-1])


def summarise(records: list[dict]) -> dict:
    """Median, min and max of each metric over one framework's successful repeats."""
    good = [record for record in records if "params" in record]
    if not good:
        reasons = {record.get("skipped") or record.get("failed", "?") for record in records}
        return {"status": "; ".join(sorted(reasons))}
    summary = {"status": "ok", "repeats": len(good), "params": sorted({record["params"] for record in good})}
    for key in METRICS:
        values = [record[key] for record in good]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    for key in ("memory_method", "version", "notes", "image_shape", "train_batch", "infer_batch"):
        summary[key] = good[0][key]
    return summary


def ratios(summaries: dict[str, dict]) -> dict[str, float]:
    """jaxconv's training throughput over the fastest JAX peer's and PyTorch eager's, and its
    compile time over the fastest-compiling JAX peer's (medians)."""
    ok = {name: summary for name, summary in summaries.items() if summary["status"] == "ok"}
    if "jaxconv" not in ok:
        return {}
    mine, found = ok["jaxconv"], {}
    peers = [name for name in JAX_PEERS if name in ok]
    if peers:
        fastest = max(peers, key=lambda name: ok[name]["train_images_per_s"]["median"])
        quickest = min(peers, key=lambda name: ok[name]["compile_s"]["median"])
        found[f"train vs fastest JAX peer ({fastest})"] = (
            mine["train_images_per_s"]["median"] / ok[fastest]["train_images_per_s"]["median"]
        )
        found[f"compile vs quickest JAX peer ({quickest})"] = (
            mine["compile_s"]["median"] / ok[quickest]["compile_s"]["median"]
        )
    for torch_name in ("torch", "torch_compile"):
        if torch_name in ok:
            found[f"train vs {torch_name}"] = (
                mine["train_images_per_s"]["median"] / ok[torch_name]["train_images_per_s"]["median"]
            )
    return found


def table(workload: str, summaries: dict[str, dict]) -> str:
    """A Markdown table of one workload: median [min-max] of each metric, and the parameters."""
    header = ["framework", *(column for column, _, _ in METRICS.values()), "params", "n"]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    first = next((summary for summary in summaries.values() if summary["status"] == "ok"), None)
    for name, summary in summaries.items():
        if summary["status"] != "ok":
            rows.append(f"| {name} | skipped or failed: {summary['status']} |" + " |" * (len(header) - 2))
            continue
        cells = [name]
        for key, (_, style, _) in METRICS.items():
            value = summary[key]
            spread = f"{style.format(value['min'])}-{style.format(value['max'])}"
            cells.append(f"{style.format(value['median'])} [{spread}]")
        params = summary["params"]
        cells += [" / ".join(f"{count:,}" for count in params), str(summary["repeats"])]
        rows.append("| " + " | ".join(cells) + " |")
    title = workload
    if first:
        title += f": {'x'.join(map(str, first['image_shape']))}, train batch {first['train_batch']}"
        title += f", inference batch {first['infer_batch']}"
    return f"### {title}\n\n" + "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="small_cnn,resnet20,resnet50")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per framework and workload")
    parser.add_argument("--steps", type=int, help="calls per timed block (default: per workload)")
    parser.add_argument(
        "--resolution", type=int, help="square input size (default: the workload's; ResNet-50 64 on CPU)"
    )
    parser.add_argument("--batch", type=int, help="training and inference batch (default: the workload's)")
    parser.add_argument("--single-thread", action="store_true", help="one compute thread in every framework")
    parser.add_argument(
        "--keep-host-blocks",
        action="store_true",
        help="glibc keeps freed blocks up to 1 GiB, in every framework",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one measurement may take")
    parser.add_argument("--json", type=Path, help="write every record and the summaries here")
    parser.add_argument("--quick", action="store_true", help="smoke test: small_cnn, 1 repeat, 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.workloads, args.repeats, args.steps = "small_cnn", 1, args.steps or 2
    args.workloads, args.frameworks = args.workloads.split(","), args.frameworks.split(",")
    for name, known in (("workload", WORKLOADS), ("framework", FRAMEWORKS)):
        unknown = [value for value in getattr(args, f"{name}s") if value not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    records: dict[str, dict[str, list[dict]]] = {w: {f: [] for f in args.frameworks} for w in args.workloads}
    for repeat in range(args.repeats):
        shift = repeat % len(args.frameworks)
        order = args.frameworks[shift:] + args.frameworks[:shift]
        for workload in args.workloads:
            for framework in order:
                record = run_child(framework, workload, args)
                records[workload][framework].append(record)
                progress = f"[{repeat + 1}/{args.repeats}] {workload} {framework}: {brief(record)}"
                print(progress, file=sys.stderr, flush=True)
    summaries = {w: {f: summarise(records[w][f]) for f in args.frameworks} for w in args.workloads}
    found = {w: ratios(summaries[w]) for w in args.workloads}
    load_after = os.getloadavg()
    print(machine_line(started, load_before, load_after, args))
    for workload in args.workloads:
        print("\n" + table(workload, summaries[workload]))
        for label, value in found[workload].items():
            print(f"- jaxconv {label}: {value:.2f}x")
        notes = {f"{f}: {s['notes']}" for f, s in summaries[workload].items() if s.get("notes")}
        methods = {s["memory_method"] for s in summaries[workload].values() if s.get("memory_method")}
        for line in sorted(notes) + [f"memory: {method}" for method in sorted(methods)]:
            print(f"- {line}")
    if args.json:
        result = {
            "started": started, "load_before": load_before, "load_after": load_after, "argv": sys.argv[1:],
            "machine": machine(), "records": records, "summaries": summaries, "ratios": found,
        }  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1))


def brief(record: dict) -> str:
    if "params" in record:
        return f"{record['train_images_per_s']:,.0f} train img/s, compile {record['compile_s']:.1f} s"
    return record.get("skipped") or record.get("failed", "?")


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def machine_line(started: str, load_before, load_after, args: argparse.Namespace) -> str:
    info = machine()
    threads = "one compute thread per framework" if args.single_thread else "all cores per framework"
    threads += "; glibc keeping freed blocks" if args.keep_host_blocks else ""
    return (
        f"{started}; {info['platform']}, {info['cpus']} CPUs, Python {info['python']}; {threads}; "
        f"{args.repeats} repeats; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
