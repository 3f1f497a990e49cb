"""Two processes on localhost (CPU, gloo collectives) train like one process on the same batches,
and save and restore a state split over both through Orbax, each writing its shards."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "runs"))
from helpers import xla_flags_with_devices
from synthetic import orbax_arrays

WORKER = Path(__file__).with_name("multiprocess_worker.py")
PROCESSES = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_equal_one_and_share_a_checkpoint(tmp_path):
    port = free_port()
    workers = []
    for process in range(PROCESSES):
        env = {
            **os.environ,
            "JAXCONV_COORDINATOR": f"localhost:{port}",
            "JAXCONV_NUM_PROCESSES": str(PROCESSES),
            "JAXCONV_PROCESS_ID": str(process),
            "XLA_FLAGS": xla_flags_with_devices(2),
            "JAX_PLATFORMS": "cpu",
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]

    for process in range(PROCESSES):
        result = json.loads((tmp_path / f"result_{process}.json").read_text())
        assert (result["process"], result["processes"]) == (process, PROCESSES)
        assert (result["devices"], result["local_devices"]) == (4, 2)
        assert result["rows"] == [8 * process, 8 * process + 8]  # its half of each batch of 16
        assert result["steps"] == 4
        assert result["restored_equal"]
        assert result["orbax_equal"]
        assert result["params"] < 1e-5
        assert result["state"] < 1e-5
        assert result["loss"] < 1e-5
    assert (tmp_path / "checkpoint.npz").is_file()

    # the Orbax checkpoint read in this one process: the split parameter whole, the train state
    # equal to the one process 0 gathered into final.npz
    metadata, arrays = orbax_arrays(tmp_path / "orbax" / "4")
    assert metadata == {"step": 4}
    np.testing.assert_array_equal(arrays["['fsdp']"], np.arange(24, dtype=np.float32).reshape(8, 3))
    with np.load(tmp_path / "final.npz") as final:
        manifest = json.loads(final["__manifest__"].tobytes())
        for i, path in enumerate(manifest["paths"]):  # .params['c'] in the .npz is ['params']['c'] in Orbax
            np.testing.assert_array_equal(
                arrays["['train']" + re.sub(r"\.(\w+)", r"['\1']", path)], final[f"leaf_{i}"]
            )
    shards = sorted(
        path.name for path in (tmp_path / "orbax" / "4" / "state").iterdir() if "process" in path.name
    )
    assert shards == ["ocdbt.process_0", "ocdbt.process_1"]  # each process wrote its own shards
