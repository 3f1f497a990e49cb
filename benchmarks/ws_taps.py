"""Weight-standardised convolutions through the per-example taps, against vmap.

De et al.'s DP net (``wrn16_4_dp``: WRN-16-4, GroupNorm, every convolution weight-standardised)
on 32x32x3: the clipped per-example gradient sum (clip 1) with jaxconv's default strategy, whose
taps now form each weight-standardised kernel's per-example gradients and pull them back through
the standardisation, against ``strategy='vmap'`` (what the default fell back to for these layers
before), and the per-example norms of both, compared. One process, interleaved repeats.

    python benchmarks/ws_taps.py [--batch-size 32] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds  # benchmarks/ is on the path when run as a script

import jaxconv as jc
from jaxconv.per_example import net_loss
from jaxconv.privacy import clipped_grad_sum

CLIP, CLASSES = 1.0, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="batch 2, 1 repeat: checks that it runs")
    args = parser.parse_args()
    batch_size, repeats = (2, 1) if args.smoke else (args.batch_size, args.repeats)
    net = jc.models.get("wrn16_4_dp", num_classes=CLASSES)
    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))
    x = jax.random.normal(jax.random.key(1), (batch_size, 32, 32, 3))
    y = jnp.arange(batch_size) % CLASSES
    compiled = {
        strategy: jax.jit(clipped_grad_sum(net_loss(net), CLIP, strategy=strategy))
        for strategy in ("auto", "vmap")
    }
    norms = {name: np.asarray(fn(params, state, x, y)[1]) for name, fn in compiled.items()}
    np.testing.assert_allclose(norms["auto"], norms["vmap"], rtol=1e-4)
    seconds = median_seconds(
        {name: (lambda fn=fn: fn(params, state, x, y)) for name, fn in compiled.items()}, repeats
    )
    for name, value in seconds.items():
        print(f"{name:>5}: {batch_size / value:8.1f} examples/s ({value * 1e3:8.1f} ms)")
    print(f"taps (auto) / vmap: {seconds['vmap'] / seconds['auto']:.2f}x; norms equal to rtol 1e-4")


if __name__ == "__main__":
    main()
