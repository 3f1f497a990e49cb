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
(`jaxconv.core.trace` gives that order and every layer's input shape), so
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
import functools
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import core, models
from jaxconv.core import Layer, LayerPath, Params, Record, State, leaf_path
from jaxconv.errors import StateDictError
from jaxconv.interop.torchvision_modules import TORCHVISION, Entry


def names() -> list[str]:
    """The torchvision model names `from_torchvision` loads, sorted."""
    return sorted(TORCHVISION)


def _entry(name: str) -> Entry:
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
    path: LayerPath
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


_TORCH_LEAVES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
"""jaxconv's leaf names (Conv and Dense ``kernel``, ``bias``; BatchNorm's ``scale``, ``bias`` and state
``mean``, ``var``) -> the torch tensor's name in its module."""


@dataclasses.dataclass(frozen=True)
class _Weighted:
    """A layer with its own params or state (Conv, Dense, BatchNorm) as `jaxconv.core.trace` saw it;
    ``flattened`` is the (H, W, C) map a Flatten just before a Dense flattened, if any."""

    path: LayerPath
    leaves: dict[str, dict[str, jax.ShapeDtypeStruct]]  # 'params' / 'state' -> leaf name -> shape
    flattened: tuple[int, ...] | None


def _weighted_layers(records: list[Record]) -> list[_Weighted]:
    """The layers holding params or state, in the order they run (the records of `jaxconv.core.trace`)."""
    layers: list[_Weighted] = []
    flattened = None
    for record in records:
        if record.info.kind == "Flatten" and len(record.input_shape) == 4:
            flattened = record.input_shape[1:] if np.prod(record.input_shape[1:3]) > 1 else None
        elif _holds_weights(record):
            leaves = {"params": record.params, "state": record.state}
            layers.append(_Weighted(record.path, leaves, flattened))
            flattened = None
    return layers


def _holds_weights(record: Record) -> bool:
    """A layer with params or state of its own: not a combinator (a `shape_dependent` layer's record
    repeats the record of the layer it chose)."""
    own = not record.info.children and record.info.kind != "ShapeDependent"
    return own and not (core.is_empty(record.params) and core.is_empty(record.state))


def _slots(layer: _Weighted, module: str) -> Iterator[_Slot]:
    """The leaves of one jaxconv layer and the tensors of torch module ``module`` that fill them; a
    kernel's layout follows from its rank: (H, W, I, O) for a conv, (D, O) for a dense layer."""
    for tree, leaves in layer.leaves.items():
        for leaf, struct in leaves.items():
            if leaf == "kernel" and len(struct.shape) == 4:
                to_jax, torch_shape = _conv_kernel(struct.shape)
            elif leaf == "kernel":
                to_jax, torch_shape = _dense_kernel(struct.shape, layer.flattened)
            else:
                to_jax, torch_shape = _same, struct.shape
            key = f"{module}.{_TORCH_LEAVES[leaf]}"
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
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        if path.endswith((".pth", ".pt", ".bin")):
            import torch

            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
                raise StateDictError(
                    f"from_torchvision: {path} is not a state_dict of tensors that loads without running "
                    f"its code ({type(error).__name__}: {str(error).splitlines()[0]}); it may be corrupt or "
                    "unsafe (a pickle that calls functions). Save the weights with "
                    "torch.save(model.state_dict(), ...) or as .safetensors"
                ) from None
    except OSError as error:
        raise StateDictError(f"from_torchvision: cannot read {path}: {error.strerror or error}") from None
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
    shape_trace = core.trace(model(name, **model_options), models.input_shape(entry.zoo_name, 1))
    layers = _weighted_layers(shape_trace.records)
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
    by_leaf = {(slot.tree, slot.path): slot for slot in slots}

    def load(tree: str, keys: tuple, struct: jax.ShapeDtypeStruct) -> jax.Array:
        slot = by_leaf[tree, leaf_path(keys)]
        return jnp.asarray(slot.to_jax(_to_numpy(tensors[slot.key])), slot.dtype)

    params, state = (
        jax.tree_util.tree_map_with_path(functools.partial(load, tree), getattr(shape_trace, tree))
        for tree in ("params", "state")
    )
    return params, state


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
