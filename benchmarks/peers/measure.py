"""One measurement in this process: ``python measure.py FRAMEWORK WORKLOAD`` prints one JSON line.

The driver (``run.py``) starts one such process per framework and repeat, so no framework
sees another's compilation caches, threads or memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

# compile times are measured: a persistent XLA cache from the environment would hand back programs
# compiled by an earlier process (JAX reads this when it is first imported, below); only in the
# measuring process, not in one that imports this module for its tables (run.py, the tests)
if __name__ == "__main__":
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

from harness import max_rss_bytes, measure
from workloads import CPU_RESOLUTION, WORKLOADS

FRAMEWORKS = {  # name -> (module here, keyword options of its build)
    "jaxconv": ("peer_jaxconv", {}),
    "stax": ("peer_stax", {}),
    "flax_linen": ("peer_flax_linen", {}),
    "flax_nnx": ("peer_flax_nnx", {}),
    "equinox": ("peer_equinox", {}),
    "haiku": ("peer_haiku", {}),
    "torch": ("peer_torch", {"compile": False}),
    "torch_compile": ("peer_torch", {"compile": True}),
}
JAX_PEERS = ("stax", "flax_linen", "flax_nnx", "equinox", "haiku")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=sorted(FRAMEWORKS))
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--steps", type=int, help="calls per timed block (default: the workload's)")
    parser.add_argument("--resolution", type=int, help="square input size (default: the workload's)")
    parser.add_argument("--batch", type=int, help="training and inference batch (default: the workload's)")
    args = parser.parse_args()
    module_name, options = FRAMEWORKS[args.framework]
    record = {"framework": args.framework, "workload": args.workload, "pid": os.getpid()}
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # a peer that is not installed is skipped, not failed
        print(json.dumps({**record, "skipped": f"not installed: {error}"}))
        return
    workload = WORKLOADS[args.workload]
    workload = workload.sized(args.resolution or default_resolution(args.workload), args.batch)
    record.update(image_shape=workload.image_shape, train_batch=workload.train_batch)
    record["infer_batch"] = workload.infer_batch
    try:
        rss_before = max_rss_bytes()
        contestant = module.build(workload, **options)
        record.update(measure(contestant, workload, args.steps or workload.steps))
        record["max_rss_delta_mib"] = (max_rss_bytes() - rss_before) / 2**20
    except Exception as error:  # reported in the table, the other contestants go on
        traceback.print_exc(file=sys.stderr)
        record["failed"] = f"{type(error).__name__}: {error}"[:300]
    print(json.dumps(record))


def default_resolution(workload: str) -> int | None:
    """A reduced resolution for ResNet-50 when JAX's default device is a CPU."""
    if workload not in CPU_RESOLUTION:
        return None
    import jax

    return CPU_RESOLUTION[workload] if jax.default_backend() == "cpu" else None


if __name__ == "__main__":
    main()
