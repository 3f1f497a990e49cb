"""benchmarks/device_check.py: a smoke run on this CPU writes one JSON with every section and a
Markdown table naming them; the section table holds the commands the issue asks for."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FAST = ["matmul_peak", "cpu_switch_maxpool_tiled"]  # the quickest sections, for the unit test


@pytest.fixture(scope="module")
def device_check():
    spec = importlib.util.spec_from_file_location("device_check", BENCHMARKS / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sections_cover_the_issue_and_shrink_for_the_smoke(device_check):
    full, smoke = device_check.sections(False), device_check.sections(True)
    assert list(full) == list(smoke)
    expected = {"matmul_peak", "resnet50_jaxconv", "resnet50_flax", "resnet50_jaxconv_mixed", "per_example",
                "many_models", "device_dp", "cpu_switch_maxpool_tiled", "remat"}  # fmt: skip
    assert set(full) == expected and list(full)[-2:] == ["remat", "resnet50_jaxconv_mixed"]
    assert full["resnet50_flax"]["env"] == {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}
    assert full["resnet50_jaxconv"]["command"][-2:] == ["--batch", "256"]
    assert "--strategy" in full["many_models"]["command"] and "vmap" in full["many_models"]["command"]
    assert sum(spec["limit"] for spec in full.values()) > 450  # the budget, not the sum, bounds a run
    for name in smoke:
        assert smoke[name]["command"] != full[name]["command"], name


def test_figures_come_from_json_lines_regexes_and_switch_ratios(device_check):
    spec = {"ratio": device_check.CPU_SWITCHES["cpu_switch_maxpool_tiled"][1]}
    found = device_check.figures(
        "cpu_switch_maxpool_tiled", spec, "x\n  speed-up (reduce_window / tiled): 0.80x\n"
    )
    assert found == {"off_over_on": 0.8, "keep_on_here": False}
    found = device_check.figures(
        "many_models",
        {},
        'a\n{"steps_per_s": 2.5}\naggregate throughput ratio (8 together / one alone): 4.250\n',
    )
    assert found == {"steps_per_s": 2.5, "aggregate_ratio": "4.250"}
    results = {
        "matmul_peak": {"figures": {"tflops": 800.0, "resnet50_train_flops_per_image": 24.6e9}},
        "resnet50_jaxconv": {"figures": {"train_images_per_s": 3000.0, "infer_images_per_s": 9000.0}},
        "resnet50_flax": {"figures": {"train_images_per_s": 2500.0, "infer_images_per_s": 10000.0}},
    }
    derived = device_check.derived(results)
    assert derived["resnet50_train_images_per_s_jaxconv_over_flax"] == 1.2
    assert derived["resnet50_infer_images_per_s_jaxconv_over_flax"] == 0.9
    assert derived["resnet50_jaxconv_fraction_of_bf16_peak"] == round(3000 * 24.6e9 / 800e12, 4)


def test_a_smoke_run_writes_the_json_and_the_table(tmp_path):
    out = tmp_path / "check"
    command = [
        "bash",
        str(BENCHMARKS / "device_check.sh"),
        "--smoke",
        "--out",
        str(out),
        "--only",
        ",".join(FAST),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "device_check.json").read_text())
    assert document["smoke"] is True and document["device"].startswith("cpu")
    assert list(document["sections"]) == FAST
    for name, record in document["sections"].items():
        assert record["status"] == "ok", (name, record["tail"])
        assert {"status", "seconds", "command", "figures", "tail"} <= set(record)
    assert document["sections"]["matmul_peak"]["figures"]["tflops"] > 0
    assert isinstance(document["sections"]["cpu_switch_maxpool_tiled"]["figures"]["keep_on_here"], bool)
    table = (out / "device_check.md").read_text()
    assert table.startswith("## Device check: cpu")
    assert all(f"| {name} | ok |" in table for name in FAST)
    assert "tflops" in table and "pid" not in table  # the figures, not the bookkeeping


def _env() -> dict:
    return {**os.environ, "PYTHON": sys.executable}


@pytest.mark.slow
def test_the_whole_smoke_run_passes_every_section(tmp_path, device_check):
    """Every section, Opacus' included: it needs the ``bench`` extra (about 2 minutes)."""
    pytest.importorskip(
        "opacus", reason="the per-example section compares with Opacus: pip install -e '.[bench]'"
    )
    out = tmp_path / "check"
    command = ["bash", str(BENCHMARKS / "device_check.sh"), "--smoke", "--out", str(out), "--budget-s", "900"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "device_check.json").read_text())
    assert list(document["sections"]) == list(device_check.sections(True))
    failed = {
        name: record["tail"] for name, record in document["sections"].items() if record["status"] != "ok"
    }
    assert not failed
    assert "resnet50_train_images_per_s_jaxconv_over_flax" in document["derived"]
