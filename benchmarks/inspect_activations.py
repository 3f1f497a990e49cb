"""What keeping every layer's output costs: `jc.inspect.activations` against the plain forward pass.

ResNet-50 (jaxconv's zoo, 224x224, batch 8, evaluation mode, random weights), both jitted, timed
in interleaved rounds in one process (medians), so a shared machine's load falls on both alike.

    python benchmarks/inspect_activations.py --repeats 5
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
from _timing import median_seconds

from jaxconv import models
from jaxconv.inspect import activations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    net = models.get(args.model)
    _, params, state = jax.jit(lambda key: net.init(key, (-1, args.size, args.size, 3)))(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, 3), jnp.float32)
    forward = jax.jit(lambda params, state, x: net.apply(params, state, x)[0])
    outputs = activations(net, params, state, x)
    seconds = median_seconds(
        {
            "forward": lambda: forward(params, state, x),
            "activations": lambda: activations(net, params, state, x),
        },
        args.repeats,
    )
    kept = sum(leaf.size for leaf in jax.tree_util.tree_leaves(outputs))
    print(json.dumps({
        **vars(args), **{f"{name}_ms": round(1000 * value, 1) for name, value in seconds.items()},
        "ratio": round(seconds["activations"] / seconds["forward"], 3),
        "volumes": len(outputs), "values_kept": kept,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
