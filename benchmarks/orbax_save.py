"""How long an Orbax save of ResNet-50's training state holds the training loop: async against sync.

The state is what `jaxconv train` checkpoints each epoch for ``--model`` (default ``resnet50``,
~25.6M parameters): parameters, SGD momentum, BatchNorm statistics, step and key, shaped by
``jax.eval_shape`` of `jaxconv.train.init_train_state` and filled with random values. Each round
(interleaved, ``--repeats`` of them after one warm-up each) saves it as a new step:

- ``sync``: `jaxconv.train.OrbaxStore` with ``asynchronous=False``; the call returns once the
  step is written and committed;
- ``async``: the store `jaxconv train` uses; the time until `save` returns is what the training
  loop waits (a copy of the arrays on their device is dispatched; Orbax's bookkeeping, the
  transfer to the host and the files run in background threads); the time until the write is
  done is printed beside it.

It prints the medians and the ratio async-blocking / sync, which the issue asks to be at most
0.10. On a machine shared with other work the write times move; the ratio is of two medians
taken under the same load.

    python benchmarks/orbax_save.py [--repeats 5] [--model resnet50] [--dir /tmp/orbax_save]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

from jaxconv import models
from jaxconv.train import OrbaxStore, TrainState, count_params, init_train_state


def training_state(model: str) -> TrainState:
    """The model's train state with SGD momentum, every array filled with random values."""
    net = models.get(model, num_classes=1000)
    optimizer = optax.sgd(0.1, momentum=0.9)
    shape = (-1, *models.input_shape(model)[-3:])
    abstract = jax.eval_shape(lambda: init_train_state(net, optimizer, shape, jax.random.key(0)))
    rng = np.random.default_rng(0)

    def filled(leaf: jax.ShapeDtypeStruct) -> jax.Array:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jax.numpy.asarray(rng.standard_normal(leaf.shape).astype(leaf.dtype))

    return jax.tree_util.tree_map(filled, abstract)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orbax_save-", dir=args.dir))
    state = training_state(args.model)
    megabytes = sum(
        leaf.nbytes for leaf in jax.tree_util.tree_leaves(state) if leaf.dtype != jax.numpy.uint32
    )
    print(f"{args.model}: {count_params(state.params):,} parameters, {megabytes / 2**20:.0f} MiB of state")
    stores = {
        "sync": OrbaxStore(root / "sync", keep=args.repeats + 2, asynchronous=False),
        "async": OrbaxStore(root / "async", keep=args.repeats + 2),
    }
    times: dict[str, list[float]] = {"sync": [], "async": [], "async written": []}
    try:
        for step in range(args.repeats + 1):  # step 0 is the warm-up
            for name, store in stores.items():
                begin = time.perf_counter()
                store.save(step, state, {"step": step})
                returned = time.perf_counter() - begin
                store.wait()
                if step:
                    times[name].append(returned)
                    if name == "async":
                        times["async written"].append(time.perf_counter() - begin)
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(root, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"sync save (returns when written):     {median['sync'] * 1e3:8.1f} ms")
    print(f"async save, caller blocked:           {median['async'] * 1e3:8.1f} ms")
    print(f"async save, written in background by: {median['async written'] * 1e3:8.1f} ms")
    print(f"ratio async blocking / sync: {median['async'] / median['sync']:.3f} (asked: at most 0.10)")


if __name__ == "__main__":
    main()
