"""Per-example gradients: one gradient per example of a batch, for norm studies and DP-SGD.

A per-example loss has the signature

    loss_fn(params, state, x, y, key) -> scalar        # or (scalar, aux) with has_aux=True

and is called on ONE example that keeps a batch axis of one: ``x`` is (1, H, W, C)
and ``y`` is (1, ...), the jaxconv convention, so every layer sees the shapes it
sees in training. `net_loss` builds one from any net (a zoo model included):

>>> import jax, jaxconv as jc
>>> net = jc.serial(jc.Conv(4, 3), jc.Relu, jc.Flatten, jc.Dense(10))
>>> _, params, state = net.init(jax.random.key(0), (-1, 8, 8, 1))
>>> from jaxconv.per_example import net_loss, per_example_grads
>>> grads_fn = per_example_grads(net_loss(net))
>>> grads = grads_fn(params, state, jax.numpy.ones((5, 8, 8, 1)), jax.numpy.arange(5))
>>> grads["dense_3"]["kernel"].shape  # (N, *kernel.shape)
(5, 144, 10)

Randomness: with a ``key``, example ``i`` of the batch gets
``jax.random.fold_in(key, i)``, whatever the strategy, so Dropout masks are
reproducible example by example.

Strategies (all give the same numbers; they differ in speed and memory):

- ``'vmap'``: `jax.vmap` of `jax.grad` over all examples at once. The memory
  of N gradients; on CPU the convolution weight gradients become grouped
  convolutions that XLA's CPU backend runs slowly.
- ``'chunked'``: vmap over ``chunk_size`` examples at a time, a `lax.scan` over
  the chunks: bounded memory.
- ``'loop'``: one example at a time in a `lax.scan` (``chunk_size=1``).
- ``'einsum'``: for a loss from `net_loss`: one vmapped forward and backward
  pass that keeps each Conv's and Dense's input and output gradient per
  example; their weight gradients are einsums of input patches and output
  gradients (Opacus' method), every other parameter's come from vmap
  (`jaxconv.per_example.taps`).
- ``'auto'``: ``'einsum'`` for a `net_loss` loss on every backend (on accelerators it is
  large matrix products, where vmap's grouped convolutions are the alternative); for any other
  loss (or with ``chunk_size`` or ``has_aux``), ``'loop'`` on CPU, else ``'chunked'`` when
  ``chunk_size`` is given, else ``'vmap'``.

What 'auto' was measured against (``python benchmarks/per_example.py --materialised``, a shared
2-core CPU, every example's whole gradient, against a jitted single-example `jax.grad` called N
times from Python, all in one process): ``'einsum'`` was the fastest strategy on the small
Fashion-MNIST CNN and on CIFAR ResNet-20 with GroupNorm at batches 16 and 64 (``'vmap'``
1.3-2.9x slower, ``'chunked'`` (16) 1.3-24x, ``'loop'`` about 6x). Against the Python loop:
batch 16, 1.5-1.8x (small CNN) and 1.8-2.2x (ResNet-20); batch 64, 1.0-1.9x and 1.0-2.8x after
`reuse_host_memory` (the low ends on an overloaded machine; 1.83x and 1.99x on a quiet one), but
without it 1.12x and 1.49x on a quiet machine and 0.5-0.9x on a loaded one: on a CPU, glibc
gives every output over 32 MiB (the small CNN's 108 MB at batch 64) fresh pages on every call,
25,000 page faults that cost more than the arithmetic. Give each call the previous call's
gradients to write into, ``grads_fn(params, state, x, y, key, out=previous)`` (donated): the
small CNN at batch 64 then had 1 page fault a call and ran 1,352 examples/s against the default's
843, 1.86x the loop (725) and 2.75x Opacus' ``grad_sample`` (491) in one run (the same machine,
2026-12-06). ResNet-20's faults are its temporaries', not its outputs' (69 MB in leaves under
32 MiB), so ``out`` does not change them; `reuse_host_memory` (process-wide) removes both kinds.
"""

from jaxconv.host_memory import reuse_host_memory  # where per-example users first met it
from jaxconv.per_example.grads import (
    NetLoss,
    choose_strategy,
    net_loss,
    per_example_grad_norms,
    per_example_grads,
)
from jaxconv.per_example.mapped import (
    STRATEGIES,
    LossFn,
    Strategy,
    example_keys,
    example_rows,
    layer_squared_norms,
    map_examples,
    resolve_strategy,
)
from jaxconv.per_example.taps import ghost_grad_norms, tapped_per_example_grads

__all__ = [
    "STRATEGIES",
    "LossFn",
    "NetLoss",
    "Strategy",
    "choose_strategy",
    "example_keys",
    "example_rows",
    "ghost_grad_norms",
    "layer_squared_norms",
    "map_examples",
    "net_loss",
    "per_example_grad_norms",
    "per_example_grads",
    "resolve_strategy",
    "reuse_host_memory",
    "tapped_per_example_grads",
]
