"""`reuse_host_memory`: glibc keeps freed large blocks, so a CPU program's large output stops costing
fresh pages on every call. Counted by the kernel (minor page faults, `resource.getrusage`), in a
fresh process each (the settings are process-wide), against the same process without the call."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

import jaxconv as jc
from jaxconv.host_memory import reuse_host_memory


def glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "gnu_get_libc_version")
    except OSError:
        return False


CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    import jaxconv as jc
    from jaxconv.host_memory import reuse_host_memory
    from jaxconv.per_example import net_loss, per_example_grads

    taken = reuse_host_memory() if sys.argv[1] == "reuse" else None
    net = jc.serial(jc.Conv(8, 3, padding=1), jc.GroupNorm(2), jc.Relu, jc.Flatten, jc.Dense(128))
    _, params, state = net.init(jax.random.key(0), (-1, 28, 28, 1))
    x, y = jax.random.normal(jax.random.key(1), (16, 28, 28, 1)), jnp.arange(16) % 10
    grads_fn = jax.jit(per_example_grads(net_loss(net)))  # 51 MB of gradients per call
    for _ in range(6):  # the heap grows to its steady size
        jax.block_until_ready(grads_fn(params, state, x, y))
    faults_per_call = []
    for _ in range(9):  # the median: one call that meets a trimmed heap under load is not the rule
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(grads_fn(params, state, x, y))
        faults_per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = float(np.median(faults_per_call))
    grads = grads_fn(params, state, x, y)
    reference = jax.vmap(jax.grad(net_loss(net)), (None, None, 0, 0))(params, state, x[:4, None], y[:4, None])
    difference = max(
        float(np.max(np.abs(a[:4] - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference))
    )
    print(json.dumps({"taken": taken, "faults": faults, "difference": difference}))
    """
)


def child(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (sys.platform.startswith("linux") and glibc()), reason="glibc's mallopt")
def test_a_large_output_stops_faulting_in_fresh_pages_and_the_gradients_stay_the_same():
    plain, reused = child("plain"), child("reuse")
    pages = 16 * 28 * 28 * 8 * 128 * 4 / 4096  # the Dense kernel's gradients in 4 KiB pages
    assert plain["faults"] > 0.5 * pages  # glibc maps each call's output afresh
    assert reused["taken"] is True
    assert reused["faults"] < 0.01 * pages  # the freed block is served again
    assert plain["difference"] < 1e-5 and reused["difference"] < 1e-5  # vmap of grad, at float32


@pytest.mark.parametrize("threshold", [0, -5, 2**31, 1.5])
def test_a_threshold_outside_a_c_int_of_bytes_is_refused(threshold):
    with pytest.raises(ValueError, match=r"threshold_bytes=.*1\.\.2\*\*31 - 1"):
        reuse_host_memory(threshold_bytes=threshold)


def test_per_example_keeps_the_name_its_users_first_met():
    assert jc.per_example.reuse_host_memory is reuse_host_memory
