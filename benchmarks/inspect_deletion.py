"""The deletion test: do the attribution maps point at the pixels the net uses?

On a trained run (default: the default model on Fashion-MNIST, `jaxconv train --run-dir
/tmp/inspect-run`), for each of the first N test images, set the 20% of pixels with the highest
attribution for the true class to the dataset mean (0 after normalisation) and measure how much
the true class's softmax probability drops; compare Grad-CAM (last convolution), saliency
(max |gradient| over channels), occlusion (6x6 windows, stride 3) and a random 20%.

    python benchmarks/inspect_deletion.py --run-dir /tmp/inspect-run --images 1000
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.inspect import grad_cam, last_conv_path, occlusion, saliency
from jaxconv.runs import restore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="/tmp/inspect-run")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    trained = restore(args.run_dir)
    net, params, state = trained.net, trained.params, trained.state
    layer = last_conv_path(net)
    probability = jax.jit(
        lambda x, y: jnp.take_along_axis(jax.nn.softmax(net.apply(params, state, x)[0]), y[:, None], 1)[:, 0]
    )
    drops: dict[str, list[np.ndarray]] = {
        name: [] for name in ("grad_cam", "saliency", "occlusion", "random")
    }
    rng, started = np.random.default_rng(0), time.perf_counter()
    for begin in range(0, args.images, args.batch):
        images = trained.test_data.images[begin : min(begin + args.batch, args.images)]
        x, y = trained.preprocess(images), jnp.asarray(trained.test_data.labels[begin : begin + len(images)])
        maps = {
            "grad_cam": grad_cam(net, params, state, x, layer=layer, target=y),
            "saliency": saliency(net, params, state, x, target=y).max(axis=-1),
            "occlusion": occlusion(net, params, state, x, window=6, stride=3, target=y),
            "random": jnp.asarray(rng.random(x.shape[:3], np.float32)),
        }
        before = probability(x, y)
        for name, heat in maps.items():
            drops[name].append(np.asarray(before - probability(_deleted(x, heat, args.fraction), y)))
    result = {name: float(np.concatenate(values).mean()) for name, values in drops.items()}
    result |= {
        f"{name}_over_random": result[name] / result["random"]
        for name in ("grad_cam", "saliency", "occlusion")
    }
    result |= {
        "images": args.images,
        "fraction": args.fraction,
        "layer": "/".join(layer),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=1))


def _deleted(x: jax.Array, heat: jax.Array, fraction: float) -> jax.Array:
    """x with the ``fraction`` of pixels of highest ``heat`` (N, H, W) set to 0 (the dataset mean)."""
    flat = heat.reshape(heat.shape[0], -1)
    count = round(fraction * flat.shape[1])
    ranks = jnp.argsort(jnp.argsort(-flat, axis=1, stable=True), axis=1)  # ties broken by position
    keep = (ranks >= count).reshape(heat.shape)[..., None]
    return x * keep


if __name__ == "__main__":
    main()
