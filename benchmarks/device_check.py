"""The device check: one short run of every figure that waits for an accelerator, as one JSON and a
Markdown table (issue #19). Each section runs in its own process with its own time limit, so one
that fails or runs long costs only itself; the run as a whole stops starting sections when its
budget (``--budget-s``, 450 s: the issue's 8 minutes less a margin) is spent.

Sections (``--smoke``: the same on a CPU with tiny sizes, in well under 2 minutes):

- ``matmul_peak``: the measured bf16 matrix-multiply peak, a jitted ``jnp.dot`` of two n x n
  bfloat16 matrices (n = 8192), in TFLOP/s;
- ``resnet50_jaxconv``, ``resnet50_flax``: ResNet-50 training and inference at 224x224, batch
  256, synthetic data, through the peers harness (``peers/measure.py``) with JAX's matmul and
  convolution precision at bfloat16 (``JAX_DEFAULT_MATMUL_PRECISION=bfloat16``, float32
  storage, the same for both); images/s, and the fraction of the bf16 peak that the training
  step's FLOPs (3x the forward pass's, by XLA's cost analysis) reach;
- ``per_example``: ``per_example.py`` (clipped per-example sums against loops and Opacus);
- ``many_models``: ``many_models.py --strategy vmap``, 8 seeds in one program against one alone;
- ``device_dp``: ``device_dp.py``, De et al.'s DP-SGD recipe, a few steps;
- ``cpu_switch_*``: each CPU-only switch (`CPU_SWITCHES`) timed with and without on the device:
  whether it should be on there;
- ``remat``: ``remat.py --no-step-table``, the largest ResNet-50 batch (224x224) whose train step
  fits 16 GiB by XLA's memory analysis, with and without ``remat=True`` (it compiles most);
- ``resnet50_jaxconv_mixed``, an extra run if time is left: jaxconv's own ``mixed_precision``
  (bfloat16 activations, float32 master weights) on the same step.

    bash benchmarks/device_check.sh [--smoke] [--out DIR] [--budget-s 450] [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
BF16 = {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}
# A CPU-only switch: (script and arguments, regex whose group 1 is "time off / time on"); a ratio
# above 1 says the switch should be on on the device too. Add a row for each new switch.
CPU_SWITCHES = {
    "cpu_switch_maxpool_tiled": (
        ["maxpool.py", "--steps", "5", "--repeats", "3"],
        r"speed-up \(reduce_window / tiled\): ([0-9.]+)x",
    ),
}


def sections(smoke: bool) -> dict[str, dict]:
    """Each section: its command (run from benchmarks/), time limit (s) and extra environment, in
    the order they run (remat, the longest, and the extra mixed-precision run last). ``smoke``: the same commands at tiny sizes."""
    python, smoke_flag = sys.executable, ["--smoke"] if smoke else []
    measure = [python, str(PEERS / "measure.py")]
    resnet = ["small_cnn", "--batch", "2", "--steps", "1"] if smoke else ["resnet50", "--batch", "256"]
    table = {
        "matmul_peak": {"command": [python, __file__, "--section", "matmul_peak", *smoke_flag], "limit": 60},
        "resnet50_jaxconv": {"command": [*measure, "jaxconv", *resnet], "limit": 170, "env": BF16},
        "resnet50_flax": {"command": [*measure, "flax_linen", *resnet], "limit": 170, "env": BF16},
        "per_example": {
            "command": [python, "per_example.py", "--repeats", "3",
                        *(["--smoke", "--contenders", "JAX per-example loop"] if smoke else [])],
            "limit": 90,
        },
        "many_models": {
            "command": [python, "many_models.py", "--strategy", "vmap", "--models", "2" if smoke else "8",
                        *(["--batch-size", "4", "--steps", "1", "--repeats", "1"] if smoke else ["--repeats", "3"])],
            "limit": 90,
        },
        "device_dp": {"command": [python, "device_dp.py", *(smoke_flag or ["--steps", "5"])], "limit": 120},
    }  # fmt: skip
    for name, (arguments, pattern) in CPU_SWITCHES.items():
        arguments = [arguments[0], "--smoke"] if smoke else arguments
        table[name] = {"command": [python, *arguments], "limit": 90, "ratio": pattern}
    remat = ["--model", "resnet20", "--budget-gib", "0.01"] if smoke else ["--budget-gib", "16"]
    table["remat"] = {"command": [python, "remat.py", *remat, "--no-step-table"], "limit": 150}
    table["resnet50_jaxconv_mixed"] = {
        "command": [python, __file__, "--section", "resnet50_jaxconv_mixed", *smoke_flag],
        "limit": 120,
    }  # an extra: what jaxconv's own bf16 (mixed_precision) gives, if time is left
    return table


FIGURES = {  # section -> {figure: regex on its output}; the peers harness and device_dp print JSON
    "per_example": {
        "jaxconv_auto_examples_per_s": r"jaxconv auto\s+([0-9,]+)",
        "auto_over_peers": r"jaxconv auto / peer: (.*)",
    },
    "remat": {
        "largest_batch_lines": r"(?m)^\| (plain|remat=True) \|.*$",
        "remat_over_plain": r"remat fits \*\*([0-9.]+)x",
    },
    "many_models": {"aggregate_ratio": r"aggregate throughput ratio .*: ([0-9.]+)"},
}


def run_section(name: str, spec: dict, limit: float) -> dict:
    """Runs one section's command; returns its record (figures, seconds, status, the output's tail)."""
    begin = time.perf_counter()
    env = {**os.environ, **spec.get("env", {}), "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            spec["command"], cwd=HERE, env=env, capture_output=True, text=True, timeout=limit
        )
        output, status = (
            done.stdout + done.stderr,
            "ok" if done.returncode == 0 else f"exit {done.returncode}",
        )
    except subprocess.TimeoutExpired as error:
        output, status = _text(error.stdout) + _text(error.stderr), f"timed out after {limit:.0f} s"
    record = {"status": status, "seconds": round(time.perf_counter() - begin, 1), "command": _shown(spec)}
    record["figures"] = figures(name, spec, done.stdout if status == "ok" else output)
    record["tail"] = output[-1500:]
    return record


def figures(name: str, spec: dict, output: str) -> dict:
    """The figures a section's output holds: its last JSON line, or the regexes' matches."""
    found: dict = {}
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{") and line.endswith("}"):
            found.update(json.loads(line))
            break
    for figure, pattern in FIGURES.get(name, {}).items():
        matches = [
            match.group(0 if figure.endswith("lines") else 1) for match in re.finditer(pattern, output)
        ]
        if matches:
            found[figure] = matches if figure.endswith("lines") else matches[-1]
    if "ratio" in spec and (match := re.search(spec["ratio"], output)):
        ratio = float(match.group(1))
        found.update(off_over_on=ratio, keep_on_here=ratio > 1.0)
    return found


def derived(results: dict) -> dict:
    """Cross-section figures: jaxconv / Flax on ResNet-50, and the fraction of the bf16 peak."""
    out: dict = {}
    peak = results.get("matmul_peak", {}).get("figures", {}).get("tflops")
    ours = results.get("resnet50_jaxconv", {}).get("figures", {})
    flax = results.get("resnet50_flax", {}).get("figures", {})
    for metric in ("train_images_per_s", "infer_images_per_s"):
        if metric in ours and metric in flax:
            out[f"resnet50_{metric}_jaxconv_over_flax"] = round(ours[metric] / flax[metric], 3)
    flops = results.get("matmul_peak", {}).get("figures", {}).get("resnet50_train_flops_per_image")
    for section in ("resnet50_jaxconv", "resnet50_flax", "resnet50_jaxconv_mixed"):
        rate = results.get(section, {}).get("figures", {}).get("train_images_per_s")
        if rate and peak and flops:
            out[f"{section}_fraction_of_bf16_peak"] = round(rate * flops / (peak * 1e12), 4)
    return out


HIDDEN = {
    "framework",
    "workload",
    "pid",
    "memory_method",
    "notes",
    "version",
    "image_shape",
    "max_rss_delta_mib",
}


def markdown(results: dict, extra: dict, header: str) -> str:
    """The table: a row per section (its scalar figures but the bookkeeping ones), then the derived."""
    lines = [header, "", "| section | status | s | figures | command |", "| --- | --- | ---: | --- | --- |"]
    for name, record in results.items():
        shown = ", ".join(
            f"{key} {_short(value)}"
            for key, value in record["figures"].items()
            if _scalar(value) and key not in HIDDEN
        )
        lines.append(
            f"| {name} | {record['status']} | {record['seconds']} | {shown} | `{record['command']}` |"
        )
    lines += [
        "",
        "| derived | value |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any backend: checks the script")
    parser.add_argument("--out", default="device_check_out", help="folder for device_check.json and .md")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting sections after this")
    parser.add_argument("--only", help="comma-separated section names")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # a child: one in-process measurement
    args = parser.parse_args(argv)
    if args.section:
        print(json.dumps(SECTIONS_IN_PROCESS[args.section](args.smoke)))
        return
    table = sections(args.smoke)
    chosen = args.only.split(",") if args.only else list(table)
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        parser.error(f"--only: unknown sections {unknown}; choose from {sorted(table)}")
    results, begin = {}, time.perf_counter()
    for name in chosen:
        left = args.budget_s - (time.perf_counter() - begin)
        if left < 15:
            results[name] = {
                "status": "skipped: budget spent",
                "seconds": 0,
                "command": _shown(table[name]),
                "figures": {},
            }
            continue
        results[name] = run_section(name, table[name], min(table[name]["limit"], left))
        print(
            f"{name}: {results[name]['status']} in {results[name]['seconds']} s {results[name]['figures']}",
            flush=True,
        )
    write(Path(args.out), results, derived(results), args.smoke, time.perf_counter() - begin)


def write(out: Path, results: dict, extra: dict, smoke: bool, seconds: float) -> None:
    import jax  # here: the driver itself needs JAX only for the header

    device = jax.devices()[0]
    header = f"## Device check: {device.platform} {device.device_kind}, jax {jax.__version__}{' (smoke)' if smoke else ''}, {seconds:.0f} s"
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "device": f"{device.platform} {device.device_kind}",
        "smoke": smoke,
        "seconds": round(seconds, 1),
    }
    (out / "device_check.json").write_text(
        json.dumps({**document, "sections": results, "derived": extra}, indent=2)
    )
    (out / "device_check.md").write_text(markdown(results, extra, header))
    print(markdown(results, extra, header))


# --- the in-process sections ------------------------------------------------------------------------


def matmul_peak(smoke: bool) -> dict:
    """TFLOP/s of a jitted bf16 ``jnp.dot`` (n x n by n x n, 2 n^3 flops), best of a few timed
    blocks; also the ResNet-50 training FLOPs per image at 224x224 (3x the forward pass's)."""
    import jax
    import jax.numpy as jnp

    size, calls = (256, 3) if smoke else (8192, 20)
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.bfloat16)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    best = float("inf")
    for _ in range(3):
        begin = time.perf_counter()
        for _ in range(calls):
            out = dot(a, b)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - begin) / calls)
    return {
        "n": size,
        "tflops": round(2 * size**3 / best / 1e12, 2),
        "resnet50_train_flops_per_image": resnet50_train_flops(smoke),
    }


