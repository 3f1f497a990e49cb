"""``jaxconv export RUN_DIR``: a trained run's net, normalisation inside, as StableHLO and ONNX.

The reference logits come from the checkpoint's arrays read with NumPy (not through jaxconv's
loader) and the net applied to the normalised test images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import onnxruntime
import pytest

import jaxconv as jc
import jaxconv.cli as cli
from jaxconv.models import registry

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import orbax_arrays, synthetic, tiny_net, write_idx_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, data directory) of one epoch of the tiny net on the IDX data set."""
    data_dir = write_idx_dataset(tmp_path_factory.mktemp("data"))
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny", registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {}))
        argv = ["train", "--model", "tiny", "--epochs", "1", "--batch-size", "16", "--no-progress"]
        assert cli.main([*argv, "--data-dir", str(data_dir), "--run-dir", str(run_dir)]) == 0
        yield run_dir, data_dir


def checkpoint_variables(step_dir: Path) -> tuple[dict, dict]:
    """The params and state of a run's Orbax checkpoint, read by Orbax alone by their key paths."""
    _, params, state = jax.eval_shape(lambda: tiny_net().init(jax.random.key(0), (-1, 28, 28, 1)))
    by_path = orbax_arrays(step_dir)[1]

    def read(prefix: str, tree: dict) -> dict:
        return jax.tree_util.tree_map_with_path(
            lambda key, _: by_path[prefix + jax.tree_util.keystr(key)], tree
        )

    return read("['params']", params), read("['state']", state)


@pytest.mark.parametrize("file_format", ["stablehlo", "onnx"])
def test_export_writes_the_runs_net_with_its_normalisation(trained, file_format, capsys):
    run_dir, data_dir = trained
    argv = ["export", str(run_dir), "--format", file_format, "--data-dir", str(data_dir)]
    assert cli.main(argv) == 0
    path = run_dir / f"model.{file_format}"
    assert f"{file_format} written to {path}" in capsys.readouterr().out

    images = synthetic(7, seed=3)[0]  # (7, 28, 28, 1) uint8
    params, state = checkpoint_variables(jc.runs.Run(run_dir).checkpoint)
    mean, std = np.asarray(jc.data.FASHION_MNIST_MEAN), np.asarray(jc.data.FASHION_MNIST_STD)
    want = np.asarray(tiny_net().apply(params, state, (images / 255 - mean) / std)[0])
    if file_format == "stablehlo":
        got = np.asarray(jax.export.deserialize(path.read_bytes()).call(images))
    else:
        got = onnxruntime.InferenceSession(str(path)).run(None, {"images": images})[0]
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_export_of_no_run_or_another_format_is_refused(trained, tmp_path, capsys):
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(jc.errors.ConfigError, match="export format 'tflite' is not one of stablehlo, onnx"):
        jc.runs.export_run(trained[0], "tflite")
