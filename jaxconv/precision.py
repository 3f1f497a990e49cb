"""Mixed precision: compute in bfloat16 (or float16) with float32 master weights.

`mixed_precision` wraps any layer, a whole net or chosen sub-layers, in a dtype
policy (Micikevicius et al. 2018, "Mixed Precision Training"):

- params stay float32 in the caller's hands (the master weights); inside
  ``apply`` a bfloat16 copy is used, so the gradients come back float32 and the
  optimiser updates float32 weights;
- inputs are cast to the compute dtype, so every convolution and matrix
  multiply runs in it;
- normalisation computes its statistics in float32 whatever its input (see
  `jaxconv.layers.norm`), and the state (BatchNorm's running statistics) stays
  float32, so a train step's state keeps its dtype and never recompiles;
- outputs come back as ``output_dtype`` (float32 by default), so the loss, the
  softmax and the logits' gradient are float32.

>>> import jax, jax.numpy as jnp, jaxconv as jc
>>> from jaxconv.precision import mixed_precision
>>> net = mixed_precision(jc.serial(jc.Conv(8, 3), jc.BatchNorm(), jc.Relu, jc.Flatten, jc.Dense(10)))
>>> _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 3))
>>> logits, state = net.apply(params, state, jnp.ones((2, 8, 8, 3)), train=True)
>>> logits.dtype, state["batchnorm_1"]["mean"].dtype, params["conv_0"]["kernel"].dtype
(dtype('float32'), dtype('float32'), dtype('float32'))

bfloat16 is the supported path: it has float32's exponent range, so gradients
neither underflow nor overflow and no loss scaling is needed. float16 works
the same way but its gradients underflow below 6e-8; train in float16 only with
a loss scale (multiply the loss by e.g. 2**12 before `jax.grad`, divide the
gradients by it after), or prefer bfloat16.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.core import Layer, PyTree, info, redescribed

DTypeLike = Any  # jnp.bfloat16, 'bfloat16', np.dtype(...)


def mixed_precision(
    net: Layer, compute_dtype: DTypeLike = jnp.bfloat16, output_dtype: DTypeLike | None = jnp.float32
) -> Layer:
    """``net`` computing in ``compute_dtype`` with float32 params and state, returning ``output_dtype``.

    Inside ``apply`` the floating-point params and inputs are cast to
    ``compute_dtype`` (integer inputs such as uint8 pixels are left to the
    layers, which convert them to their params' dtype); the new state is
    returned in at least float32; floating outputs are cast to ``output_dtype``
    (None leaves them in ``compute_dtype``, to chain low-precision parts).
    Gradients with respect to the params are float32, since the cast happens
    inside ``apply``. ``init``, params, state and the description (kind,
    children, name) are ``net``'s, with the dtypes added to its spec.

    Shapes are ``net``'s: e.g. (N, H, W, C) -> (N, classes).
    """
    compute = _floating_dtype("compute_dtype", compute_dtype)
    output = None if output_dtype is None else _floating_dtype("output_dtype", output_dtype)

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = net.apply(cast(params, compute), state, cast(x, compute), key=key, train=train)
        new_state = jax.tree.map(
            lambda leaf: _cast_leaf(leaf, jnp.promote_types(leaf.dtype, jnp.float32)), new_state
        )
        return (y if output is None else cast(y, output)), new_state

    spec = {**info(net).spec, "dtype": compute.name, "output_dtype": output and output.name}
    return redescribed(net, apply, spec=spec)


def cast(tree: PyTree, dtype: DTypeLike) -> PyTree:
    """Every floating-point array of ``tree`` in ``dtype``; integer and boolean leaves unchanged."""
    return jax.tree.map(lambda leaf: _cast_leaf(leaf, dtype), tree)


def _cast_leaf(leaf: Any, dtype: DTypeLike) -> Any:
    leaf = jnp.asarray(leaf)
    return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def _floating_dtype(argument: str, dtype: DTypeLike) -> jnp.dtype:
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(
            f"{argument}={dtype!r} is not a dtype; use jnp.bfloat16, jnp.float16 or jnp.float32"
        ) from error
    if not jnp.issubdtype(resolved, jnp.floating):
        raise ValueError(
            f"{argument}={resolved.name} is not a floating-point dtype; "
            "use jnp.bfloat16, jnp.float16 or jnp.float32"
        )
    return resolved


__all__ = ["cast", "mixed_precision"]
