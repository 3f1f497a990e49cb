"""Host memory of CPU programs: glibc's 32 MiB limit, and keeping freed blocks for the next call.

On a CPU, XLA asks the C library (glibc's ``malloc``) for each output and temporary buffer of
every call. glibc serves a block over `HOST_BLOCK_BYTES` (32 MiB, its largest threshold for
serving from the heap) with a fresh ``mmap`` and gives it back with ``munmap``, so a program
whose outputs or temporaries exceed it touches them page by page on every call. jaxconv meets
this in three places: `jaxconv.inference.make_predict` runs a large batch in pieces whose
temporaries stay under the limit; ``per_example_grads``' ``out=`` hands the previous call's
buffers back to XLA (nothing process-wide); and `reuse_host_memory`, below, changes glibc's
settings for the whole process, as ``jaxconv train`` does for its own.

Materialised per-example gradients are large: the small Fashion-MNIST CNN's at batch 64 are
108 MB, ResNet-20's 69 MB. Measured at batch 64 on the small CNN: 27,000-29,000 minor page
faults and 45-50 ms of kernel time per call, more than the gradients' own arithmetic (30 ms),
which made ``per_example_grads`` 0.66x a jitted per-example loop whose 1.6 MB outputs glibc
recycles.

`reuse_host_memory` tells glibc to serve large blocks from its heap and keep freed ones
(``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``) and makes JAX run CPU programs on
the calling thread (``jax_cpu_enable_async_dispatch=False``): with asynchronous dispatch the
faults stayed, probably because XLA's worker threads allocate from glibc arenas whose heaps hold
at most 64 MiB. Afterwards the same call has under 100 page faults. Both settings are
process-wide: call it once, at the start of a CPU process that materialises per-example
gradients (or other large arrays) again and again. The cost: the process keeps up to
``threshold_bytes`` of freed memory rather than returning it, and on a CPU Python waits for
each computation (no overlap of Python and XLA). Accelerators are not concerned (their arrays are not in host memory); nothing is
changed where glibc is absent (macOS, musl). The same by hand: glibc's
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment
before Python starts, and ``jax.config.update("jax_cpu_enable_async_dispatch", False)``.
"""

from __future__ import annotations

import ctypes
import sys

import jax

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# glibc's largest threshold for serving a block from its heap (DEFAULT_MMAP_THRESHOLD_MAX on
# 64-bit): a larger block is a fresh mmap on every call, faulted in page by page (ResNet-20's
# inference pass at batch 256 keeps 88 MiB of temporaries: 22,500 faults)
HOST_BLOCK_BYTES = 32 * 2**20


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


__all__ = ["HOST_BLOCK_BYTES", "reuse_host_memory"]
