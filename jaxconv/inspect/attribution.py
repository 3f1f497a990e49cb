"""Which pixels a class score depends on: saliency, Grad-CAM (and Grad-CAM++) and occlusion.

    maps = jc.inspect.saliency(net, params, state, images)                  # (N, H, W, C)
    cams = jc.inspect.grad_cam(net, params, state, images, layer="conv_2")  # (N, H, W) in [0, 1]
    drops = jc.inspect.occlusion(net, params, state, images, window=8, stride=4)  # (N, H, W)

Each works on any net and is batched and jitted. ``target`` is the class whose score (the
net's output before any softmax) is explained: an int for every image, an (N,) array, or
None for each image's predicted class.

- `saliency`: |d score / d x| (Simonyan et al. 2014), optionally SmoothGrad's average over
  noisy copies (Smilkov et al. 2017).
- `grad_cam`: ReLU(sum_k alpha_k A_k) over the K maps A of the layer at ``layer``, with
  alpha_k the spatial mean of d score / d A_k (Selvaraju et al. 2017); Grad-CAM++'s
  weights (Chattopadhay et al. 2018) with ``plus_plus=True``. Bilinearly resized to the
  input and scaled to [0, 1] per image, as the ``grad-cam`` package does.
- `occlusion`: the drop of the score when a window of the image is set to ``baseline``
  (Zeiler & Fergus 2014), averaged over the windows covering each pixel, as Captum does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv.core import Key, Layer, LayerPath, Params, State
from jaxconv.errors import LayerPathError, ShapeError
from jaxconv.inspect.capture import PathLike, as_path, layer_paths, run_net

Target = int | jax.Array | np.ndarray | None


def saliency(
    net: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    target: Target = None,
    samples: int = 0,
    noise: float = 0.15,
    key: Key | None = None,
) -> jax.Array:
    """(N, H, W, C) |d score / d x| for x (N, H, W, C); with ``samples`` > 0, SmoothGrad: the mean
    of that over ``samples`` copies of x plus Gaussian noise of standard deviation ``noise``
    times each image's value range (``key`` draws it; default key 0)."""
    target = _targets(net, params, state, x, target)
    if samples <= 0:
        return _saliency(net, params, state, x, target)
    key = jax.random.key(0) if key is None else key
    return _smooth_saliency(net, samples, params, state, x, target, jnp.float32(noise), key)


def grad_cam(
    net: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    layer: PathLike,
    target: Target = None,
    plus_plus: bool = False,
    resize: bool = True,
) -> jax.Array:
    """(N, H, W) Grad-CAM of the layer at path ``layer`` (its output must be (N, h, w, K)), in
    [0, 1] per image; ``resize=False`` keeps the layer's (N, h, w) resolution."""
    path = as_path(layer)
    _check_map_layer(net, params, state, x, path)
    target = _targets(net, params, state, x, target)
    return _grad_cam(net, path, plus_plus, resize, params, state, x, target)


def occlusion(
    net: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    window: int | tuple[int, int] = 8,
    stride: int | tuple[int, int] = 4,
    target: Target = None,
    baseline: float = 0.0,
    chunk: int = 16,
) -> jax.Array:
    """(N, H, W): score(x) - score(x with a window set to ``baseline``), averaged over the window
    positions that cover each pixel (0 where none does); windows of ``window`` pixels slide by
    ``stride`` over H and W, all channels at once; ``chunk`` positions run at a time."""
    window, stride = _pair(window), _pair(stride)
    height, width = x.shape[1:3]
    if window[0] > height or window[1] > width:
        raise ShapeError(f"occlusion: the window {window} is larger than the {height}x{width} image")
    target = _targets(net, params, state, x, target)
    return _occlusion(net, window, stride, chunk, params, state, x, target, jnp.float32(baseline))


def class_scores(net: Layer, params: Params, state: State, x: jax.Array, target: jax.Array) -> jax.Array:
    """(N,) the output of ``net`` at class ``target`` (N,) for each image of x."""
    logits, _ = net.apply(params, state, x)
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]


