"""torchvision's ImageNet weights in jaxconv's zoo models.

>>> import torch, torchvision                                      # doctest: +SKIP
>>> from jaxconv import interop
>>> weights = torch.load("resnet50-0676ba61.pth", weights_only=True)  # doctest: +SKIP
>>> params, state = interop.from_torchvision("resnet50", weights)  # doctest: +SKIP
>>> net = interop.model("resnet50")                                # doctest: +SKIP
>>> logits, _ = net.apply(params, state, images_nhwc)              # doctest: +SKIP

A torchvision name maps to the zoo builder with torchvision's architecture
(``resnet50`` -> ``resnet50_tv``, ``googlenet`` -> ``googlenet_tv``, ...; see
`names`). For each architecture a short generator lists torchvision's module
names in the order jaxconv's network runs its Conv, Dense and BatchNorm layers
(`jaxconv.core.trace_init` gives that order and every layer's input shape), so
the i-th layer takes the i-th module's tensors, looked up by name: a
state_dict's own order does not matter (safetensors files sort their keys).

Layouts: conv kernels (O, I / groups, H, W) -> (H, W, I / groups, O) (grouped
and depthwise convs included); Dense (out, in) -> (in, out); BatchNorm
``weight``, ``bias`` -> params ``scale``, ``bias`` and ``running_mean``,
``running_var`` -> state ``mean``, ``var``; ``num_batches_tracked`` is ignored.
torchvision flattens (C, H, W) maps where jaxconv flattens (H, W, C), so the
first Dense after a Flatten of a spatial map (AlexNet, VGG, GoogLeNet's
auxiliary heads) gets its input rows reordered: its weight is read as the
(O, C, H, W) kernel of a convolution over the whole map.

Inputs are NHWC (``images.transpose(0, 2, 3, 1)`` for torchvision's NCHW).
torchvision's pretrained GoogLeNet and Inception v3 set ``transform_input=True``,
which rescales the normalised input channels first; jaxconv's models leave that
to the caller. Files are read without unpickling arbitrary objects:
``.safetensors`` with `safetensors.numpy.load_file`, ``.pth`` / ``.pt`` with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import models
from jaxconv.core import Layer, Params, State, trace_init
from jaxconv.errors import StateDictError
from jaxconv.models import densenet, googlenet, inception, mobilenet, squeezenet, vgg

# --- torchvision's module names, in the order jaxconv's layers run ------------------------------


def _basic_conv(prefix: str) -> list[str]:
    """torchvision's BasicConv2d (GoogLeNet, Inception v3): a conv and its BatchNorm."""
    return [f"{prefix}.conv", f"{prefix}.bn"]


