"""Normalisation statistics in one pass against two: ResNet-20's train step and its per-example
gradients with GroupNorm, in one process, interleaved.

jaxconv's BatchNorm, GroupNorm and LayerNorm take their mean and variance from
`jaxconv.layers.norm._moments`: one pass over the activations about a shift taken from the data.
The contender swaps in the two-pass form they used before (the mean, then the mean of the squares
about it) and builds the same steps; the losses of both are printed, and should agree to float32
rounding.

    python benchmarks/norm_moments.py [--repeats 10] [--batch 128]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import median_seconds

import jaxconv as jc
import jaxconv.layers.norm as norm
import jaxconv.train as jt
from jaxconv.per_example import net_loss, per_example_grads

ONE_PASS = norm._moments


def two_pass(
    x: jax.Array, axes: tuple[int, ...], axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """The moments as jaxconv computed them before: the mean, then the squares about it."""
    assert axis_name is None, "one device here"
    mean = jnp.mean(x, axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axes, keepdims=True)


def contenders(batch: int) -> dict[str, object]:
    """``{'<form> train': step, '<form> per-example': grads}``, built with each form in place."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch))
    optimizer = optax.sgd(0.01, momentum=0.9)
    found = {}
    for form, moments in (("two-pass", two_pass), ("one-pass", ONE_PASS)):
        norm._moments = moments  # read when the steps are traced, below
        net = jc.models.get("resnet20", num_classes=10)
        box = [jt.init_train_state(net, optimizer, (-1, 32, 32, 3), jax.random.key(0))]
        step = jt.make_train_step(net, optimizer)

        def train(step=step, box=box):
            box[0], metrics = step(box[0], images, labels)
            return metrics["loss"]

        print(f"{form}: losses {[float(train()) for _ in range(3)]}")
        grouped = jc.models.get("resnet20", norm="group")
        _, params, state = grouped.init(jax.random.key(0), (-1, 32, 32, 3))
        grads = per_example_grads(net_loss(grouped))

        def per_example(grads=grads, params=params, state=state):
            return grads(params, state, images[: batch // 2], labels[: batch // 2])

        jax.block_until_ready(per_example())  # traced now, with this form in place
        found |= {f"{form} train": train, f"{form} per-example": per_example}
    norm._moments = ONE_PASS
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="train batch; per-example gradients take half")
    args = parser.parse_args()
    seconds = median_seconds(contenders(args.batch), args.repeats)
    for name, value in seconds.items():
        print(f"{name:<22} {1e3 * value:8.1f} ms")
    for part in ("train", "per-example"):
        print(
            f"one pass / two: {part} {seconds[f'two-pass {part}'] / seconds[f'one-pass {part}']:.3f}x faster"
        )


if __name__ == "__main__":
    main()
