"""The deletion test: do the attribution maps point at the pixels the net uses?

On a trained run (default: the default model on Fashion-MNIST, `jaxconv train --run-dir
/tmp/inspect-run`), for each of the first N test images, set the 20% of pixels with the highest
attribution for the true class to the dataset mean (0 after normalisation) and measure how much
the true class's softmax probability drops; compare Grad-CAM (the last convolution block's
output, after its BatchNorm and ReLU, or ``--layer``), saliency (max |gradient| over
channels), occlusion (6x6 windows, stride 3) and a random 20% (and a random 20% in blobs as
coherent as Grad-CAM's, ``random_blobs``). Two readings of "the dataset mean": the mean pixel
value (0 after normalisation, ``dataset_mean``) and the per-pixel mean training image
(``mean_image``).

    python benchmarks/inspect_deletion.py --run-dir /tmp/inspect-run --images 1000
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.inspect import as_path, grad_cam, last_conv_path, occlusion, saliency
from jaxconv.runs import restore

METHODS = ("grad_cam", "saliency", "occlusion", "random", "random_blobs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="/tmp/inspect-run")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--layer", help="Grad-CAM's layer path (default: the last Conv)")
    args = parser.parse_args()
    trained = restore(args.run_dir)
    net, params, state = trained.net, trained.params, trained.state
    layer = as_path(args.layer) if args.layer else last_conv_path(net, through_elementwise=True)
    probability = jax.jit(
        lambda x, y: jnp.take_along_axis(jax.nn.softmax(net.apply(params, state, x)[0]), y[:, None], 1)[:, 0]
    )
    mean_image = trained.preprocess(trained.train_data.images.mean(axis=0, keepdims=True) / 255)  # per pixel
    baselines = {"dataset_mean": jnp.zeros_like(mean_image), "mean_image": mean_image}
    drops = {(b, m): [] for b in baselines for m in METHODS}
    before_all = []
    rng, started = np.random.default_rng(0), time.perf_counter()
    for begin in range(0, args.images, args.batch):
        images = trained.test_data.images[begin : min(begin + args.batch, args.images)]
        x, y = trained.preprocess(images), jnp.asarray(trained.test_data.labels[begin : begin + len(images)])
        maps = {
            "grad_cam": grad_cam(net, params, state, x, layer=layer, target=y),
            "saliency": saliency(net, params, state, x, target=y).max(axis=-1),
            "occlusion": occlusion(net, params, state, x, window=6, stride=3, target=y),
            "random": jnp.asarray(rng.random(x.shape[:3], np.float32)),
            "random_blobs": _blobs(rng, x.shape[:3]),
        }
        before = probability(x, y)
        before_all.append(np.asarray(before))
        for (baseline, name), found in drops.items():
            deleted = _deleted(x, maps[name], args.fraction, baselines[baseline])
            found.append(np.asarray(before - probability(deleted, y)))
    # No deletion can lower the probability by more than it was: the mean true-class probability
    # bounds every method's drop, and so bounds every method's ratio to random.
    ceiling = float(np.concatenate(before_all).mean())
    result: dict = {"images": args.images, "fraction": args.fraction, "layer": "/".join(layer)}
    result["true_class_probability"] = ceiling
    for baseline in baselines:
        mean = {name: float(np.concatenate(drops[baseline, name]).mean()) for name in METHODS}
        ratios = {f"{name}_over_random": mean[name] / mean["random"] for name in METHODS[:3]}
        result[baseline] = mean | ratios | {"largest_possible_over_random": ceiling / mean["random"]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> jax.Array:
    """A random map as smooth as Grad-CAM's: uniform noise at a quarter of the resolution, resized."""
    coarse = jnp.asarray(rng.random((shape[0], shape[1] // 4, shape[2] // 4), np.float32))
    return jax.image.resize(coarse, shape, "linear")


def _deleted(x: jax.Array, heat: jax.Array, fraction: float, baseline: jax.Array) -> jax.Array:
    """x with the ``fraction`` of pixels of highest ``heat`` (N, H, W) set to ``baseline``."""
    flat = heat.reshape(heat.shape[0], -1)
    count = round(fraction * flat.shape[1])
    ranks = jnp.argsort(jnp.argsort(-flat, axis=1, stable=True), axis=1)  # ties broken by position
    keep = (ranks >= count).reshape(heat.shape)[..., None]
    return jnp.where(keep, x, baseline)


if __name__ == "__main__":
    main()
