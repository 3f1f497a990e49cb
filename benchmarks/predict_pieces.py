"""`make_predict` in pieces against the whole batch at once: page faults and time per call.

On a CPU, `jc.inference.make_predict` (``chunk='auto'``) runs a batch whose compiled pass keeps
more than 32 MiB of temporaries in pieces under `jax.lax.map`, because glibc hands out larger
blocks as fresh pages on every call. This measures the folded net's predict with
``chunk=None`` (the whole batch), ``'auto'`` and the piece sizes given, interleaved in one
process, and checks that every variant gives the whole batch's logits.

Run: ``python benchmarks/predict_pieces.py [--model resnet20] [--batch 256] [--rows 32,128]``.
"""

from __future__ import annotations

import argparse
import resource

import jax
import numpy as np
from _timing import median_seconds

import jaxconv as jc

SHAPES = {"resnet20": (32, 32, 3), "convnet": (28, 28, 1), "resnet50_tv": (64, 64, 3)}


def faults_per_call(fn, calls: int = 3) -> float:
    jax.block_until_ready(fn())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(fn())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rows", default="", help="piece sizes to time besides 'auto', comma-separated")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    net = jc.models.get(args.model, num_classes=10)
    shape = SHAPES[args.model]
    _, params, state = net.init(jax.random.key(0), (-1, *shape))
    net, params, state = jc.inference.fold_batchnorm(net, params, state)
    images = jax.random.normal(jax.random.key(1), (args.batch, *shape))
    chunks = {
        "whole": None,
        "auto": "auto",
        **{f"rows {rows}": int(rows) for rows in args.rows.split(",") if rows},
    }
    predicts = {name: jc.inference.make_predict(net, chunk=chunk) for name, chunk in chunks.items()}
    expected = np.asarray(predicts["whole"](params, state, images))
    temporaries = (
        predicts["whole"].lower(params, state, images).compile().memory_analysis().temp_size_in_bytes
    )
    print(
        f"{args.model}, batch {args.batch}: the whole pass keeps {temporaries / 2**20:.1f} MiB of temporaries"
    )
    calls = {
        name: (lambda predict=predict: predict(params, state, images)) for name, predict in predicts.items()
    }
    for name, call in calls.items():
        difference = float(np.max(np.abs(np.asarray(call()) - expected)))
        predict = predicts[name]
        rows = predict.piece_rows(params, state, images) if hasattr(predict, "piece_rows") else None
        print(
            f"{name:10s} rows per piece {rows or args.batch:4d}, max |difference| {difference:.1e}, "
            f"page faults a call {faults_per_call(call):9,.0f}"
        )
    seconds = median_seconds(calls, args.repeats)
    for name, value in seconds.items():
        print(
            f"{name:10s} {1e3 * value:8.1f} ms  {args.batch / value:8,.0f} img/s  "
            f"{seconds['whole'] / value:.3f}x the whole batch"
        )


if __name__ == "__main__":
    main()