# --- the jitted bodies ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _saliency(net, params, state, x, target):
    return jnp.abs(jax.grad(lambda x: class_scores(net, params, state, x, target).sum())(x))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _smooth_saliency(net, samples, params, state, x, target, noise, key):
    spread = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]

    def one(key):
        return _saliency(net, params, state, x + spread * jax.random.normal(key, x.shape), target)

    return jax.lax.map(one, jax.random.split(key, samples)).mean(axis=0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _grad_cam(net, path, plus_plus, resize, params, state, x, target):
    shape = jax.eval_shape(lambda: _layer_output(net, path, params, state, x))

    def score(delta):
        kept = {}

        def perturb(at, y):
            if at == path:
                kept["maps"] = y = y + delta
            return y

        logits = run_net(net, params, state, x, None, False, perturb)
        return jnp.take_along_axis(logits, target[:, None], axis=1).sum(), kept["maps"]

    grads, maps = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    weights = _plus_plus_weights(maps, grads) if plus_plus else grads.mean(axis=(1, 2))
    cam = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", maps, weights))
    if resize:
        cam = jax.image.resize(cam, (*x.shape[:3],), "linear")
    low = cam.min(axis=(1, 2), keepdims=True)
    cam = cam - low
    return cam / (1e-7 + cam.max(axis=(1, 2), keepdims=True))


def _plus_plus_weights(maps: jax.Array, grads: jax.Array) -> jax.Array:
    """Grad-CAM++'s (N, K) weights: sum over positions of alpha * ReLU(grad), with alpha =
    g^2 / (2 g^2 + sum A g^3 + 1e-6) (0 where g is), the ``grad-cam`` package's formula."""
    squared, cubed = grads**2, grads**3
    denominator = 2 * squared + maps.sum(axis=(1, 2), keepdims=True) * cubed + 1e-6
    alpha = jnp.where(grads != 0, squared / denominator, 0.0)
    return (alpha * jax.nn.relu(grads)).sum(axis=(1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _occlusion(net, window, stride, chunk, params, state, x, target, baseline):
    height, width = x.shape[1:3]
    masks = jnp.asarray(_window_masks(height, width, window, stride))  # (P, H, W)

    def occluded(mask):
        mask = mask[None, :, :, None]
        return class_scores(net, params, state, x * (1 - mask) + baseline * mask, target)

    drops = class_scores(net, params, state, x, target) - jax.lax.map(occluded, masks, batch_size=chunk)
    counts = masks.sum(axis=0)
    total = jnp.einsum("pn,phw->nhw", drops, masks)
    return jnp.where(counts > 0, total / jnp.maximum(counts, 1), 0.0)


def _window_masks(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(P, H, W) float32: one mask per window position, rows first, floor((H - h) / s) + 1 of them."""
    masks = []
    for top in range(0, height - window[0] + 1, stride[0]):
        for left in range(0, width - window[1] + 1, stride[1]):
            mask = np.zeros((height, width), np.float32)
            mask[top : top + window[0], left : left + window[1]] = 1
            masks.append(mask)
    return np.stack(masks)


# --- checks ---------------------------------------------------------------------------------------


def _targets(net: Layer, params: Params, state: State, x: jax.Array, target: Target) -> jax.Array:
    """(N,) int32 classes: the given one(s), or each image's predicted class."""
    if target is None:
        return jnp.argmax(_logits(net, params, state, x), axis=-1).astype(jnp.int32)
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (x.shape[0],))


@functools.partial(jax.jit, static_argnums=0)
def _logits(net, params, state, x):
    return net.apply(params, state, x)[0]


def _layer_output(net: Layer, path: LayerPath, params: Params, state: State, x: jax.Array):
    kept = {}

    def keep(at, y):
        if at == path:
            kept["y"] = y
        return y

    run_net(net, params, state, x, None, False, keep)
    return kept["y"]


def _check_map_layer(net: Layer, params: Params, state: State, x: jax.Array, path: LayerPath) -> None:
    if path not in layer_paths(net) or path == ():
        names = ", ".join("/".join(p) for p in layer_paths(net) if p)
        raise LayerPathError(f"grad_cam: the net has no layer at {'/'.join(path)!r}; its layers: {names}")
    shape = jax.eval_shape(lambda: _layer_output(net, path, params, state, x)).shape
    if len(shape) != 4:
        raise LayerPathError(
            f"grad_cam: the layer at {'/'.join(path)!r} outputs shape {shape}, not a map (N, h, w, K); "
            "pick a convolutional layer before the global pooling or the Flatten"
        )


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
