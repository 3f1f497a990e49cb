"""Host memory for large CPU outputs: keep freed memory for the next call instead of fresh pages.

(For the outputs alone there is a narrower remedy that changes nothing process-wide:
``per_example_grads``' ``out=``, which hands the previous call's buffers back to XLA.)

Materialised per-example gradients are large: the small Fashion-MNIST CNN's at batch 64 are
108 MB, ResNet-20's 69 MB. On a CPU, XLA asks the C library (glibc's ``malloc``) for each
output and temporary buffer of every call. glibc serves blocks over 32 MiB with a fresh
``mmap`` and gives them back with ``munmap`` when the array dies, so every call touches its
output page by page: measured at
batch 64 on the small CNN, 27,000-29,000 minor page faults and 45-50 ms of kernel time per
call, more than the gradients' own arithmetic (30 ms), which made ``per_example_grads`` 0.66x
a jitted per-example loop whose 1.6 MB outputs glibc recycles.

`reuse_host_memory` tells glibc to serve large blocks from its heap and keep freed ones
(``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``) and makes JAX run CPU programs on
the calling thread (``jax_cpu_enable_async_dispatch=False``): with asynchronous dispatch the
faults stayed, probably because XLA's worker threads allocate from glibc arenas whose heaps hold
at most 64 MiB. Afterwards the same call has under 100 page faults. Both settings are
process-wide: call it once, at the start of a CPU process that materialises per-example gradients (or other large
arrays) again and again. The cost: the process keeps up to ``threshold_bytes`` of freed memory
rather than returning it, and on a CPU Python waits for each computation (no overlap of Python
and XLA). Accelerators are not concerned (their arrays are not in host memory); nothing is
changed where glibc is absent (macOS, musl). The same by hand: glibc's
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment
before Python starts, and ``jax.config.update("jax_cpu_enable_async_dispatch", False)``.
"""

from __future__ import annotations

import ctypes
import sys

import jax

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def reuse_host_memory(*, threshold_bytes: int = 1 << 30, sync_dispatch: bool = True) -> bool:
    """Serve host blocks up to ``threshold_bytes`` from glibc's heap and keep freed ones; with
    ``sync_dispatch``, run JAX's CPU programs on the calling thread. Returns whether glibc took the
    settings (False, and nothing changed, without glibc). See the module docstring."""
    if not isinstance(threshold_bytes, int) or not 0 < threshold_bytes < 2**31:
        raise ValueError(
            f"reuse_host_memory(threshold_bytes={threshold_bytes!r}): give an int of bytes in 1..2**31 - 1"
        )
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    taken = (
        mallopt(M_MMAP_THRESHOLD, threshold_bytes) == 1 and mallopt(M_TRIM_THRESHOLD, threshold_bytes) == 1
    )
    if taken and sync_dispatch:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return taken


def _glibc_mallopt():
    """glibc's ``mallopt(param, value) -> 1 on success``, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it (musl's mallopt does nothing)
        return None
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


__all__ = ["reuse_host_memory"]