def _resnet(options: dict) -> Iterator[str]:
    convs = 2 if options["kind"] == "basic" else 3
    yield from ("conv1", "bn1")
    for stage, count in enumerate(options["depths"], 1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            for index in range(1, convs + 1):
                yield from (f"{prefix}.conv{index}", f"{prefix}.bn{index}")
            if block == 0 and (stage > 1 or options["kind"] == "bottleneck"):
                yield from (f"{prefix}.downsample.0", f"{prefix}.downsample.1")
    yield "fc"


def _vgg(options: dict) -> Iterator[str]:
    per_conv = 3 if options.get("batch_norm") else 2  # conv, [bn,] relu
    index = 0
    for stage in vgg.CONFIGS[options["config"]]:
        for _ in stage:
            yield from (f"features.{index + offset}" for offset in range(per_conv - 1))
            index += per_conv
        index += 1  # the max pool
    yield from ("classifier.0", "classifier.3", "classifier.6")


def _alexnet(options: dict) -> Iterator[str]:
    yield from (f"features.{index}" for index in (0, 3, 6, 8, 10))
    yield from (f"classifier.{index}" for index in (1, 4, 6))


def _googlenet(options: dict) -> Iterator[str]:
    for stem in ("conv1", "conv2", "conv3"):
        yield from _basic_conv(stem)
    for name in googlenet.GOOGLENET:  # branch1 is one conv; branch4 a max pool, then a conv
        for branch in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1"):
            yield from _basic_conv(f"{name}.{branch}")
    yield "fc"
    for aux in ("aux1", "aux2") if options.get("aux_logits") else ():
        yield from (*_basic_conv(f"{aux}.conv"), f"{aux}.fc1", f"{aux}.fc2")


def _inception_v3(options: dict) -> Iterator[str]:
    for stem in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"):
        yield from _basic_conv(stem)
    for mixed, branches in inception.MIXED.items():
        for branch, steps in branches.items():
            convs = [step for step in steps if step[0] not in ("max", "avg")]
            for index, step in enumerate(convs, 1):  # one conv keeps the branch's name
                name = f"{mixed}.{branch}" + (f"_{index}" if len(convs) > 1 or step[0] == "split" else "")
                for part in ("a", "b") if step[0] == "split" else ("",):
                    yield from _basic_conv(name + part)
    yield "fc"
    if options.get("aux_logits"):
        yield from (*_basic_conv("AuxLogits.conv0"), *_basic_conv("AuxLogits.conv1"), "AuxLogits.fc")


def _densenet(options: dict) -> Iterator[str]:
    yield from ("features.conv0", "features.norm0")
    blocks = options["block_sizes"]
    for block, size in enumerate(blocks, 1):
        for layer in range(1, size + 1):
            prefix = f"features.denseblock{block}.denselayer{layer}"
            yield from (f"{prefix}.{part}" for part in ("norm1", "conv1", "norm2", "conv2"))
        if block < len(blocks):
            yield from (f"features.transition{block}.norm", f"features.transition{block}.conv")
    yield from (f"features.norm{len(blocks) + 1}", "classifier")


def _squeezenet(options: dict) -> Iterator[str]:
    yield "features.0"  # then its ReLU at 1
    for index, row in enumerate(squeezenet.VERSIONS[options["version"]][2], 2):
        if row != "pool":
            yield from (f"features.{index}.{part}" for part in ("squeeze", "expand1x1", "expand3x3"))
    yield "classifier.1"


def _mobilenet_v2(options: dict) -> Iterator[str]:
    yield from ("features.0.0", "features.0.1")
    index = 1
    for expansion, _, repeats, _ in mobilenet.MOBILENET_V2:
        for _ in range(repeats):
            prefix, unit = f"features.{index}.conv", 0
            if expansion != 1:  # the 1x1 expansion, a conv-norm-ReLU6 unit
                yield from (f"{prefix}.0.0", f"{prefix}.0.1")
                unit = 1
            yield from (
                f"{prefix}.{unit}.0",
                f"{prefix}.{unit}.1",
                f"{prefix}.{unit + 1}",
                f"{prefix}.{unit + 2}",
            )
            index += 1
    yield from (f"features.{index}.0", f"features.{index}.1", "classifier.1")


@dataclasses.dataclass(frozen=True)
class _Entry:
    zoo_name: str
    module_names: Callable[[dict], Iterator[str]]


def _table() -> dict[str, _Entry]:
    """torchvision's name -> the zoo's builder (the ``_tv`` variant where the paper's differs) and names."""
    table = {
        "alexnet": _Entry("alexnet_tv", _alexnet),
        "googlenet": _Entry("googlenet_tv", _googlenet),
        "inception_v3": _Entry("inception_v3", _inception_v3),
        "mobilenet_v2": _Entry("mobilenet_v2", _mobilenet_v2),
    }
    for depth in (11, 13, 16, 19):
        table[f"vgg{depth}"] = _Entry(f"vgg{depth}", _vgg)
        table[f"vgg{depth}_bn"] = _Entry(f"vgg{depth}_bn", _vgg)
    for depth in (18, 34, 50, 101, 152):
        table[f"resnet{depth}"] = _Entry(f"resnet{depth}_tv", _resnet)
    for name in (
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ):
        table[name] = _Entry(name, _resnet)
    for depth in densenet.IMAGENET:
        if depth != 264:  # torchvision has no DenseNet-264
            table[f"densenet{depth}"] = _Entry(f"densenet{depth}", _densenet)
    for version in squeezenet.VERSIONS:
        table[f"squeezenet{version}"] = _Entry(f"squeezenet{version}", _squeezenet)
    return table


TORCHVISION: dict[str, _Entry] = _table()


def names() -> list[str]:
    """The torchvision model names `from_torchvision` loads, sorted."""
    return sorted(TORCHVISION)


def _entry(name: str) -> _Entry:
    if name not in TORCHVISION:
        close = difflib.get_close_matches(name, TORCHVISION, n=3)
        hint = f"did you mean {close}? " if close else ""
        raise ValueError(
            f"from_torchvision: no torchvision model {name!r}; {hint}supported: {', '.join(names())}"
        )
    return TORCHVISION[name]


def model(name: str, **model_options: Any) -> Layer:
    """The jaxconv network that torchvision's ``name`` loads into, e.g. ``model('resnet50', num_classes=10)``."""
    return models.get(_entry(name).zoo_name, **model_options)


# --- jaxconv's side: the layers with weights, in the order they run -----------------------------


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One jaxconv leaf to fill: where it sits, its shape and dtype, and where it comes from."""

    tree: str  # 'params' or 'state'
    path: tuple[str, ...]
    dtype: Any
    key: str  # the torch tensor's name
    to_jax: Callable[[np.ndarray], np.ndarray]
    torch_shape: tuple[int, ...]


def _conv_kernel(shape: tuple[int, ...]) -> tuple[Callable, tuple[int, ...]]:
    """(O, I, H, W) -> (H, W, I, O)."""
    return (lambda weight: weight.transpose(2, 3, 1, 0)), (shape[3], shape[2], shape[0], shape[1])


def _dense_kernel(
    shape: tuple[int, ...], flattened: tuple[int, ...] | None
) -> tuple[Callable, tuple[int, ...]]:
    """(O, D) -> (D, O); after a Flatten of an (H, W, C) map, D's order goes from (C, H, W) to (H, W, C)."""
    if flattened is None:
        return (lambda weight: weight.T), (shape[1], shape[0])
    height, width, channels = flattened
    to_conv, _ = _conv_kernel((height, width, channels, shape[1]))
    return (
        lambda weight: to_conv(weight.reshape(shape[1], channels, height, width)).reshape(shape),
        (shape[1], shape[0]),
    )


_TORCH_LEAVES = {"kernel": "weight", "bias": "bias"}
_TORCH_NORM_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


@dataclasses.dataclass(frozen=True)
class _Weighted:
    """A Conv, Dense or BatchNorm layer as `trace_init` saw it; ``flattened`` is the (H, W, C) map a
    Flatten just before a Dense flattened, if any."""

    path: tuple[str, ...]
    kind: str
    leaves: dict[str, dict[str, jax.ShapeDtypeStruct]]  # 'params' / 'state' -> leaf name -> shape
    flattened: tuple[int, ...] | None


def _weighted_layers(net: Layer, input_shape: tuple[int, ...]) -> list[_Weighted]:
    """jaxconv's Conv, Dense and BatchNorm layers in the order they run, found under `jax.eval_shape`."""
    layers: list[_Weighted] = []

    def trace() -> None:
        _, records = trace_init(net, jax.random.key(0), input_shape)
        flattened = None
        for record in records:
            if record.info.kind == "Flatten" and len(record.input_shape) == 4:
                flattened = record.input_shape[1:] if np.prod(record.input_shape[1:3]) > 1 else None
            elif record.info.kind in ("Conv", "Dense", "BatchNorm"):
                shapes = {
                    tree: {leaf: jax.ShapeDtypeStruct(a.shape, a.dtype) for leaf, a in values.items()}
                    for tree, values in (("params", record.params), ("state", record.state))
                }
                layers.append(_Weighted(record.path, record.info.kind, shapes, flattened))
                flattened = None

    jax.eval_shape(trace)
    return layers


def _slots(layer: _Weighted, module: str) -> Iterator[_Slot]:
    """The leaves of one jaxconv layer and the tensors of torch module ``module`` that fill them."""
    names = _TORCH_NORM_LEAVES if layer.kind == "BatchNorm" else _TORCH_LEAVES
    for tree, leaves in layer.leaves.items():
        for leaf, struct in leaves.items():
            if layer.kind == "Conv" and leaf == "kernel":
                to_jax, torch_shape = _conv_kernel(struct.shape)
            elif layer.kind == "Dense" and leaf == "kernel":
                to_jax, torch_shape = _dense_kernel(struct.shape, layer.flattened)
            else:
                to_jax, torch_shape = _same, struct.shape
            key = f"{module}.{names[leaf]}"
            yield _Slot(tree, (*layer.path, leaf), struct.dtype, key, to_jax, torch_shape)


def _same(tensor: np.ndarray) -> np.ndarray:
    return tensor


# --- reading the state_dict ---------------------------------------------------------------------

StateDict = Mapping[str, Any] | str | os.PathLike


def _read(state_dict: StateDict) -> Mapping[str, Any]:
    """A mapping of names to tensors, or a ``.safetensors`` / ``.pth`` file read without unpickling code."""
    if isinstance(state_dict, Mapping):
        return state_dict
    path = os.fspath(state_dict)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return load_file(path)
    if path.endswith((".pth", ".pt", ".bin")):
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    raise ValueError(
        f"from_torchvision: cannot read {path!r}; pass a mapping of names to tensors, "
        "a .safetensors file or a .pth / .pt file saved with torch.save(model.state_dict(), ...)"
    )


def _to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor (any device, bfloat16 included) or array-like as a NumPy array."""
    if hasattr(tensor, "detach"):  # a torch.Tensor, without importing torch
        tensor = tensor.detach().cpu()
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return np.asarray(tensor)


# --- the import ------------------------------------------------------------------------------


def from_torchvision(name: str, state_dict: StateDict, **model_options: Any) -> tuple[Params, State]:
    """``(params, state)`` for ``model(name, **model_options)`` from torchvision's ``state_dict``.

    ``name`` is torchvision's model name (see `names`); ``state_dict`` maps
    torchvision's tensor names to tensors (torch tensors, NumPy arrays), or is
    the path of a ``.safetensors`` or ``.pth`` file. ``model_options`` are those
    the weights were made with, such as ``num_classes=10`` or
    ``aux_logits=True`` (GoogLeNet, Inception v3; torchvision's pretrained files
    hold the auxiliary classifiers). Raises `jaxconv.StateDictError` naming every
    missing, unexpected or misshapen tensor.
    """
    entry = _entry(name)
    where = f"from_torchvision({name!r}{''.join(f', {k}={v!r}' for k, v in model_options.items())})"
    net = model(name, **model_options)
    layers = _weighted_layers(net, models.input_shape(entry.zoo_name, 1))
    modules = list(entry.module_names({**models.spec(entry.zoo_name).options, **model_options}))
    if len(layers) != len(modules):
        raise ValueError(
            f"{where}: these options give {len(layers)} conv, dense and norm layers where torchvision's "
            f"{name} has {len(modules)}; load torchvision weights with the architecture options at their "
            "defaults (num_classes, aux_logits and dropout may change)"
        )
    slots = [slot for layer, module in zip(layers, modules, strict=True) for slot in _slots(layer, module)]
    tensors = _read(state_dict)
    _check(where, name, slots, tensors)
    trees: dict[str, dict] = {"params": {}, "state": {}}
    for slot in slots:
        value = jnp.asarray(slot.to_jax(_to_numpy(tensors[slot.key])), slot.dtype)
        _put(trees[slot.tree], slot.path, value)
    return trees["params"], trees["state"]


def _put(tree: dict, path: tuple[str, ...], value: jax.Array) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _check(where: str, name: str, slots: list[_Slot], tensors: Mapping[str, Any]) -> None:
    """Raise `StateDictError` listing every missing, unexpected and misshapen tensor, with the fix."""
    expected = {slot.key for slot in slots}
    missing = [slot for slot in slots if slot.key not in tensors]
    unexpected = [key for key in tensors if key not in expected and not key.endswith(".num_batches_tracked")]
    misshapen = [
        (slot, tuple(np.shape(tensors[slot.key])))
        for slot in slots
        if slot.key in tensors and tuple(np.shape(tensors[slot.key])) != slot.torch_shape
    ]
    if not (missing or unexpected or misshapen):
        return
    lines = [f"{where}: the state_dict does not fit torchvision's {name} built with these options"]
    lines += [f"  missing: {s.key!r} of shape {s.torch_shape}, for {'/'.join(s.path)}" for s in missing[:5]]
    lines += [f"  unexpected: {key!r} of shape {tuple(np.shape(tensors[key]))}" for key in unexpected[:5]]
    lines += [
        f"  misshapen: {s.key!r} has shape {got}, expected {s.torch_shape} for {'/'.join(s.path)}"
        for s, got in misshapen[:5]
    ]
    counts = {"missing": len(missing), "unexpected": len(unexpected), "misshapen": len(misshapen)}
    if any(count > 5 for count in counts.values()):
        lines.append("  (" + ", ".join(f"{count} {kind}" for kind, count in counts.items()) + " in all)")
    lines.append("fix: " + _fix(name, missing, unexpected, misshapen))
    raise StateDictError("\n".join(lines))


def _fix(name: str, missing: list[_Slot], unexpected: list[str], misshapen: list) -> str:
    aux = ("aux1.", "aux2.", "AuxLogits.") if name in ("googlenet", "inception_v3") else ()
    if aux and unexpected and all(key.startswith(aux) for key in unexpected) and not missing:
        return "the state_dict holds auxiliary classifiers: pass aux_logits=True (or drop those tensors)"
    if aux and missing and all(slot.key.startswith(aux) for slot in missing) and not unexpected:
        return "the state_dict has no auxiliary classifiers: pass aux_logits=False"
    if misshapen and not (missing or unexpected):
        return (
            "pass the options the weights were made with (num_classes is the first dimension of the "
            "last layer's weight)"
        )
    return "pass the state_dict of the same torchvision model (name and options) as here"
