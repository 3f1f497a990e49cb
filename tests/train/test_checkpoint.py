"""Checkpoints: exact round trips, atomic saves, and clear errors for damaged or foreign files."""

from __future__ import annotations

import os
import threading
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxconv.train.checkpoint as checkpoint
from jaxconv.errors import CheckpointError
from jaxconv.train import TrainState, load_checkpoint, read_metadata, save_checkpoint
from jaxconv.train.checkpoint import save_checkpoint_in_background


def make_state(scale: float = 1.0) -> TrainState:
    params = {
        "conv_0": {"kernel": scale * jnp.arange(24.0).reshape(2, 2, 2, 3)},
        "dense": {"bias": jnp.ones(3)},
    }
    optimizer = optax.adamw(1e-3)
    return TrainState(
        params,
        {"batchnorm_1": {"mean": jnp.full(3, 0.5 * scale)}},
        optimizer.init(params),
        jnp.asarray(7, jnp.int32),
        jax.random.key(42),
    )


def leaves_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_restores_every_leaf_exactly_with_metadata(tmp_path):
    state = make_state()
    path = save_checkpoint(tmp_path / "checkpoint.npz", state, {"epoch": 3})
    restored, metadata = load_checkpoint(path, like=make_state(scale=0.0))
    leaves_equal(restored, state)
    assert metadata == {"epoch": 3} == read_metadata(path)
    # the restored key draws the same numbers as the saved one
    np.testing.assert_array_equal(jax.random.uniform(restored.key, (3,)), jax.random.uniform(state.key, (3,)))


def test_file_is_a_plain_npz_named_by_key_paths(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"a": {"b": np.arange(3)}})
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["leaf_0"], [0, 1, 2])
        assert b"['a']['b']" in archive["__manifest__"].tobytes()


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint.npz", make_state(), {"epoch": 1})
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_state(scale=2.0), {"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # no temporary file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.npz", make_state())
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(
        CheckpointError, match=r"checkpoint\.npz is not a readable jaxconv checkpoint.*truncated or corrupt"
    ):
        load_checkpoint(path, like=make_state())


def test_flipped_bytes_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.npz", make_state())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("leaf_0.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF  # inside leaf_0's array bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path, like=make_state())


def test_a_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.npz", make_state())
    other = make_state()._replace(
        params={"conv_0": {"kernel": jnp.zeros((3, 3, 2, 3))}, "dense": {"bias": jnp.ones(3)}}
    )
    other = other._replace(opt_state=make_state().opt_state)
    with pytest.raises(
        CheckpointError,
        match=r"\['conv_0'\]\['kernel'\] is float32\[2, 2, 2, 3\] in the file but float32\[3, 3, 2, 3\]",
    ):
        load_checkpoint(path, like=other)
    with pytest.raises(
        CheckpointError, match=r"does not fit this model and optimiser: missing .*\['extra'\]"
    ):
        load_checkpoint(path, like=make_state()._replace(state={"extra": jnp.zeros(1)}))


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing.npz", like={})
    np.savez(tmp_path / "foreign.npz", x=np.zeros(2))
    with pytest.raises(CheckpointError, match="not a readable jaxconv checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz", like={})


def test_a_background_save_writes_the_values_of_its_call_even_when_the_state_is_donated(
    tmp_path, monkeypatch
):
    """The train step donates its state right after a run starts writing best.npz: the file must
    hold the values the save was given, and an error in the writing thread comes out of wait."""
    donated, write = threading.Event(), checkpoint._write
    monkeypatch.setattr(checkpoint, "_write", lambda *args: donated.wait(60) and write(*args))
    state, expected = make_state(scale=3.0), make_state(scale=3.0)
    wait = save_checkpoint_in_background(tmp_path / "best.npz", state, {"epoch": 2})
    overwrite = jax.jit(lambda tree: tree._replace(params=jax.tree_util.tree_map(lambda leaf: -leaf, tree.params)),
                        donate_argnums=0)  # fmt: skip
    jax.block_until_ready(overwrite(state))
    donated.set()  # the thread writes only now
    assert wait() == tmp_path / "best.npz"
    restored, metadata = load_checkpoint(tmp_path / "best.npz", like=make_state(scale=0.0))
    leaves_equal(restored, expected)
    assert metadata == {"epoch": 2}
    (tmp_path / "folder").mkdir()
    wait = save_checkpoint_in_background(tmp_path / "folder", make_state(), {})  # a directory: fails
    with pytest.raises(IsADirectoryError):
        wait()
