"""Exported zoo models run without jaxconv and give jaxconv's logits.

Each model is exported at the smallest input it takes, to StableHLO and to ONNX, with random
weights and random BatchNorm statistics drawn by NumPy (so inference-mode normalisation is not the identity).
A separate Python process (``run_exported.py``, which imports neither jaxconv nor its export
code) runs every file through `jax.export.deserialize` and onnxruntime at batch sizes 1 and 7;
its logits must equal jaxconv's jitted forward to a relative error below 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconv as jc

SMALLEST_INPUT = {  # (H, W, C): the least each model's downsampling takes
    "lenet5": (32, 32, 1),
    "convnet": (28, 28, 1),
    "resnet18": (32, 32, 3),
    "mobilenet_v2": (32, 32, 3),
    "densenet40_12": (32, 32, 3),  # concatenation (densenet121 took 12x as long in jax2onnx)
}
IMAGENET = {"resnet18", "mobilenet_v2"}  # 1000 classes; the others 10
BATCHES = (1, 7)
FORMATS = ("stablehlo", "onnx")
RUNNER = Path(__file__).with_name("run_exported.py")


def random_variables(net: jc.Layer, size: tuple[int, int, int], seed: int) -> tuple:
    """Params and state of ``net``'s shapes drawn by NumPy (cheaper than ``net.init`` for the big
    models): kernels N(0, 2 / fan-in), scales 1 + N(0, 0.1), biases and running means N(0, 0.1),
    running variances U(0.5, 2), so BatchNorm in inference mode scales each channel its own way."""
    _, params, state = jax.eval_shape(lambda: net.init(jax.random.key(0), (-1, *size)))
    rng = np.random.default_rng(seed)

    def draw(path: tuple, leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        name = jax.tree_util.keystr(path[-1:])
        if len(leaf.shape) >= 2:
            value = rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
        elif name == "['var']":
            value = rng.uniform(0.5, 2.0, leaf.shape)
        else:
            value = (name == "['scale']") + 0.1 * rng.normal(size=leaf.shape)
        return value.astype(leaf.dtype)

    return tuple(jax.tree_util.tree_map_with_path(draw, tree) for tree in (params, state))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """Every model exported in both formats into one directory, the inputs beside each file, and
    jaxconv's logits for them; then run_exported.py has run them all in a process of its own."""
    directory = tmp_path_factory.mktemp("exported")
    expected = {}
    for index, (name, size) in enumerate(SMALLEST_INPUT.items()):
        net = jc.models.get(name)
        params, state = random_variables(net, size, seed=index)
        images = np.random.default_rng(index).normal(size=(max(BATCHES), *size)).astype(np.float32)
        inputs = {f"batch{n}": images[:n] for n in BATCHES}
        logits = np.asarray(jax.jit(lambda x: net.apply(params, state, x)[0])(images))  # noqa: B023
        expected[name] = {f"batch{n}": logits[:n] for n in BATCHES}  # inference: rows independent
        for file_format in FORMATS:
            export = getattr(jc.export, file_format)
            export(net, params, state, (-1, *size), path=directory / f"{name}.{file_format}")
            np.savez(directory / f"{name}.inputs.npz", **inputs)
    # the runner must not find jaxconv; XLA's optimisation level 0 halves its compile times
    environment = {**os.environ, "PYTHONPATH": "", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    subprocess.run([sys.executable, str(RUNNER), str(directory)], check=True, env=environment, cwd=directory)
    return directory, expected


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("name", SMALLEST_INPUT)
def test_exported_logits_equal_jaxconvs(exported, name, file_format):
    directory, expected = exported
    outputs = np.load(directory / f"{name}.{file_format}.out.npz")
    for batch in BATCHES:
        got, want = outputs[f"batch{batch}"], expected[name][f"batch{batch}"]
        assert got.shape == want.shape == (batch, 1000 if name in IMAGENET else 10)
        relative = np.abs(got - want).max() / np.abs(want).max()
        assert relative < 1e-5, f"{name} {file_format} batch {batch}: relative error {relative:.2e}"
