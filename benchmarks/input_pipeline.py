"""Input pipeline against the train step: is the pipeline ever the bottleneck?

Four measurements on real Fashion-MNIST ((60000, 28, 28, 1) uint8, batch 128), timed in
interleaved rounds, medians over the rounds:

- (a) ``pipeline``: iterating `jaxconv.data.batches` (one shuffled epoch per round: the
  per-epoch permutation, host indexing of the uint8 arrays, ``device_put`` with prefetch),
  blocking on every batch;
- (b) ``pipeline + augment``: the same, plus the on-device preprocessing of each batch
  (`jaxconv.train.make_preprocess`: random crop, flip, normalisation), jitted, blocked;
- (c) ``train step``: the jitted train step of the default model (`convnet`, the default
  optimiser and schedule of `TrainConfig`, the same preprocessing inside) on one fixed
  device batch, ``--steps`` steps dispatched back to back as in the fit loop;
- (d) ``end to end``: the fit loop's inner loop, ``--steps`` steps, each on the next batch of
  an endless stream of shuffled epochs (so the permutation costs what it costs per epoch).

The ratios (a)/(c) and (b)/(c) say how many times faster than training the pipeline
delivers; (d)/(c) is ~1 when the pipeline hides behind the step.

    python benchmarks/input_pipeline.py [--batch-size 128] [--steps 20] [--repeats 7]
                                        [--augment crop=2,flip] [--prefetch 2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
from collections.abc import Callable, Iterator

import jax
from _timing import median_seconds  # benchmarks/ is on the path when run as a script

import jaxconv.train as jt
from jaxconv.data import Dataset, batches, load, num_batches
from jaxconv.models.small import convnet
from jaxconv.runs.config import TrainConfig, optimizer_for
from jaxconv.train.state import TrainState
from jaxconv.train.step import Preprocess, TrainStep

Batch = tuple[jax.Array, jax.Array]  # (B, H, W, C) uint8 images, (B,) int32 labels


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="train steps per round in (c) and (d)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--augment", default="crop=2,flip", help="as `jaxconv train --augment`")
    parser.add_argument("--prefetch", type=int, default=2, help="batches in flight to the device")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 5 steps (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 5, 3
    return args


def main() -> None:
    args = parse()
    load_before = os.getloadavg()
    train = load("fashion_mnist", "train")
    config = TrainConfig(batch_size=args.batch_size, augment=args.augment)
    augmentation = config.augmentation
    preprocess = jt.make_preprocess(
        train.mean, train.std, crop_padding=augmentation.crop_padding, flip=augmentation.flip
    )
    steps_per_epoch = num_batches(len(train), args.batch_size)
    optimizer = optimizer_for(config, steps_per_epoch)
    net = convnet()
    train_step = jt.make_train_step(
        net, optimizer, preprocess=preprocess, label_smoothing=config.label_smoothing
    )
    start = jt.init_train_state(net, optimizer, (-1, *train.images.shape[1:]), jax.random.key(0))
    data_key = jax.random.key(1)

    def stream(epoch: int) -> Iterator[Batch]:
        return batches(train, args.batch_size, key=data_key, epoch=epoch, prefetch=args.prefetch)

    fixed_batch = next(stream(0))
    measurements = {
        "(a) pipeline": (pipeline(stream, lambda batch: batch), steps_per_epoch),
        "(b) pipeline + augment": (pipeline(stream, augmenter(preprocess)), steps_per_epoch),
        "(c) train step": (
            training(train_step, _copy(start), itertools.repeat(fixed_batch), args.steps),
            args.steps,
        ),
        "(d) end to end": (
            training(train_step, _copy(start), endless(train, data_key, args), args.steps),
            args.steps,
        ),
    }
    seconds = median_seconds({name: run for name, (run, _) in measurements.items()}, args.repeats)
    images_per_second = {
        name: count * args.batch_size / seconds[name] for name, (_, count) in measurements.items()
    }
    report(args, train, images_per_second, seconds, measurements, (load_before, os.getloadavg()))


def pipeline(
    stream: Callable[[int], Iterator[Batch]], transform: Callable[[Batch], object]
) -> Callable[[], None]:
    """The next epoch of `batches` (a new permutation each call), each batch transformed and
    blocked on."""
    epochs = itertools.count()

    def run() -> None:
        for batch in stream(next(epochs)):
            jax.block_until_ready(transform(batch))

    return run


def augmenter(preprocess: Preprocess) -> Callable[[Batch], jax.Array]:
    """The train step's preprocessing of one batch alone, jitted, with a fresh key per batch."""
    key, counter = jax.random.key(2), itertools.count()

    @jax.jit
    def augment(step: jax.Array, images: jax.Array) -> jax.Array:
        return preprocess(jax.random.fold_in(key, step), images)  # (B, H, W, C) float32

    return lambda batch: augment(next(counter), batch[0])


def training(
    train_step: TrainStep, state: TrainState, data: Iterator[Batch], steps: int
) -> Callable[[], jax.Array]:
    """``steps`` train steps dispatched back to back on the next batches of ``data``; returns
    the last loss (block on it to wait for all of them)."""
    holder = [state]

    def run() -> jax.Array:
        state = holder[0]
        for images, labels in itertools.islice(data, steps):
            state, metrics = train_step(state, images, labels)
        holder[0] = state
        return metrics["loss"]

    return run


def endless(train: Dataset, key: jax.Array, args: argparse.Namespace) -> Iterator[Batch]:
    """Shuffled epochs one after the other, as the fit loop consumes them."""
    return itertools.chain.from_iterable(
        batches(train, args.batch_size, key=key, epoch=epoch, prefetch=args.prefetch)
        for epoch in itertools.count()
    )


def report(args, train, images_per_second, seconds, measurements, loads) -> None:
    device = jax.devices()[0]
    print(
        f"{datetime.date.today()}  JAX {jax.__version__}  {device.platform.upper()} ({device.device_kind}), "
        f"{os.cpu_count()} cores; {train.name} {train.split} {train.images.shape}, batch {args.batch_size}, "
        f"augment {args.augment}, prefetch {args.prefetch}; median of {args.repeats} interleaved rounds"
    )
    step = images_per_second["(c) train step"]
    print(f"  {'measurement':24s} {'batches':>8s} {'ms/batch':>9s} {'images/s':>11s} {'/ (c)':>7s}")
    for name, (_, count) in measurements.items():
        per_batch = 1e3 * seconds[name] / count
        speed = images_per_second[name]
        print(f"  {name:24s} {count:8d} {per_batch:9.3f} {speed:11,.0f} {speed / step:7.2f}")
    before, after = (", ".join(f"{value:.2f}" for value in load) for load in loads)
    print(f"  load average (1, 5, 15 min): before {before}; after {after}")


def _copy(tree):
    return jax.tree.map(lambda leaf: leaf.copy(), tree)


if __name__ == "__main__":
    main()
