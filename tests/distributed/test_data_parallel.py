"""Data-parallel steps on 8 forced CPU devices equal the single-device step.

The work runs once, in a subprocess (`data_parallel_runner.py`): the device count
is fixed when JAX starts its backend, and this test session's JAX runs on one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import xla_flags_with_devices

RUNNER = Path(__file__).with_name("data_parallel_runner.py")
TOLERANCE = 1e-5  # relative: max |a - b| / max |b| over each leaf


@pytest.fixture(scope="module")
def results() -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": xla_flags_with_devices(8),
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, str(RUNNER)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_the_runner_sees_eight_devices(results):
    assert results["device_count"] == 8


CASES = ["bn_jit", "bn_pmap", "bn_fsdp", "dropout_jit", "dropout_devices_8", "dropout_pmap", "augment_pmap"]


@pytest.mark.parametrize("case", CASES)
def test_data_parallel_steps_equal_the_single_device_step(results, case):
    """Two steps on a global batch of 64: parameters, BatchNorm statistics and losses. The pmap
    step draws Dropout and StochasticDepth masks (``axis_name='data'``) and random crops and
    flips (``augment_pmap``) for the global batch, so it equals the single-device step too."""
    result = results[case]
    assert result["steps"] == 2
    assert result["params"] < TOLERANCE
    assert result["state"] < TOLERANCE
    assert result["loss"] < TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_steps_stay_on_all_devices_without_recompiling(results, case):
    result = results[case]
    assert result["devices"] == 8
    assert result["recompiles"] == 0


def test_fsdp_splits_the_large_leaves_and_the_others_are_replicated(results):
    assert results["bn_fsdp"]["split_leaves"] == 2  # the Dense kernel and its momentum
    assert results["bn_jit"]["split_leaves"] == 0
    assert results["bn_pmap"]["split_leaves"] == 0


@pytest.mark.parametrize(
    ("case", "kind", "pattern"),
    [
        (
            "jit_batch",
            "ShapeError",
            r"global batch of 60 examples does not split over the 8 devices.*60 / 8 = 7\.5.*56 or 64",
        ),
        ("pmap_batch", "ShapeError", r"global batch of 60 examples.*use a batch size of 56 or 64"),
        ("shard_batch", "ShapeError", r"global batch of 12 examples.*12 / 8 = 1\.5.*8 or 16"),
        ("labels", "DataParallelError", r"64 images but 56 labels"),
        (
            "mesh_too_big",
            "DataParallelError",
            r"make_mesh\(devices=16\): there are 8 CPU devices; ask for 1 to 8",
        ),
        ("mesh_axis", "DataParallelError", r"mesh has axes \('batch',\) but the batch is split along 'data'"),
        (
            "pmap_dropout",
            "DataParallelError",
            r"make_pmap_train_step: 2 Dropout or StochasticDepth layers "
            r"net/residual_2/body/stochasticdepth_1 \(axis_name=None\), net/dropout_4 \(axis_name=None\): "
            r"build them with Dropout\(rate, axis_name='data'\) \(StochasticDepth likewise\)",
        ),
        (
            "jit_dropout",
            "DataParallelError",
            r"make_sharded_train_step: 2 Dropout or StochasticDepth layers .*\(axis_name='data'\).*"
            r"this step sees the global batch, so build them with Dropout\(rate\) \(no axis_name\)",
        ),
    ],
)
def test_bad_batches_and_meshes_fail_before_compiling(results, case, kind, pattern):
    error = results["errors"][case]
    assert error["type"] == kind
    assert re.search(pattern, error["message"]), error["message"]
    assert error["compiled"] == 0


@pytest.mark.parametrize("size", ["64", "12"])
def test_the_sharded_eval_step_equals_the_single_device_one(results, size):
    """A batch of 64 is split over the devices; the last batch of 12 does not split, runs whole."""
    assert results["eval"][size] < TOLERANCE


def test_fit_with_devices_equals_one_device(results):
    """`jaxconv train --devices 8`: one epoch of the fit loop, parameters and accuracy as on one device."""
    assert results["fit"]["params"] < TOLERANCE
    assert results["fit"]["state"] < TOLERANCE
    assert results["fit"]["top1"] == 0 and results["fit"]["loss"] < 1e-4
