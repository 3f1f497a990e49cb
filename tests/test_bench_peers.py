"""The side-by-side benchmark (benchmarks/peers/run.py): a smoke run's table and JSON, and its options."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"
PACKAGES = {"jaxconv": "jaxconv", "stax": "jax", "flax_linen": "flax", "equinox": "equinox", "torch": "torch"}
# jaxconv's default model by hand: conv 3*3*1*32, BN 2*32, conv 3*3*32*64, BN 2*64,
# FC (7*7*64)*128 + 128, FC 128*10 + 10.
SMALL_CNN_PARAMS = 3 * 3 * 1 * 32 + 2 * 32 + 3 * 3 * 32 * 64 + 2 * 64 + 7 * 7 * 64 * 128 + 128 + 128 * 10 + 10


@pytest.fixture(scope="module")
def peers_module():
    sys.path.insert(0, str(PEERS))
    try:
        spec = importlib.util.spec_from_file_location("peers_run", PEERS / "run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(PEERS))


def installed(frameworks: list[str]) -> list[str]:
    return [name for name in frameworks if importlib.util.find_spec(PACKAGES[name]) is not None]


def test_quick_run_prints_one_table_and_writes_the_json(tmp_path):
    frameworks = installed(["jaxconv", "stax"])
    out = tmp_path / "peers.json"
    command = [sys.executable, str(PEERS / "run.py"), "--quick", "--steps", "1", "--json", str(out)]
    done = subprocess.run(
        [*command, "--frameworks", ",".join(frameworks)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "### small_cnn: 28x28x1, train batch 128, inference batch 128" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].split(" | ")[1:5] == ["train img/s", "infer img/s", "compile s", "peak MiB"]
    assert rows[1].startswith("| --- |")
    assert [row.split(" | ")[0][2:] for row in rows[2:]] == frameworks
    assert all(f"{SMALL_CNN_PARAMS:,}" in row for row in rows[2:])
    assert "jaxconv train vs fastest JAX peer (stax):" in done.stdout

    result = json.loads(out.read_text())
    for name in frameworks:
        summary = result["summaries"]["small_cnn"][name]
        assert summary["status"] == "ok" and summary["repeats"] == 1
        assert summary["params"] == [SMALL_CNN_PARAMS]
        for metric in ("train_images_per_s", "infer_images_per_s", "compile_s", "peak_memory_mib"):
            spread = summary[metric]
            assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        assert len(result["records"]["small_cnn"][name]) == 1
    assert set(result["ratios"]["small_cnn"]) == {
        "train vs fastest JAX peer (stax)",
        "compile vs quickest JAX peer (stax)",
    }


def test_quick_mode_and_lists(peers_module):
    args = peers_module.parse_args(["--quick", "--frameworks", "jaxconv,torch"])
    assert (args.workloads, args.frameworks, args.repeats, args.steps) == (
        ["small_cnn"],
        ["jaxconv", "torch"],
        1,
        2,
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--frameworks=jaxconv,mxnet", "unknown framework.*mxnet"),
        ("--workloads=vgg", "unknown workload.*vgg"),
    ],
)
def test_unknown_names_are_refused(peers_module, capsys, option, message):
    with pytest.raises(SystemExit):
        peers_module.parse_args([option])
    assert re.search(message, capsys.readouterr().err)


def test_a_failed_or_skipped_framework_is_reported_not_fatal(peers_module):
    records = [
        {"framework": "haiku", "workload": "small_cnn", "skipped": "not installed: No module named 'haiku'"}
    ]
    summary = peers_module.summarise(records)
    assert summary == {"status": "not installed: No module named 'haiku'"}
    table = peers_module.table("small_cnn", {"haiku": summary})
    assert "| haiku | skipped or failed: not installed" in table


def test_ratios_compare_with_the_fastest_and_quickest_jax_peers(peers_module):
    def summary(train: float, compile_s: float) -> dict:
        return {"status": "ok", "train_images_per_s": {"median": train}, "compile_s": {"median": compile_s}}

    summaries = {
        "jaxconv": summary(300.0, 4.0),
        "stax": summary(200.0, 5.0),
        "haiku": summary(250.0, 8.0),
        "equinox": {"status": "not installed"},
        "torch": summary(600.0, 1.0),
    }
    assert peers_module.ratios(summaries) == pytest.approx(
        {
            "train vs fastest JAX peer (haiku)": 300 / 250,
            "compile vs quickest JAX peer (stax)": 4 / 5,
            "train vs torch": 300 / 600,
        }
    )


FAULTS_CHILD = """
import ctypes, resource
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = []
for _ in range(6):  # a 48 MiB block, written, freed: glibc's default gives it fresh pages each time
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(48 * 2**20)
    ctypes.memset(block, 1, 48 * 2**20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[1:])[2])
"""


def test_keep_host_blocks_reaches_every_child_and_glibc_honours_it(peers_module, monkeypatch):
    def median_faults(env):
        done = subprocess.run([sys.executable, "-c", FAULTS_CHILD], capture_output=True, text=True, env=env)
        return int(done.stdout)

    pages = 12 * 2**20 * 4 // 4096  # 12,288 pages of 4 KiB
    assert median_faults({}) > pages // 2  # fresh pages on every allocation
    assert median_faults(peers_module.KEEP_HOST_BLOCKS) < pages // 20  # the freed block reused

    seen = {}

    def fake_run(command, env, **options):
        seen.update(env)
        return subprocess.CompletedProcess(command, 0, stdout='{"framework": "torch"}\n', stderr="")

    with monkeypatch.context() as patch:
        patch.setattr(peers_module.subprocess, "run", fake_run)
        peers_module.run_child("torch", "small_cnn", peers_module.parse_args(["--keep-host-blocks"]))
    assert {name: seen[name] for name in peers_module.KEEP_HOST_BLOCKS} == peers_module.KEEP_HOST_BLOCKS
