"""`fit_many` on 2 forced CPU devices, the model axis or the batch axis split, equals it on one;
with the model axis split, each device's loop over its own models (``strategy='loop'``, the
CPU's default) equals it too.

The runs happen in a subprocess: the device count is fixed when JAX starts its backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import xla_flags_with_devices

RUNS = Path(__file__).parents[1] / "runs"
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from synthetic import dataset, tiny_net
    from jaxconv.runs import TrainConfig, fit_many

    train, test = dataset(64), dataset(40, "test", seed=1)
    config = TrainConfig(
        model="tiny", epochs=1, batch_size=16, lr=3e-2, optimizer="sgd", augment="crop=2,flip",
        eval_batch_size=40, seed=3, tta="flip",
    )
    def run(devices, shard, strategy="vmap"):
        return fit_many(
            tiny_net(), train, test, TrainConfig(**{**config.__dict__, "devices": devices}),
            seeds=[3, 5, 7, 9], strategy=strategy, shard=shard, progress=False,
        )
    one = run(1, "models")
    out = {"devices": jax.device_count()}
    for name, shard, strategy in (("models", "models", "vmap"), ("batch", "batch", "vmap"), ("loop", "models", "auto")):
        split = run(2, shard, strategy)
        leaves = zip(jax.tree.leaves(split.train_state.params), jax.tree.leaves(one.train_state.params))
        out[name] = {
            "params": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in leaves),
            "shards": len(split.train_state.params["conv_0"]["kernel"].sharding.device_set),
            "loss": max(abs(a - b) for a, b in zip(split.history[-1]["train_loss"], one.history[-1]["train_loss"])),
            "top1": split.history[-1]["test_top1"] == one.history[-1]["test_top1"],
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def results() -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": xla_flags_with_devices(2),
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(RUNS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("shard", ["models", "batch", "loop"])
def test_the_split_program_equals_the_one_device_program(results, shard):
    assert results["devices"] == 2
    assert results[shard]["shards"] == 2  # the params live on both devices
    assert results[shard]["params"] < 1e-5 and results[shard]["loss"] < 1e-5
    assert results[shard]["top1"]
