"""ONNX: a net converted by jax2onnx, its pools laid out for every runtime.

    model_bytes = jc.export.onnx(net, params, state, (-1, 32, 32, 3), path="net.onnx")

    # elsewhere, without JAX:
    session = onnxruntime.InferenceSession("net.onnx")
    logits = session.run(None, {"images": images})[0]   # images (N, 32, 32, 3) float32, any N

jax2onnx (a maintained converter of JAX programs) writes the graph. It lowers a window reduction
over NHWC, ``reduce_window_max`` or ``reduce_window_sum`` with the window (1, F, F, 1), to a
MaxPool or Conv with four spatial axes; onnxruntime's CPU MaxPool takes at most three ("Unsupported
pooling size") and a four-axis Conv is slow. `pools_over_rows_and_columns` rewrites each such
node into a 2-D MaxPool or AveragePool between two Transposes, which onnxruntime fuses away
between its NCHW convolutions. jax2onnx and onnx are imported on first use (the ``export`` extra).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxconv.core import Layer, Params, ShapeTree, State
from jaxconv.export.inference import (
    Preprocess,
    batch_free_shape,
    check_applies,
    inference_function,
    write,
)
from jaxconv.layers.pool import max_pool_impl

INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 21  # onnxruntime 1.18 and later run it; AveragePool takes dilations from 19
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def onnx(
    net: Layer,
    params: Params,
    state: State,
    input_shape: ShapeTree,
    *,
    path: str | os.PathLike[str] | None = None,
    dtype: Any = jnp.float32,
    preprocess: Preprocess | None = None,
) -> bytes:
    """Convert ``net`` in inference mode (``train=False``) with its ``params`` and ``state`` to ONNX.

    Args:
      input_shape: (N, H, W, C); the batch N is the free dimension ``N`` of the graph's input.
      path: also write the model there (atomically), one self-contained file.
      dtype: the input's dtype (float32; uint8 for raw images with a ``preprocess``).
      preprocess: applied to the (N, H, W, C) input before the net, e.g. a run's normalisation.

    Returns:
      The serialised ``onnx.ModelProto``: input ``images`` (N, H, W, C), output ``logits``.
    """
    from jax2onnx import to_onnx  # the `export` extra

    size = batch_free_shape(input_shape, "export.onnx")
    forward = inference_function(net, params, state, preprocess)
    check_applies(forward, size, dtype, "export.onnx")
    quiet = logging.getLogger("onnx_ir")  # it logs every unstamped shape constant
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with max_pool_impl("reduce_window"):  # onnxruntime's MaxPool, not a reshape and a ReduceMax
            model = to_onnx(
                forward,
                [jax_spec(size, dtype)],
                opset=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
            )
    finally:
        quiet.setLevel(level)
    pools_over_rows_and_columns(model)
    data = model.SerializeToString()
    write(path, data)
    return data


def jax_spec(size: tuple[int, int, int], dtype: Any) -> Any:
    """The input jax2onnx traces: (N, H, W, C) of ``dtype`` with N symbolic."""
    from jax import ShapeDtypeStruct, export

    (batch,) = export.symbolic_shape("N")
    return ShapeDtypeStruct((batch, *size), dtype)


def pools_over_rows_and_columns(model: Any) -> int:
    """Rewrite, in place, each MaxPool / ones-kernel Conv that jax2onnx made of an NHWC window
    reduction (Unsqueeze, Unsqueeze, 6-D pool, Squeeze) into Transpose, 2-D pool, Transpose.
    Returns how many it rewrote."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, replaced = [], []
    for node in graph.node:
        if any(node is squeeze for squeeze in replaced):
            continue
        rewrite = _rewrite(node, graph, producers, consumers)
        if rewrite is None:
            nodes.append(node)
            continue
        nodes.extend(rewrite[0])
        replaced.append(rewrite[1])
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    return len(replaced)


