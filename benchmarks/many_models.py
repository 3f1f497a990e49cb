"""Many models in one program: images per second of M seeds trained together by `fit_many`'s step
against one model's `fit` step, on the same host batches.

Trains the default model (`convnet`; Fashion-MNIST-shaped (B, 28, 28, 1) uint8 images, normalised
inside the step; AdamW with the default one-cycle schedule) two ways: the train step `fit` runs
(`jaxconv.train.make_train_step`) on one model, and the step `fit_many` runs on ``--models``
models (each its own batch, stacked: (M, B, 28, 28, 1)), held in one program as ``--strategy``
says (`jaxconv.runs.model_axis.over_models`: ``vmap``, or ``loop``, the CPU's default), optionally in
chunks (``--chunk``).
Each round times ``--steps`` consecutive steps of each (rounds interleaved, medians); the
figure is the aggregate throughput ratio: (M * B / time of the M-model step) / (B / time of the
one-model step). At least 1.0 means nothing is lost by batching models.

    python benchmarks/many_models.py [--models 8] [--batch-size 128] [--steps 3] [--repeats 5] [--chunk M]
"""

from __future__ import annotations

import argparse
import datetime

from _timing import median_seconds  # benchmarks/ is on the path when run as a script


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=8, help="M, seeds trained together")
    parser.add_argument("--batch-size", type=int, default=128, help="B, per model")
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--chunk", type=int, default=None, help="models per chunk (default: all)")
    parser.add_argument("--model", default="convnet", help="a name from `jaxconv models`")
    parser.add_argument("--strategy", default="auto", help="vmap, loop or auto (loop on a CPU)")
    return parser.parse_args()


def main() -> None:
    args = parse()
    import jax
    import numpy as np

    import jaxconv as jc
    from jaxconv.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, Dataset
    from jaxconv.runs import many, model_axis

    rng = np.random.default_rng(0)
    count = args.batch_size * args.models
    data = Dataset(
        "fashion_mnist", "train", rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 10, count).astype(np.int32), tuple("0123456789"), FASHION_MNIST_MEAN, FASHION_MNIST_STD,
    )  # fmt: skip
    config = jc.runs.TrainConfig(model=args.model, batch_size=args.batch_size)
    net = jc.models.get(args.model, num_classes=10)
    configs = jc.runs.model_configs(config, seeds=range(args.models))
    program = many._program(net, data, config, configs, False, None)
    strategy = model_axis.default_strategy() if args.strategy == "auto" else args.strategy
    over = model_axis.over_models(strategy, args.chunk or args.models)
    many_step = many._many_train_step(program.step_of_one, program.hypers, over, False)
    one_step = jc.train.make_train_step(
        net, jc.runs.optimizer_for(config, program.steps), preprocess=program.preprocess,
        label_smoothing=config.label_smoothing,
    )  # fmt: skip
    one_state = jax.tree_util.tree_map(lambda leaf: leaf[0], program.train_state)
    images, labels = data.arrays
    stacked = (images.reshape(args.models, args.batch_size, 28, 28, 1), labels.reshape(args.models, -1))
    single = (images[: args.batch_size], labels[: args.batch_size])
    states = {"one": one_state, "many": program.train_state}

    def runner(name, step, batch):
        def run_steps():
            state = states[name]
            for _ in range(args.steps):
                state, metrics = step(state, *batch)
            states[name] = state
            return metrics["loss"]

        return run_steps

    seconds = median_seconds(
        {"one": runner("one", one_step, single), "many": runner("many", many_step, stacked)}, args.repeats
    )
    one_rate = args.steps * args.batch_size / seconds["one"]
    many_rate = args.steps * args.batch_size * args.models / seconds["many"]
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} {jax.devices()[0].platform} {args.model} batch {args.batch_size}"
    )
    print(f"one model: {seconds['one'] / args.steps * 1e3:8.1f} ms/step  {one_rate:10,.0f} images/s")
    print(
        f"{args.models} models: {seconds['many'] / args.steps * 1e3:8.1f} ms/step  {many_rate:10,.0f} images/s"
        f"  ({strategy}, chunk {args.chunk or args.models})"
    )
    print(f"aggregate throughput ratio ({args.models} together / one alone): {many_rate / one_rate:.3f}")


if __name__ == "__main__":
    main()
