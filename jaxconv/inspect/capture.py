"""Every layer's output, by its path in ``params``, from one jitted pass over a net.

    outputs = jc.inspect.activations(net, params, state, images)
    outputs[("conv_0",)]          # (N, H, W, K): the first convolution's output volume
    outputs[()]                   # the net's own output: the logits

The net runs inside `jaxconv.core.intercept`, so every combinator (``serial``, ``residual``,
``parallel``, ``wired``, the zoo's blocks) threads params, state and keys exactly as in
``net.apply``; the hook only keeps what each child returns. The keys are the layers' paths
(`jaxconv.core.walk`), the same names as in ``params`` (``("residual_4", "body", "conv_0")``).
A layer whose children run inside a JAX transformation of their own (`jaxconv.remat`: its traits
say ``opaque``) is one volume: its insides are not kept. A layer applied twice keeps its last
output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax

from jaxconv.core import Key, Layer, LayerPath, Params, State, apply_watched, info, walk
from jaxconv.errors import LayerPathError
from jaxconv.traits import Traits

OnOutput = Callable[[LayerPath, Any], Any]  # on_output(path, y) -> the y the net goes on with

PathLike = LayerPath | str  # ("block_1", "conv_0") or "block_1/conv_0"


def activations(
    net: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    train: bool = False,
    key: Key | None = None,
    paths: Collection[PathLike] | None = None,
) -> dict[LayerPath, jax.Array]:
    """``{path: output}`` of every layer ``net`` applies, and ``()``: the net's output (the logits).

    x (N, H, W, C). One jitted pass: the outputs are those of ``net.apply(params, state, x,
    key=key, train=train)`` (with ``train=True`` BatchNorm uses the batch's statistics and a
    ``key`` drives dropout). ``paths`` keeps only those layers (a tuple of names or
    ``"a/b"``; the logits are always kept). The dict is in `layer_paths` order: the net, then
    each layer before its children, children in the order they are defined. A path the net
    does not have is a `LayerPathError` that lists the ones it has.
    """
    wanted = None if paths is None else tuple(sorted(as_path(path) for path in paths))
    if wanted is not None:
        _check_paths(net, wanted)
    outputs = _jitted(net, train, wanted)(params, state, x, key)
    return {path: outputs[path] for path in layer_paths(net) if path in outputs}  # in walk order


def as_path(path: PathLike) -> LayerPath:
    """``"a/b"`` or ``("a", "b")`` as the tuple ``("a", "b")``; ``""`` and ``()`` are the net."""
    if isinstance(path, str):
        return tuple(name for name in path.split("/") if name)
    return tuple(path)


def layer_paths(net: Layer) -> list[LayerPath]:
    """The path of every layer `activations` can keep, parents before children (the net at ``()``);
    the insides of an opaque layer (`jaxconv.remat`) are left out."""
    found, opaque = [], []
    for path, description in walk(net):
        if any(len(path) > len(above) and path[: len(above)] == above for above in opaque):
            continue
        found.append(path)
        if (description.traits or Traits()).opaque:
            opaque.append(path)
    return found


def last_conv_path(net: Layer, *, through_elementwise: bool = False) -> LayerPath:
    """The path of the last convolution (``Conv``) of ``net`` in `layer_paths` order: Grad-CAM's
    usual layer. With ``through_elementwise``, the last of the elementwise layers that follow it
    in its block (its BatchNorm and ReLU: the conv block's output). A net without a Conv is a
    `LayerPathError`."""
    kept = set(layer_paths(net))
    convs = [path for path, description in walk(net) if description.kind == "Conv" and path in kept]
    if not convs:
        raise LayerPathError(f"{info(net).kind}: the net has no Conv layer to explain; give a layer path")
    path = convs[-1]
    if not through_elementwise:
        return path
    siblings = dict(walk(net))[path[:-1]].children
    names = [name for name, _ in siblings]
    for name, child in siblings[names.index(path[-1]) + 1 :]:
        if not (info(child).traits or Traits()).elementwise:
            break
        path = (*path[:-1], name)
    return path


def run_net(
    net: Layer,
    params: Params,
    state: State,
    x: Any,
    key: Key | None,
    train: bool,
    on_output: OnOutput,
) -> Any:
    """``net.apply(params, state, x, key=key, train=train)[0]`` where every layer's output y goes
    on as ``on_output(path, y)`` (the net's own at path ``()`` too); to watch or perturb a layer.
    An opaque layer (`jaxconv.remat`) runs as it is, and only its output is seen
    (`jaxconv.core.apply_watched`)."""
    return apply_watched(net, params, state, x, key, train, lambda path, layer, x, y: on_output(path, y))


@functools.lru_cache(maxsize=64)
def _jitted(net: Layer, train: bool, wanted: tuple[LayerPath, ...] | None):
    def run(params: Params, state: State, x: jax.Array, key: Key | None) -> dict[LayerPath, jax.Array]:
        kept: dict[LayerPath, jax.Array] = {}

        def keep(path: LayerPath, y: Any) -> Any:
            if wanted is None or path in wanted or path == ():
                kept[path] = y
            return y

        run_net(net, params, state, x, key, train, keep)
        return kept

    return jax.jit(run)


def _check_paths(net: Layer, wanted: Sequence[LayerPath]) -> None:
    known = set(layer_paths(net))
    unknown = [path for path in wanted if path not in known]
    if unknown:
        names = ", ".join("/".join(path) for path in layer_paths(net) if path)
        raise LayerPathError(
            f"activations: the net has no layer at {', '.join(repr('/'.join(p)) for p in unknown)}; "
            f"its layer paths are: {names}"
        )
