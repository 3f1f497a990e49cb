"""A trained net out of Python: serialised StableHLO (`stablehlo`) and ONNX (`onnx`).

    data = jc.export.stablehlo(net, params, state, (-1, 28, 28, 1), path="net.stablehlo")
    model = jc.export.onnx(net, params, state, (-1, 28, 28, 1), path="net.onnx")

Both files hold the weights and run without jaxconv: the StableHLO through
``jax.export.deserialize(data).call(x)``, the ONNX model through onnxruntime. Their batch size
is free. ``jaxconv export RUN_DIR --format stablehlo|onnx`` writes a run's net, with the run's
normalisation inside, so that it takes the (N, H, W, C) uint8 images of the run's dataset.
"""

from jaxconv.export.onnx_graph import onnx
from jaxconv.export.serialized import stablehlo

__all__ = ["onnx", "stablehlo"]
