"""`jc.export.stablehlo` and `jc.export.onnx` on the operations the zoo is made of, against
jaxconv's own forward; the pool rewrite onnxruntime needs; the errors for a bad export."""

from __future__ import annotations

import jax
import numpy as np
import onnx
import onnxruntime
import pytest

import jaxconv as jc
from jaxconv.data import normalize
from jaxconv.errors import ShapeError

SHAPE = (-1, 12, 12, 4)


def every_operation() -> jc.Layer:
    """Padded, strided, dilated and grouped convolutions; max and average pools with padding (the
    rewritten ones) and without; BatchNorm and LRN in inference mode; a channel concatenation."""
    return jc.serial(
        jc.Conv(8, 3, padding=2, dilation=2, groups=2), jc.BatchNorm(), jc.Relu,
        jc.fan_out(3),
        jc.parallel(jc.MaxPool(3, stride=2, padding=1), jc.AvgPool(3, stride=2, padding=1),
                    jc.Conv(4, 1, stride=2)),
        jc.fan_in_concat(),
        jc.LocalResponseNorm(3), jc.MaxPool(2), jc.Conv(6, 3, stride=2, padding=1),
        jc.GlobalAvgPool, jc.Dense(5),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    """The net with its init params and BatchNorm statistics moved away from (0, 1)."""
    net = every_operation()
    _, params, state = net.init(jax.random.key(0), SHAPE)
    state = jax.tree_util.tree_map(lambda leaf: leaf + 0.5, state)
    images = np.random.default_rng(0).normal(size=(5, *SHAPE[1:])).astype(np.float32)
    logits = np.asarray(net.apply(params, state, images)[0])
    return net, params, state, images, logits


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_stablehlo_has_a_free_batch_and_jaxconvs_logits(trained, tmp_path):
    net, params, state, images, logits = trained
    data = jc.export.stablehlo(net, params, state, SHAPE, path=tmp_path / "net.stablehlo")
    assert (tmp_path / "net.stablehlo").read_bytes() == data
    exported = jax.export.deserialize(data)
    assert str(exported.in_avals[0].shape) == "(N, 12, 12, 4)"
    for batch in (1, 5):
        assert relative_error(np.asarray(exported.call(images[:batch])), logits[:batch]) < 1e-5


def test_onnx_runs_in_onnxruntime_with_two_dimensional_pools(trained, tmp_path):
    net, params, state, images, logits = trained
    data = jc.export.onnx(net, params, state, SHAPE, path=tmp_path / "net.onnx")
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    pools = [node for node in model.graph.node if node.op_type in ("MaxPool", "AveragePool")]
    kernels = [
        onnx.helper.get_attribute_value(a) for n in pools for a in n.attribute if a.name == "kernel_shape"
    ]
    assert sorted(kernels) == [[2, 2], [3, 3], [3, 3]]  # jax2onnx's 4-D ones rewritten
    six_d = {t.name: list(t.dims) for t in model.graph.initializer if len(t.dims) == 6}
    assert list(six_d.values()) == [[1, 1, 1, 1, 1, 3]]  # only LRN's window over channels is left
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape == ["N", 12, 12, 4]
    for batch in (1, 5):
        (got,) = session.run(["logits"], {"images": images[:batch]})
        assert relative_error(got, logits[:batch]) < 1e-5


def test_a_preprocess_and_uint8_input_are_inside_the_export(trained):
    net, params, state, _, _ = trained
    mean, std = (0.2, 0.4, 0.6, 0.5), (0.3, 0.2, 0.25, 0.1)
    raw = np.random.default_rng(1).integers(0, 256, (3, *SHAPE[1:]), dtype=np.uint8)
    want = np.asarray(net.apply(params, state, normalize(raw, mean, std))[0])
    options = {"dtype": np.uint8, "preprocess": lambda images: normalize(images, mean, std)}
    exported = jax.export.deserialize(jc.export.stablehlo(net, params, state, SHAPE, **options))
    assert relative_error(np.asarray(exported.call(raw)), want) < 1e-5
    session = onnxruntime.InferenceSession(jc.export.onnx(net, params, state, SHAPE, **options))
    assert relative_error(session.run(None, {"images": raw})[0], want) < 1e-5


@pytest.mark.parametrize("export", [jc.export.stablehlo, jc.export.onnx])
def test_bad_exports_are_refused(trained, export):
    net, params, state, _, _ = trained
    with pytest.raises(ShapeError, match=r"input_shape must be \(N, H, W, C\).*got \(12, 12, 4\)"):
        export(net, params, state, (12, 12, 4))
    with pytest.raises(
        ValueError, match=r"while exporting \(export\.\w+\) for inputs of shape \(N, 12, 12, 3\)"
    ):
        export(net, params, state, (-1, 12, 12, 3))  # the first conv wants 4 channels
    with pytest.raises(jc.LayerTypeError, match="export: net is the function"):
        export(np.tanh, params, state, SHAPE)
