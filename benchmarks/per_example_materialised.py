"""Materialised per-example gradients: `per_example_grads`' strategies against a jitted per-example
loop, torch.func and Opacus' per-sample gradients (``grad_sample``), on two nets in one run.

The nets: the small CNN of `per_example.py` (BatchNorm -> nothing, or GroupNorm with
``--norm group``) and CIFAR ResNet-20 with GroupNorm (``jc.models.get('resnet20', norm='group')``;
in PyTorch the peers harness's ResNet-20 with its BatchNorms made GroupNorm by Opacus'
``ModuleValidator.fix``, the same groups). Every contender returns every example's whole gradient:

- ``jaxconv <strategy>``: ``jax.jit(per_example_grads(net_loss(net), strategy=...))``; ``default``
  is the strategy ``'auto'`` picks (``'einsum'`` for a `net_loss`); ``default, out=`` gives each
  call the previous call's gradients to write into (``out=``, donated), as a study that keeps
  one batch's gradients at a time does;
- ``JAX per-example loop``: a jitted single-example `jax.grad` called N times from Python (N
  gradient pytrees); ``... + stack`` stacks them into the layout ``per_example_grads`` returns;
- ``torch.func``: ``vmap(grad)``; ``Opacus``: ``GradSampleModule`` forward and backward, the
  per-sample gradients in each parameter's ``grad_sample``.

``--reuse-host-memory`` first calls `jaxconv.host_memory.reuse_host_memory` (process-wide: glibc
keeps freed large blocks, JAX's CPU dispatch is synchronous). The default of every contender is
checked against the loop (max |difference|). Run as ``python benchmarks/per_example.py
--materialised [--reuse-host-memory] [--batch-size 64] [--repeats 5] [--nets small_cnn,resnet20] [--slow-strategies]``.
"""

from __future__ import annotations

import copy
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds

import jaxconv as jc
from jaxconv.per_example import choose_strategy, net_loss, per_example_grads

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
STRATEGIES = {"default": {"strategy": "auto"}, "vmap": {"strategy": "vmap"}}
SLOW_STRATEGIES = {  # seconds a call on ResNet-20 at batch 64: timed with --slow-strategies
    "chunked 16": {"strategy": "chunked", "chunk_size": 16},
    "loop (lax.scan)": {"strategy": "loop"},
}
SHAPES = {"small_cnn": (28, 28, 1), "resnet20": (32, 32, 3)}


def jax_nets(norm: str | None) -> dict[str, jc.Layer]:
    from per_example import jax_net

    return {"small_cnn": jax_net(norm), "resnet20": jc.models.get("resnet20", norm="group")}


def torch_nets(norm: str | None) -> dict[str, object]:
    from opacus.validators import ModuleValidator
    from peer_torch import ResNet
    from per_example import torch_net
    from workloads import RESNET20

    return {"small_cnn": torch_net(norm), "resnet20": ModuleValidator.fix(ResNet(RESNET20, 3, 10))}


def jax_contenders(net: jc.Layer, shape, batch: int, slow_strategies: bool) -> tuple[dict, int, Callable]:
    _, params, state = net.init(jax.random.key(0), (-1, *shape))
    x = jax.random.normal(jax.random.key(1), (batch, *shape))
    y, key = jnp.arange(batch) % 10, jax.random.key(2)
    strategies = {**STRATEGIES, **(SLOW_STRATEGIES if slow_strategies else {})}
    contenders = {}
    for name, options in strategies.items():
        fn = jax.jit(per_example_grads(net_loss(net), **options))
        contenders[f"jaxconv {name}"] = lambda fn=fn: fn(params, state, x, y, key)
    reusing, last = per_example_grads(net_loss(net)), {}

    def default_into_last():
        last["grads"] = reusing(params, state, x, y, key, out=last.pop("grads", None))
        return last["grads"]

    contenders["jaxconv default, out="] = default_into_last
    one = jax.jit(jax.grad(net_loss(net)))
    examples = [(x[i : i + 1], y[i : i + 1], jax.random.fold_in(key, i)) for i in range(batch)]
    contenders["JAX per-example loop"] = loop = lambda: [one(params, state, *example) for example in examples]
    contenders["JAX per-example loop + stack"] = lambda: jax.tree.map(
        lambda *leaves: jnp.stack(leaves), *loop()
    )
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    return (
        contenders,
        count,
        lambda: _max_difference(
            contenders["jaxconv default"](), contenders["JAX per-example loop + stack"]()
        ),
    )


def torch_contenders(model, shape, batch: int) -> tuple[dict, int]:
    import torch
    from opacus import GradSampleModule
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    height, width, channels = shape
    x, y = torch.randn(batch, channels, height, width), torch.arange(batch) % 10
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(params, x_i, y_i):
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x_i[None],)), y_i[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")
    module = GradSampleModule(copy.deepcopy(model))  # it hooks the module it wraps

    def opacus():
        module.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(module(x), y).backward()
        return [p.grad_sample for p in module.parameters()]

    contenders = {"torch.func": lambda: per_sample(params, x, y), "Opacus grad_sample": opacus}
    return contenders, sum(p.numel() for p in model.parameters())


def page_faults_per_call(fn: Callable[[], object], calls: int = 3) -> float:
    """Minor page faults of this process per call of ``fn`` (after one warm call): fresh pages the
    kernel had to zero for the call's outputs and temporaries."""
    jax.block_until_ready(fn())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(fn())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _max_difference(actual, expected) -> float:
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(e))))
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    )


def run_materialised(
    batch: int, repeats: int, norm: str | None, nets: list[str], slow_strategies: bool
) -> dict:
    """Times every contender on each net (interleaved repeats); prints a table per net, returns
    {net: {contender: examples/s}}."""
    results = {}
    jax_by_name, torch_by_name = jax_nets(norm), torch_nets(norm)
    for name in nets:
        jax_functions, jax_count, check = jax_contenders(
            jax_by_name[name], SHAPES[name], batch, slow_strategies
        )
        torch_functions, torch_count = torch_contenders(torch_by_name[name], SHAPES[name], batch)
        auto = choose_strategy(net_loss(jax_by_name[name]), "auto")
        print(
            f"\n{name}: batch {batch}, parameters jaxconv {jax_count:,}, torch {torch_count:,}; 'auto' = {auto}"
        )
        print(f"jaxconv default against the stacked loop: max |difference| {check():.2e}")
        seconds = median_seconds({**jax_functions, **torch_functions}, repeats)
        throughput = {contender: batch / value for contender, value in seconds.items()}
        ours = throughput["jaxconv default"]
        print(f"{'contender':30s} {'examples/s':>11s} {'ms/call':>8s} {'default / it':>13s}")
        for contender, value in throughput.items():
            print(f"{contender:30s} {value:11,.0f} {1e3 * seconds[contender]:8.1f} {ours / value:12.2f}x")
        faults = {
            c: page_faults_per_call(jax_functions[c])
            for c in ("jaxconv default", "jaxconv default, out=", "JAX per-example loop")
        }
        print("minor page faults per call: " + ", ".join(f"{c} {v:,.0f}" for c, v in faults.items()))
        results[name] = throughput
    return results