def _rewrite(node: Any, graph: Any, producers: dict, consumers: dict) -> tuple[list[Any], Any] | None:
    """The nodes replacing ``node`` and the Squeeze after it (which they make redundant), or None
    when ``node`` is not such a pool. The Unsqueezes before it are left to `_drop_unused`."""
    from onnx import helper, numpy_helper

    window = _window(node, graph, producers)
    source = _twice_unsqueezed(node.input[0], graph, producers)
    after = consumers.get(node.output[0], [])
    if window is None or source is None or len(after) != 1 or after[0].op_type != "Squeeze":
        return None
    kernel, attributes = window
    name = node.output[0]
    nchw = helper.make_node("Transpose", [source], [f"{name}_nchw"], perm=TO_NCHW)
    if node.op_type == "MaxPool":
        pooled = [helper.make_node("MaxPool", [f"{name}_nchw"], [f"{name}_2d"], **attributes)]
    else:  # a window sum: the window's mean, padding counted, times its size
        dtype = numpy_helper.to_array(_initializer(graph, node.input[1])).dtype
        graph.initializer.append(numpy_helper.from_array(np.asarray(np.prod(kernel), dtype), f"{name}_size"))
        mean = helper.make_node(
            "AveragePool", [f"{name}_nchw"], [f"{name}_mean"], count_include_pad=1, **attributes
        )
        pooled = [mean, helper.make_node("Mul", [f"{name}_mean", f"{name}_size"], [f"{name}_2d"])]
    nhwc = helper.make_node("Transpose", [f"{name}_2d"], [after[0].output[0]], perm=TO_NHWC)
    return [nchw, *pooled, nhwc], after[0]


def _window(node: Any, graph: Any, producers: dict) -> tuple[list[int], dict[str, list[int]]] | None:
    """(kernel, 2-D pool attributes) of a 4-D MaxPool or ones-kernel Conv whose window is
    (1, F, F, 1) over (N, H, W, C); None for any other node."""
    from onnx import helper, numpy_helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MaxPool" and attributes.get("ceil_mode", 0) == 0:
        kernel = list(attributes.get("kernel_shape", ()))
    elif node.op_type == "Conv" and len(node.input) == 2 and attributes.get("group", 1) == 1:
        weight = _initializer(graph, node.input[1])
        ones = None if weight is None else numpy_helper.to_array(weight)
        if ones is None or ones.ndim != 6 or ones.shape[:2] != (1, 1) or not np.all(ones == 1):
            return None
        kernel = list(ones.shape[2:])
    else:
        return None
    strides = list(attributes.get("strides", [1] * 4))
    dilations = list(attributes.get("dilations", [1] * 4))
    pads = list(attributes.get("pads", [0] * 8))
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(kernel) != 4:
        return None
    unit = [kernel[0], kernel[3], strides[0], strides[3], dilations[0], dilations[3]]
    if unit != [1] * 6 or pads[0] or pads[3] or pads[4] or pads[7]:
        return None
    two_d = {"kernel_shape": kernel[1:3], "strides": strides[1:3], "pads": pads[1:3] + pads[5:7]}
    if dilations != [1] * 4:
        two_d["dilations"] = dilations[1:3]
    return kernel[1:3], two_d


def _twice_unsqueezed(name: str, graph: Any, producers: dict) -> str | None:
    """The input x of ``name`` = Unsqueeze(Unsqueeze(x, axes=[0]), axes=[1]), else None."""
    outer = producers.get(name)
    inner = producers.get(outer.input[0]) if outer is not None and outer.op_type == "Unsqueeze" else None
    if inner is None or inner.op_type != "Unsqueeze":
        return None
    axes = [_constant(node.input[1], graph, producers) for node in (inner, outer)]
    if any(a is None for a in axes) or [a.tolist() for a in axes] != [[0], [1]]:
        return None
    return inner.input[0]


def _constant(name: str, graph: Any, producers: dict) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a Constant node's output, else None."""
    from onnx import helper, numpy_helper

    tensor = _initializer(graph, name)
    if tensor is not None:
        return numpy_helper.to_array(tensor)
    node = producers.get(name)
    if node is None or node.op_type != "Constant" or node.attribute[0].name != "value":
        return None
    return numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))


def _initializer(graph: Any, name: str) -> Any:
    return next((tensor for tensor in graph.initializer if tensor.name == name), None)


def _drop_unused(graph: Any) -> None:
    """Remove the nodes, initializers and shape records nothing reads any more."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not read.intersection(node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in read]:
        graph.initializer.remove(tensor)
    made = read | {name for node in graph.node for name in node.output}
    for record in [record for record in graph.value_info if record.name not in made]:
        graph.value_info.remove(record)
