"""jaxconv.distributed in this process (one CPU device): checks, errors, helpers.

The 8-device comparisons run in subprocesses (test_data_parallel.py, test_multiprocess.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

import jaxconv as jc
from jaxconv import distributed
from jaxconv.errors import DataParallelError

EIGHT = AbstractMesh((8,), ("data",))  # sizes only: enough for the batch arithmetic


def bn_net(axis_name: str | None = None) -> jc.Layer:
    return jc.serial(
        jc.Conv(4, 3, padding=1), jc.named("norm", jc.BatchNorm(axis_name=axis_name)), jc.Relu,
        jc.Flatten, jc.Dense(3),
    )  # fmt: skip


@pytest.mark.parametrize(("batch", "fix"), [(60, "56 or 64"), (4, "8"), (100, "96 or 104")])
def test_a_batch_that_does_not_split_names_the_sizes_and_the_nearest_fits(batch, fix):
    with pytest.raises(
        jc.ShapeError,
        match=rf"batch of {batch} examples does not split over the 8 devices.*use a batch size of {fix} \(a multiple of 8\)",
    ):
        distributed.check_batch(batch, EIGHT)
    distributed.check_batch(64, EIGHT)


def test_make_mesh_refuses_more_devices_than_there_are():
    with pytest.raises(
        DataParallelError,
        match=r"make_mesh\(devices=2\): there is 1 CPU device; ask for 1 to 1.*device_count=2",
    ):
        distributed.make_mesh(2)


def test_a_mesh_without_the_data_axis_is_refused():
    mesh = distributed.make_mesh(1, axis_name="batch")
    with pytest.raises(
        DataParallelError, match=r"mesh has axes \('batch',\) but the batch is split along 'data'"
    ):
        distributed.make_sharded_train_step(bn_net(), optax.sgd(0.1), mesh)
    distributed.make_sharded_train_step(bn_net(), optax.sgd(0.1), mesh, axis_name="batch")


def test_a_mesh_with_a_repeated_device_is_refused():
    device = jax.devices()[0]
    with pytest.raises(
        DataParallelError,
        match=r"mesh's 2 devices do not match this run's 1 CPU devices \(some devices repeat\)",
    ):
        distributed.check_mesh(jax.sharding.Mesh(np.array([device, device]), ("data",)))


def test_batch_norm_axes_are_listed_by_path():
    assert distributed.batch_norm_axes(bn_net("data")) == {"net/norm": "data"}
    assert distributed.batch_norm_axes(jc.serial(jc.Dense(2), jc.Relu)) == {}


def test_the_pmap_step_needs_batch_norm_synchronised_over_its_axis():
    mesh = distributed.make_mesh(1)
    with pytest.raises(
        DataParallelError,
        match=r"1 BatchNorm layers net/norm \(axis_name=None\): build them with BatchNorm\(axis_name='data'\)",
    ):
        distributed.make_pmap_train_step(bn_net(None), optax.sgd(0.1), mesh)
    with pytest.raises(DataParallelError, match=r"net/norm \(axis_name='batch'\)"):
        distributed.make_pmap_train_step(bn_net("batch"), optax.sgd(0.1), mesh)


def test_the_sharded_step_refuses_batch_norm_with_an_axis_name():
    with pytest.raises(
        DataParallelError,
        match=r"net/norm \(axis_name='data'\): this step sees the global batch, so build them with BatchNorm\(\)",
    ):
        distributed.make_sharded_train_step(bn_net("data"), optax.sgd(0.1), distributed.make_mesh(1))


def test_initialize_checks_the_process_id_before_starting_anything():
    with pytest.raises(
        DataParallelError, match=r"process_id=2 with num_processes=2: the ids of 2 processes are 0 to 1"
    ):
        distributed.initialize("localhost:1234", 2, 2)


def test_initialize_reads_the_environment(monkeypatch):
    monkeypatch.setenv("JAXCONV_COORDINATOR", "localhost:1234")
    monkeypatch.setenv("JAXCONV_NUM_PROCESSES", "two")
    with pytest.raises(DataParallelError, match=r"JAXCONV_NUM_PROCESSES='two' is not a whole number"):
        distributed.initialize()
    monkeypatch.setenv("JAXCONV_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAX_PROCESS_ID", "5")  # JAX's own name, read when jaxconv's is unset
    with pytest.raises(DataParallelError, match=r"process_id=5 with num_processes=3"):
        distributed.initialize()


def test_pmean_gradients_averages_over_the_named_axis_and_keeps_the_state():
    optimizer = optax.sgd(1.0, momentum=0.5)
    synchronised = distributed.pmean_gradients(optimizer, "data")
    params = jnp.zeros(3)
    state = synchronised.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(optimizer.init(params))
    grads = np.arange(12.0).reshape(4, 3)
    updates = jax.vmap(lambda g: synchronised.update(g, state, params)[0], axis_name="data")(grads)
    np.testing.assert_allclose(updates, -np.broadcast_to(grads.mean(0), (4, 3)))


def test_fsdp_splits_large_arrays_along_their_largest_divisible_axis():
    tree = {"kernel": jnp.zeros((3, 3, 16, 32)), "bias": jnp.zeros(32), "odd": jnp.zeros((3, 5, 7, 11))}
    shardings = distributed.fsdp_shardings(tree, EIGHT, min_size=1024)
    assert shardings["kernel"].spec == PartitionSpec(None, None, None, "data")
    assert shardings["bias"].spec == PartitionSpec()  # below min_size
    assert shardings["odd"].spec == PartitionSpec()  # no axis divisible by 8


def test_one_process_reads_the_whole_batch():
    assert distributed.process_rows(8, distributed.make_mesh(1)) == slice(0, 8)


def test_single_process_checkpoint_round_trip_keeps_values_and_placement(tmp_path, key):
    optimizer = optax.sgd(0.1, momentum=0.9)
    mesh = distributed.make_mesh(1)
    train_state = jc.train.init_train_state(bn_net(), optimizer, (-1, 4, 4, 1), key)
    placed = distributed.place_train_state(train_state, mesh)
    jc.train.save_checkpoint(tmp_path / "checkpoint.npz", placed, {"epoch": 1})
    restored, metadata = jc.train.load_checkpoint(tmp_path / "checkpoint.npz", like=placed)
    assert metadata == {"epoch": 1}
    for got, want in zip(jax.tree.leaves(restored.params), jax.tree.leaves(train_state.params), strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.sharding == distributed.replicated(mesh)
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(train_state.key))
