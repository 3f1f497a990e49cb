"""An image folder through Grain against the default model's training step.

A folder of ``--images`` generated 64x64 RGB JPEGs in 10 classes (written once into ``--dir``)
is read as `jaxconv train --data` reads it, at the default model's input (28x28x1, so each image
is decoded, converted to grayscale, resized to 9/8 and cropped), ``--workers`` Grain processes:

- (a) ``pipeline``: one epoch of `jaxconv.data.batches` over the folder, every batch on the
  device, from the first batch on (the workers' start is timed apart), decoding every image;
- (b) ``pipeline 64x64x3``: the same at 64x64 RGB, the images' own size;
- (b') the same from the folder's pixel cache (filled by one epoch before), as every epoch
  after the first reads it;
- (c) ``train step``: the default model's jitted train step on one fixed batch, ``--steps``;
  (c') the same at 64x64x3, the step that training on this folder at its own size runs;
- (d) ``end to end``: ``--steps`` train steps, each on the folder's next batch, decoding; (d')
  the same from the pixel cache.

It prints the images per second of each, the ratios to (c), and the peak
resident memory of this process and of its largest worker (``getrusage``), which stays at a few
batches whatever the folder's size. Run it on a loaded machine and the ratios move: each side
shares the same cores.

The default folder (20,000 images, 155 batches an epoch) is large enough for the workers' start
to be left behind; a few thousand images measure mostly that start.

    python benchmarks/image_folder.py [--images 20000] [--batch-size 128] [--steps 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

import jaxconv.train as jt
from jaxconv.data import batches, load
from jaxconv.models.small import convnet
from jaxconv.runs.config import TrainConfig, optimizer_for

CLASSES = 10


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--dir", default="/tmp/jaxconv-folder-20k")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only the peak resident memory of two 64x64x3 epochs (decoding, then from the cache)",
    )
    return parser.parse_args()


def write_folder(root: Path, count: int) -> Path:
    """``count`` 64x64 RGB JPEGs, smooth random pictures (8x8 noise enlarged), class c in c/."""
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / str(i % CLASSES) / f"{i:07d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC).save(path, quality=90)
    return root


def epoch_rate(data, batch_size: int, key: jax.Array) -> tuple[float, float]:
    """(seconds to the first batch, images per second after it) of one epoch of ``data``."""
    begin = time.perf_counter()
    stream = batches(data, batch_size, key=key, epoch=0)
    jax.block_until_ready(next(stream))
    first = time.perf_counter()
    count = sum(jax.block_until_ready(images).shape[0] for images, _ in stream)
    return first - begin, count / (time.perf_counter() - first)


def step_rate(train_step, state, data, steps: int, batch_size: int) -> float:
    """Images per second of ``steps`` steps dispatched back to back on the batches of ``data``,
    after one step to compile."""
    images, labels = next(data)
    state, metrics = train_step(state, images, labels)
    jax.block_until_ready(metrics["loss"])
    begin = time.perf_counter()
    for images, labels in itertools.islice(data, steps):
        state, metrics = train_step(state, images, labels)
    jax.block_until_ready(metrics["loss"])
    return steps * batch_size / (time.perf_counter() - begin)


def peak_rss() -> tuple[float, float]:
    """The peak resident memory, in MiB, of this process and of its largest child (a worker)."""
    mib = 1024  # ru_maxrss is in KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib


def endless(data, batch_size: int, key: jax.Array):
    """The batches of epochs 2, 3, ... of ``data``, one after another."""
    return itertools.chain.from_iterable(
        batches(data, batch_size, key=key, epoch=e) for e in itertools.count(2)
    )


def memory(root: Path, args: argparse.Namespace) -> None:
    """Two epochs of the folder at 64x64x3 (the first decodes and fills the pixel cache, the
    second reads it), then the peak resident memory of this process and of the largest worker."""
    cache = tempfile.mkdtemp(prefix="jaxconv-pixel-cache-")
    data = load("imagefolder", "train", root=root, image_size=(64, 64, 3), workers=args.workers, cache=cache)
    for epoch in range(2):
        begin, count = time.perf_counter(), 0
        for images, _ in batches(data, args.batch_size, key=jax.random.key(1), epoch=epoch):
            count += jax.block_until_ready(images).shape[0]
        print(f"epoch {epoch}: {count:,} images in {time.perf_counter() - begin:.1f} s", flush=True)
    shutil.rmtree(cache)
    own, worker = peak_rss()
    print(
        f"{len(data.files):,} images; peak RSS: this process {own:,.0f} MiB, largest worker {worker:,.0f} MiB"
    )


def main() -> None:
    args = parse()
    root = write_folder(Path(args.dir), args.images)
    if args.memory:
        return memory(root, args)
    options = {"root": root, "holdout": 0.01, "workers": args.workers}
    gray = load("imagefolder", "train", image_size=(28, 28, 1), cache=False, **options)
    rgb = load("imagefolder", "train", image_size=(64, 64, 3), cache=False, **options)
    cache = tempfile.mkdtemp(prefix="jaxconv-pixel-cache-")
    rgb_cached = load("imagefolder", "train", image_size=(64, 64, 3), cache=cache, **options)
    gray_cached = load("imagefolder", "train", image_size=(28, 28, 1), cache=cache, **options)
    key = jax.random.key(1)
    start_a, pipeline_a = epoch_rate(gray, args.batch_size, key)
    start_b, pipeline_b = epoch_rate(rgb, args.batch_size, key)
    for data in (rgb_cached, gray_cached):  # one epoch fills the cache (drop_remainder=False)
        for _ in data.epoch_batches(args.batch_size, key, 0, drop_remainder=False):
            pass
    start_cached, pipeline_cached = epoch_rate(rgb_cached, args.batch_size, key)

    config = TrainConfig(batch_size=args.batch_size, augment="none")
    optimizer = optimizer_for(config, len(gray) // args.batch_size)
    net = convnet()

    def train_step_of(data):  # the step donates its state: a fresh one per measurement
        step = jt.make_train_step(net, optimizer, preprocess=jt.make_preprocess(data.mean, data.std))
        return step, lambda: jt.init_train_state(net, optimizer, (-1, *data.image_size), jax.random.key(0))

    train_step, fresh = train_step_of(gray)
    fixed = next(batches(gray, args.batch_size, key=key, epoch=1))
    step = step_rate(train_step, fresh(), itertools.repeat(fixed), args.steps, args.batch_size)
    end_to_end = step_rate(
        train_step, fresh(), endless(gray, args.batch_size, key), args.steps, args.batch_size
    )
    from_cache = endless(gray_cached, args.batch_size, key)
    end_to_end_cached = step_rate(train_step, fresh(), from_cache, args.steps, args.batch_size)
    rgb_step, rgb_fresh = train_step_of(rgb)
    rgb_fixed = itertools.repeat(next(batches(rgb, args.batch_size, key=key, epoch=1)))
    step_rgb = step_rate(rgb_step, rgb_fresh(), rgb_fixed, args.steps, args.batch_size)
    shutil.rmtree(cache)

    own, worker = peak_rss()
    print(
        f"{len(gray.files)} images, batch {args.batch_size}, {args.workers} workers, load {os.getloadavg()}"
    )
    print(f"(a) pipeline 28x28x1: {pipeline_a:,.0f} img/s (workers started in {start_a:.1f} s)")
    print(f"(b) pipeline 64x64x3: {pipeline_b:,.0f} img/s (workers started in {start_b:.1f} s)")
    print(
        f"(b') pipeline 64x64x3 from the pixel cache: {pipeline_cached:,.0f} img/s (first batch {start_cached:.1f} s)"
    )
    print(f"(c) train step: {step:,.0f} img/s; (c') at 64x64x3, the folder's own size: {step_rgb:,.0f} img/s")
    print(
        f"(d) end to end, decoding: {end_to_end:,.0f} img/s; (d') from the cache: {end_to_end_cached:,.0f} img/s"
    )
    print(
        f"(a)/(c) {pipeline_a / step:.2f}  (b)/(c) {pipeline_b / step:.2f}  (b')/(c) {pipeline_cached / step:.2f}  "
        f"(d)/(c) {end_to_end / step:.2f}  (d')/(c) {end_to_end_cached / step:.2f}  (b)/(c') {pipeline_b / step_rgb:.2f}"
    )
    print(f"peak RSS: this process {own:,.0f} MiB, largest worker {worker:,.0f} MiB")


if __name__ == "__main__":
    main()
