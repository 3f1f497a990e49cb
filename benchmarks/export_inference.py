"""Exported inference against jaxconv's jitted forward: ONNX (onnxruntime) and StableHLO.

For each model, random weights, batch ``--batch`` (64) of float32 images, timed in interleaved
rounds (medians):

- ``jaxconv``: ``jax.jit(lambda x: net.apply(params, state, x)[0])``, the input a NumPy array;
- ``stablehlo``: ``jax.jit(jax.export.deserialize(jc.export.stablehlo(...)).call)``;
- ``onnx``: an ``onnxruntime.InferenceSession`` of ``jc.export.onnx(...)`` (CPU provider, its
  default threads), ``session.run`` on the NumPy array.

The throughput ratios exported / jaxconv are printed (>= 0.9: the export costs at most 10%), with
the largest relative difference of the logits.

    python benchmarks/export_inference.py [--models convnet,lenet5,resnet18,mobilenet_v2,densenet121]
                                          [--size 64] [--batch 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime

import jax
import numpy as np
import onnxruntime
from _timing import median_seconds  # benchmarks/ is on the path when run as a script

import jaxconv as jc


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="convnet,lenet5,resnet18,mobilenet_v2,densenet121")
    parser.add_argument("--size", type=int, default=64, help="H = W for the 224x224 models (default 64)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    return parser.parse_args()


def contenders(name: str, size: int, batch: int) -> tuple[dict, np.ndarray]:
    """The three forwards of ``name`` on one batch, and that batch."""
    net = jc.models.get(name)
    shape = jc.models.input_shape(name)
    if shape[1] > 64:
        shape = (-1, size, size, shape[3])
    _, params, state = jax.jit(net.init, static_argnums=1)(jax.random.key(0), shape)
    images = np.random.default_rng(0).normal(size=(batch, *shape[1:])).astype(np.float32)
    forward = jax.jit(lambda x: net.apply(params, state, x)[0])
    exported = jax.jit(jax.export.deserialize(jc.export.stablehlo(net, params, state, shape)).call)
    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(
        jc.export.onnx(net, params, state, shape), options, providers=["CPUExecutionProvider"]
    )
    return {
        "jaxconv": lambda: forward(images),
        "stablehlo": lambda: exported(images),
        "onnx": lambda: session.run(None, {"images": images})[0],
    }, images


def main() -> None:
    args = parse()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {jax.devices()[0].platform}, "
          f"batch {args.batch}, onnxruntime {onnxruntime.__version__}, jax {jax.__version__}")  # fmt: skip
    print(
        "| model | input | jaxconv ms | StableHLO ms | ONNX ms | StableHLO / jaxconv | ONNX / jaxconv | max rel. diff |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        functions, images = contenders(name, args.size, args.batch)
        outputs = {key: np.asarray(fn()) for key, fn in functions.items()}
        scale = np.abs(outputs["jaxconv"]).max()
        difference = max(np.abs(out - outputs["jaxconv"]).max() / scale for out in outputs.values())
        seconds = median_seconds(functions, args.repeats)
        ms = {key: 1000 * value for key, value in seconds.items()}
        print(
            f"| {name} | {'x'.join(map(str, images.shape[1:]))} | {ms['jaxconv']:.2f} | {ms['stablehlo']:.2f} "
            f"| {ms['onnx']:.2f} | **{ms['jaxconv'] / ms['stablehlo']:.2f}** | **{ms['jaxconv'] / ms['onnx']:.2f}** "
            f"| {difference:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
