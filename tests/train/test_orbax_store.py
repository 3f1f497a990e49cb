"""A run's Orbax checkpoints: the whole train state comes back bit for bit, the last N are kept,
damaged or foreign steps are named errors, and neither a full disk nor a SIGKILL in the middle of
a save leaves anything but the previous step to restore."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv as jc
from jaxconv.errors import CheckpointError
from jaxconv.train import OrbaxStore, init_train_state, make_train_step, with_ema


@functools.cache
def _program(classes: int) -> tuple:
    net = jc.serial(jc.Conv(4, 3, padding=1), jc.BatchNorm(), jc.Relu, jc.Flatten, jc.Dense(classes))
    optimizer = with_ema(optax.sgd(0.1, momentum=0.9), 0.9)
    return net, optimizer, make_train_step(net, optimizer)


@functools.cache
def trained_state(seed: int = 0, classes: int = 3) -> jc.train.TrainState:
    """Two steps of a conv + BatchNorm net with momentum and an EMA: every kind of leaf a run saves
    (params, BN statistics, momentum, EMA, the schedule's count, the step and the typed key).
    Cached: neither saving nor restoring changes it."""
    net, optimizer, step = _program(classes)
    state = init_train_state(net, optimizer, (-1, 6, 6, 1), jax.random.key(seed))
    images = jax.random.normal(jax.random.key(seed + 1), (8, 6, 6, 1))
    for _ in range(2):
        state, _ = step(state, images, jnp.arange(8) % classes)
    return state


def host_leaves(tree) -> list[np.ndarray]:
    """Every leaf as NumPy, a key as its key data, copied before any step can donate it."""
    tree = tree._replace(key=jax.random.key_data(tree.key))
    return [np.array(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_the_whole_train_state_comes_back_bit_for_bit_and_the_last_three_are_kept(tmp_path):
    states = [trained_state(seed) for seed in range(4)]
    expected = [host_leaves(state) for state in states]
    store = OrbaxStore(tmp_path / "orbax", keep=3)
    for step, state in enumerate(states, start=1):
        store.save(step * 10, state, {"epoch": step, "data": {"position": step}})
    store.close()
    assert sorted(os.listdir(tmp_path / "orbax")) == ["20", "30", "40"]
    reader = OrbaxStore(tmp_path / "orbax", writer=False)
    assert reader.steps() == [20, 30, 40]
    for step in (30, None):  # a chosen step, and the latest
        restored, metadata = reader.restore(like=trained_state(seed=9), step=step)
        index = 2 if step == 30 else 3
        assert metadata == {"epoch": index + 1, "data": {"position": index + 1}}
        for got, want in zip(host_leaves(restored), expected[index], strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        assert jax.random.key_impl(restored.key) == jax.random.key_impl(states[0].key)
    reader.close()


def test_a_step_of_another_model_or_none_at_all_is_a_named_error(tmp_path):
    store = OrbaxStore(tmp_path / "orbax")
    with pytest.raises(CheckpointError, match=r"orbax holds no complete checkpoint \(steps: none\).*new run"):
        store.restore(like=trained_state())
    store.save(5, trained_state(classes=3), {"epoch": 1})
    store.save(6, trained_state(classes=3), {"epoch": 2})
    with pytest.raises(CheckpointError, match=r"not after the latest saved step 6"):
        store.save(6, trained_state(), {})
    with pytest.raises(
        CheckpointError,
        match=r"orbax/6 does not fit this model.*dense_\d+'\]\['bias'\] is float32\[3\] saved, float32\[4\] here",
    ):
        store.restore(like=trained_state(classes=4))
    with pytest.raises(CheckpointError, match=r"no complete checkpoint of step 7 \(steps: \[5, 6\]\)"):
        store.restore(like=trained_state(), step=7)
    shutil.rmtree(tmp_path / "orbax" / "6" / "state" / "d", ignore_errors=True)
    for path in (tmp_path / "orbax" / "6" / "state").rglob("*"):
        if path.is_file() and "ocdbt" in str(path):
            path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"orbax/6 to resume from step 5, the one before"):
        store.restore(like=trained_state())
    store.close()


WORKER = textwrap.dedent(
    """
    import asyncio, resource, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from jaxconv.train import OrbaxStore

    directory, how = sys.argv[1], sys.argv[2]
    store = OrbaxStore(directory)
    store.save(1, {"w": jnp.ones(1000, jnp.float32)}, {"epoch": 1})
    store.wait()
    if how == "kill":  # stop the save of step 2 after its arrays are written, before it is committed
        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def held(self, *args, **kwargs):
            if self.get_final().name == "2":
                print("written", flush=True)
                await asyncio.sleep(3600)
            return await finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = held
    else:  # a file-size limit stands for a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    store.save(2, {"w": jnp.arange(10**6, dtype=jnp.float32)}, {"epoch": 2})
    store.close()
    """
)


@pytest.mark.parametrize("how", ["kill", "full"])
def test_a_save_killed_or_out_of_disk_leaves_the_previous_step(tmp_path, how):
    directory = tmp_path / "orbax"
    command = [sys.executable, "-c", WORKER, str(directory), how]
    if how == "kill":
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ) as process:
            assert process.stdout.readline() == "written\n"
            os.kill(process.pid, signal.SIGKILL)
    else:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("jaxconv.errors.DiskFullError: cannot write") and "File too large" in last
        assert "(the previous checkpoint is kept)" in last
    assert [path.name for path in directory.iterdir() if path.name.startswith("2.")]  # the torn save
    store = OrbaxStore(directory)
    assert store.steps() == [1]
    restored, metadata = store.restore(like={"w": jnp.zeros(1000, jnp.float32)})
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.ones(1000, np.float32))
    assert metadata == {"epoch": 1}
    store.save(2, restored, {"epoch": 2})  # the run continues: the torn save is removed first
    store.close()
    assert sorted(os.listdir(directory)) == ["1", "2"]


def test_the_train_step_may_donate_the_state_as_soon_as_save_returns(tmp_path, monkeypatch):
    """`save` returns before Orbax reads the arrays (held back here until the steps after it are
    done): those steps donate and overwrite the saved buffers, and the step on disk is still the
    state as it was when `save` was called."""
    net, optimizer, step = _program(3)
    state = init_train_state(net, optimizer, (-1, 6, 6, 1), jax.random.key(7))
    expected = host_leaves(state)
    stepped = threading.Event()
    start = OrbaxStore._start
    monkeypatch.setattr(OrbaxStore, "_start", lambda self, *args: (stepped.wait(60), start(self, *args)))
    store = OrbaxStore(tmp_path / "orbax")
    store.save(1, state, {})
    images = jax.random.normal(jax.random.key(8), (8, 6, 6, 1))
    for _ in range(3):  # the first call donates the saved buffers
        state, _ = step(state, images, jnp.arange(8) % 3)
    jax.block_until_ready(state)
    stepped.set()
    store.close()
    restored, _ = OrbaxStore(tmp_path / "orbax", writer=False).restore(like=state)
    for got, want in zip(host_leaves(restored), expected, strict=True):
        np.testing.assert_array_equal(got, want)
