"""Per-example clipped gradient sums: jaxconv's strategies against per-example loops, torch.func and Opacus.

The task is one DP-SGD step's expensive part: every example's gradient, clipped to L2 norm 1,
summed. The net is the default Fashion-MNIST model (`jaxconv.models.small.convnet`: CONV-BN-RELU-POOL
twice, FC-RELU-DROPOUT-FC) without its BatchNorms (BatchNorm has no per-example gradient), the
convolutions with biases instead; ``--norm group`` puts GroupNorm(32) in their place, as Opacus'
``ModuleValidator.fix`` does. The same net is built in PyTorch; both parameter counts are printed. All contenders run in one process on the same two
cores (``torch.set_num_threads(2)``, the process pinned to two CPUs for XLA), in interleaved
repeats, and report the median's throughput in examples/s. PyTorch's OpenMP threads sleep when
idle (``OMP_WAIT_POLICY=PASSIVE``): spinning, they steal the cores from the contender that follows.

    python benchmarks/per_example.py [--batch-size 64] [--repeats 7] [--norm none|group] [--smoke]

``--materialised`` measures every example's whole gradient instead (`per_example_grads` against
the loop, torch.func and Opacus' ``grad_sample``, on the small CNN and ResNet-20 with GroupNorm):
see `per_example_materialised.py`.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from _timing import median_seconds  # benchmarks/ is on the path when run as a script

import jaxconv as jc
from jaxconv.per_example import net_loss
from jaxconv.privacy import clipped_grad_sum

CLIP, WIDTH, HIDDEN, DROPOUT, GROUPS = 1.0, 32, 128, 0.3, 32
JAX_STRATEGIES = {
    "auto": {},
    "einsum": {},
    "ghost": {},
    "loop": {},
    "chunked": {"chunk_size": 16},
    "vmap": {},
}


def jax_net(norm: str | None = None) -> jc.Layer:
    """`jaxconv.models.small.convnet` without BatchNorm (``norm='group'``: GroupNorm): (N, 28, 28, 1) -> (N, 10)."""

    def stage(features: int) -> list[jc.Layer]:
        conv = jc.Conv(features, 3, padding=1, use_bias=norm is None)
        return [conv, *([jc.GroupNorm(GROUPS)] if norm else []), jc.Relu, jc.MaxPool(2)]

    return jc.serial(
        *stage(WIDTH),
        *stage(2 * WIDTH),
        jc.Flatten,
        jc.Dense(HIDDEN),
        jc.Relu,
        jc.Dropout(DROPOUT),
        jc.Dense(10),
    )


def torch_net(norm: str | None = None):
    """The same architecture in PyTorch, NCHW."""
    from torch import nn

    def stage(in_channels: int, features: int) -> list[nn.Module]:
        conv = nn.Conv2d(in_channels, features, 3, padding=1, bias=norm is None)
        return [conv, *([nn.GroupNorm(GROUPS, features)] if norm else []), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *stage(1, WIDTH), *stage(WIDTH, 2 * WIDTH), nn.Flatten(),
        nn.Linear(2 * WIDTH * 7 * 7, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, 10),
    )  # fmt: skip


# --- jaxconv and the JAX loop ------------------------------------------------------------------


def jax_contenders(batch_size: int, norm: str | None) -> tuple[dict[str, Callable[[], object]], int]:
    net = jax_net(norm)
    _, params, state = net.init(jax.random.key(0), (-1, 28, 28, 1))
    x = jax.random.normal(jax.random.key(1), (batch_size, 28, 28, 1))
    y = jnp.arange(batch_size) % 10
    key = jax.random.key(2)
    contenders = {}
    for strategy, options in JAX_STRATEGIES.items():
        fn = jax.jit(clipped_grad_sum(net_loss(net), CLIP, strategy=strategy, **options))
        contenders[f"jaxconv {strategy}"] = lambda fn=fn: fn(params, state, x, y, key)
    contenders["JAX per-example loop"] = jax_loop(net, params, state, x, y, key)
    return contenders, sum(leaf.size for leaf in jax.tree.leaves(params))


def jax_loop(net, params, state, x, y, key) -> Callable[[], object]:
    """A jitted single-example step (gradient, clip, add to the sum) called once per example from Python."""
    loss_fn = net_loss(net)

    @jax.jit
    def add_clipped(total, x_i, y_i, key_i):
        grads = jax.grad(loss_fn)(params, state, x_i, y_i, key_i)
        factor = jc.privacy.clip_factors(optax.tree.norm(grads), CLIP)
        return jax.tree.map(lambda t, g: t + factor * g, total, grads)

    keys = [jax.random.fold_in(key, i) for i in range(len(x))]
    examples = [(x[i : i + 1], y[i : i + 1], keys[i]) for i in range(len(x))]

    def run():
        total = jax.tree.map(jnp.zeros_like, params)
        for x_i, y_i, key_i in examples:
            total = add_clipped(total, x_i, y_i, key_i)
        return total

    return run


# --- PyTorch: torch.func, Opacus, the loop ----------------------------------------------------------


def torch_contenders(batch_size: int, norm: str | None) -> tuple[dict[str, Callable[[], object]], int]:
    import torch

    torch.manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28)
    y = torch.arange(batch_size) % 10
    model = torch_net(norm)
    contenders = {
        "torch.func": torch_func(model, x, y),
        "Opacus": opacus_step(torch_net(norm), x, y),
        "PyTorch per-example loop": torch_loop(model, x, y),
    }
    return contenders, sum(p.numel() for p in model.parameters())


def torch_func(model, x, y) -> Callable[[], object]:
    import torch
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(params, x_i, y_i):
        logits = functional_call(model, params, (x_i[None],))
        return torch.nn.functional.cross_entropy(logits, y_i[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")

    def run():
        grads = per_example(params, x, y)
        norms = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads.values()))
        factors = (CLIP / norms).clamp(max=1.0)
        return {name: torch.einsum("n,n...->...", factors, g) for name, g in grads.items()}

    return run


def opacus_step(model, x, y) -> Callable[[], object]:
    """GradSampleModule + DPOptimizer without noise: forward, backward, clip and accumulate."""
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    module = GradSampleModule(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(module.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=CLIP,
        expected_batch_size=len(x),
    )

    def run():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.clip_and_accumulate()  # the clipped sum, in each parameter's summed_grad
        return [p.summed_grad for p in module.parameters()]

    return run


def torch_loop(model, x, y) -> Callable[[], object]:
    import torch

    params = list(model.parameters())

    def run():
        total = [torch.zeros_like(p) for p in params]
        for i in range(len(x)):
            grads = torch.autograd.grad(
                torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params
            )
            factor = min(1.0, CLIP / float(torch.sqrt(sum(g.square().sum() for g in grads))))
            for t, g in zip(total, grads, strict=True):
                t.add_(g, alpha=factor)
        return total

    return run


# --- timing and the table -------------------------------------------------------------------------


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--norm", choices=["none", "group"], default="none", help="in place of BatchNorm")
    parser.add_argument("--smoke", action="store_true", help="batch 8, 1 repeat: checks that it runs")
    parser.add_argument(
        "--contenders", help="comma-separated names to time (default: all); 'jaxconv auto' always"
    )
    parser.add_argument("--materialised", action="store_true", help="per-example gradients, not clipped sums")
    parser.add_argument("--nets", default="small_cnn,resnet20", help="with --materialised")
    parser.add_argument(
        "--slow-strategies", action="store_true", help="with --materialised: also 'chunked' and 'loop'"
    )
    parser.add_argument(
        "--reuse-host-memory", action="store_true", help="call jc.host_memory.reuse_host_memory() first"
    )
    args = parser.parse_args()
    batch_size, repeats = (8, 1) if args.smoke else (args.batch_size, args.repeats)
    if args.reuse_host_memory:
        print(f"reuse_host_memory: {jc.host_memory.reuse_host_memory()}")

    import torch

    torch.set_num_threads(2)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message="Full backward hook")  # Opacus on a first layer
    norm = None if args.norm == "none" else args.norm
    if args.materialised:
        from per_example_materialised import run_materialised

        run_materialised(batch_size, repeats, norm, args.nets.split(","), args.slow_strategies)
        return
    jax_functions, jax_params = jax_contenders(batch_size, norm)
    torch_functions, torch_params = torch_contenders(batch_size, norm)
    described = f"GroupNorm({GROUPS})" if norm else "no normalisation (conv biases)"
    print(
        f"model: the default convnet, BatchNorm -> {described}; parameters: jaxconv {jax_params:,}, torch {torch_params:,}"
    )
    auto = jc.per_example.choose_strategy(net_loss(jax_net(norm)), "auto")
    print(
        f"batch {batch_size}, clip to L2 norm {CLIP} and sum; backend {jax.default_backend()}, auto = {auto}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    functions = {**jax_functions, **torch_functions}
    if args.contenders:
        chosen = {"jaxconv auto", *args.contenders.split(",")}
        functions = {name: fn for name, fn in functions.items() if name in chosen}
    seconds = median_seconds(functions, repeats)
    throughput = {name: batch_size / value for name, value in seconds.items()}
    peers = [name for name in throughput if not name.startswith("jaxconv")]
    ours = throughput["jaxconv auto"]
    print(f"\n{'contender':28s} {'examples/s':>11s} {'ms/step':>8s}")
    for name, value in throughput.items():
        print(f"{name:28s} {value:11,.0f} {1e3 * seconds[name]:8.1f}")
    print("\njaxconv auto / peer: " + ", ".join(f"{name} {ours / throughput[name]:.2f}x" for name in peers))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