def resnet50_train_flops(smoke: bool) -> float:
    """3x the forward FLOPs of one 224x224 image (32x32 in a smoke run), by XLA's cost analysis of
    the lowered (unoptimised) forward pass."""
    import jax
    import jax.numpy as jnp

    import jaxconv as jc

    size, net = (28, jc.models.get("convnet")) if smoke else (224, jc.models.get("resnet50_tv"))
    channels = 1 if smoke else 3
    _, params, state = jax.eval_shape(lambda: net.init(jax.random.key(0), (-1, size, size, channels)))
    image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    lowered = jax.jit(lambda p, s, x: net.apply(p, s, x, train=False)[0]).lower(params, state, image)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return 3.0 * float(cost["flops"])


def resnet50_jaxconv_mixed(smoke: bool) -> dict:
    """jaxconv's ResNet-50 under ``mixed_precision`` (bf16 compute): training images/s."""
    import jax
    import jax.numpy as jnp
    import optax

    import jaxconv as jc
    import jaxconv.train as jt

    batch, size, steps = (2, 28, 2) if smoke else (256, 224, 10)
    net = jc.mixed_precision(jc.models.get("convnet" if smoke else "resnet50_tv"))
    optimizer = optax.sgd(0.01, momentum=0.9)
    channels = 1 if smoke else 3
    train_state = jt.init_train_state(net, optimizer, (-1, size, size, channels), jax.random.key(0))
    step = jt.make_train_step(net, optimizer)
    images = jax.random.normal(jax.random.key(1), (batch, size, size, channels))
    labels = jnp.arange(batch) % 10
    begin = time.perf_counter()
    train_state, metrics = step(train_state, images, labels)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in range(steps):
        train_state, metrics = step(train_state, images, labels)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - begin) / steps
    return {"train_images_per_s": round(batch / seconds, 1), "first_step_s": round(first, 2), "batch": batch}


SECTIONS_IN_PROCESS = {"matmul_peak": matmul_peak, "resnet50_jaxconv_mixed": resnet50_jaxconv_mixed}


def _shown(spec: dict) -> str:
    words = [
        Path(word).name if word in (sys.executable, __file__) or word.endswith(".py") else word
        for word in spec["command"]
    ]
    env = " ".join(f"{key}={value}" for key, value in spec.get("env", {}).items())
    return f"{env} {' '.join(words)}".strip().replace(Path(sys.executable).name, "python", 1)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _scalar(value) -> bool:
    return isinstance(value, int | float | str | bool) and len(str(value)) < 80


def _short(value) -> str:
    return f"{value:,.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
