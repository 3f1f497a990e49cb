"""Peak memory of per-example clipped gradient sums: ghost clipping and book-keeping against vmap.

The net is CIFAR ResNet-20 with GroupNorm (``jc.models.get('resnet20', norm='group')``; BatchNorm
has no per-example gradient), batch 256 of (32, 32, 3) images, each example's gradient clipped to
L2 norm 1 and summed by `jaxconv.privacy.clipped_grad_sum`. The memory is XLA's own account of
each compiled function (``compiled.memory_analysis()``: temp + argument + output bytes), so
nothing runs; the strategies compile for the default backend.

    python benchmarks/ghost_memory.py [--batch-size 256] [--model resnet20] [--smoke]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jaxconv as jc
from jaxconv.per_example import net_loss
from jaxconv.privacy import clipped_grad_sum

STRATEGIES: dict[str, dict | None] = {
    "vmap": {"strategy": "vmap"},
    "einsum (book-keeping)": {"strategy": "einsum"},
    "ghost (two passes)": {"strategy": "ghost"},
    "chunked (16)": {"strategy": "chunked", "chunk_size": 16},
    "no clipping (reference)": None,
}


def compiled_bytes(
    net: jc.Layer, input_shape: tuple[int, ...], batch_size: int, options: dict | None
) -> dict[str, int]:
    """XLA's temp, argument and output bytes of the jitted clipped sum (``options=None``: the
    batch gradient without clipping, for reference), and their total."""
    _, params, state = net.init(jax.random.key(0), input_shape)
    x = jax.ShapeDtypeStruct((batch_size, *input_shape[1:]), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    fn = jax.grad(net_loss(net)) if options is None else clipped_grad_sum(net_loss(net), 1.0, **options)
    analysis = jax.jit(fn).lower(params, state, x, y, jax.random.key(1)).compile().memory_analysis()
    sizes = {
        "temp": analysis.temp_size_in_bytes,
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
    }
    return sizes | {"total": sum(sizes.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--smoke", action="store_true", help="batch 8: checks that it runs")
    args = parser.parse_args()
    batch_size = 8 if args.smoke else args.batch_size
    net = jc.models.get(args.model, norm="group")
    input_shape = jc.models.input_shape(args.model)
    print(
        f"{args.model} (norm='group'), batch {batch_size} of {input_shape[1:]}, backend {jax.default_backend()}"
    )
    print(
        f"\n{'strategy':24s} {'temp MB':>9s} {'args MB':>8s} {'out MB':>7s} {'total MB':>9s} {'/ vmap':>7s}"
    )
    baseline = None
    for name, options in STRATEGIES.items():
        sizes = compiled_bytes(net, input_shape, batch_size, options)
        baseline = baseline or sizes["total"]
        megabytes = {key: value / 2**20 for key, value in sizes.items()}
        print(
            f"{name:24s} {megabytes['temp']:9.1f} {megabytes['argument']:8.1f} {megabytes['output']:7.1f} "
            f"{megabytes['total']:9.1f} {sizes['total'] / baseline:7.3f}"
        )


if __name__ == "__main__":
    main()
