"""Run exported files without jaxconv: ``python run_exported.py DIR`` reads every
``<name>.stablehlo`` / ``<name>.onnx`` with ``<name>.inputs.npz`` in DIR, runs it through
`jax.export.deserialize` or onnxruntime on each input, and writes ``<name>.<format>.out.npz``.
It fails if anything imports jaxconv."""

import sys
from pathlib import Path

import jax
import numpy as np
import onnxruntime


def run_stablehlo(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    exported = jax.export.deserialize(path.read_bytes())
    return {name: np.asarray(exported.call(x)) for name, x in inputs.items()}


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    return {name: session.run(None, {feed.name: x})[0] for name, x in inputs.items()}


def main(directory: Path) -> None:
    for path in sorted([*directory.glob("*.stablehlo"), *directory.glob("*.onnx")]):
        inputs = dict(np.load(directory / f"{path.stem}.inputs.npz"))
        run = run_stablehlo if path.suffix == ".stablehlo" else run_onnx
        np.savez(directory / f"{path.name}.out.npz", **run(path, inputs))
    assert not any(name.split(".")[0] == "jaxconv" for name in sys.modules), "jaxconv was imported"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
