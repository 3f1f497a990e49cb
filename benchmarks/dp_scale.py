"""DP-SGD at scale: clipped per-example gradient sums of a WRN-16-4 with GroupNorm on 32x32x3,
jaxconv against jax-privacy 2.0 and Opacus, with peak memory against a non-private step.

The task is one physical chunk of a De et al. (2022) step: every example's gradient, clipped to
L2 norm 1, summed. Contenders, in one process on the same two cores, interleaved repeats:

- jaxconv's default strategy (``clipped_grad_sum(net_loss(net), 1.0)``), and with augmentation
  multiplicity K (``copies=K``: K copies of each example, their gradients averaged, clipped);
- jax-privacy 2.0's ``clipping.clipped_grad`` (vmap of grad) on the same jaxconv net;
- Opacus' GradSampleModule + DPOptimizer without noise on the same architecture in PyTorch;
- the non-private gradient step of the batch (``jax.grad`` of the mean loss), the memory baseline.

Peak memory: XLA's memory analysis of each compiled JAX function (temporaries + arguments +
outputs); PyTorch's peak RSS growth over its contenders' runs.

    python benchmarks/dp_scale.py [--batch-size 256] [--repeats 3] [--augmult 4] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
from _timing import median_seconds  # benchmarks/ is on the path when run as a script
from per_example import opacus_step  # GradSampleModule + DPOptimizer without noise, clip 1

import jaxconv as jc
from jaxconv.models.resnet import cifar_options, resnet
from jaxconv.per_example import net_loss
from jaxconv.privacy import clipped_grad_sum

CLIP, CLASSES = 1.0, 10


def jax_net(depth: int, widen: int) -> jc.Layer:
    """WRN-depth-widen, pre-activation, GroupNorm (32 groups) in place of BatchNorm."""
    options = cifar_options(depth, widen=widen, extra_layers=4)
    return resnet(**options, num_classes=CLASSES, preact=True, norm="group")


def torch_net(depth: int, widen: int):
    """The same Wide ResNet in PyTorch (NCHW), block for block."""
    from torch import nn

    def norm(channels: int) -> nn.Module:
        import math

        return nn.GroupNorm(math.gcd(32, channels), channels)

    class Block(nn.Module):
        def __init__(self, in_channels: int, out_channels: int, stride: int):
            super().__init__()
            self.pre = nn.Sequential(norm(in_channels), nn.ReLU())
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.rest = nn.Sequential(
                norm(out_channels), nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            )
            projection = stride != 1 or in_channels != out_channels
            self.shortcut = (
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if projection else None
            )

        def forward(self, x):
            activated = self.pre(x)
            shortcut = self.shortcut(activated) if self.shortcut is not None else x
            return self.rest(self.conv1(activated)) + shortcut

    blocks = (depth - 4) // 6
    layers, channels = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
    for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for block in range(blocks):
            layers.append(Block(channels, width, 2 if stage and not block else 1))
            channels = width
    layers += [norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASSES)]
    return nn.Sequential(*layers)


def jax_contenders(
    net, batch_size: int, augmult: int
) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    import jax_privacy

    _, params, state = net.init(jax.random.key(0), (-1, 32, 32, 3))
    x = jax.random.normal(jax.random.key(1), (batch_size, 32, 32, 3))
    y = jnp.arange(batch_size) % CLASSES
    copies = jax.random.normal(jax.random.key(2), (batch_size, augmult, 32, 32, 3))

    def mean_loss(params, x, y):
        return jc.losses.cross_entropy(net.apply(params, state, x, train=True)[0], y)

    # keep_batch_dim (the default): jax-privacy passes each example with its batch axis of one
    privacy_grad = jax_privacy.clipping.clipped_grad(mean_loss, l2_clip_norm=CLIP, batch_argnums=(1, 2))
    compiled = {
        "jaxconv default": (jax.jit(clipped_grad_sum(net_loss(net), CLIP)), (params, state, x, y)),
        f"jaxconv augmult K={augmult}": (
            jax.jit(clipped_grad_sum(net_loss(net, copies=augmult), CLIP)),
            (params, state, copies, y),
        ),
        "jax-privacy clipped_grad": (jax.jit(privacy_grad), (params, x, y)),
        "non-private gradient": (jax.jit(jax.grad(mean_loss)), (params, x, y)),
    }
    functions, memory = {}, {}
    for name, (fn, args) in compiled.items():
        executable = fn.lower(*args).compile()
        analysis = executable.memory_analysis()
        memory[name] = (
            analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
        ) / 2**20
        functions[name] = lambda executable=executable, args=args: executable(*args)
    return functions, memory


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augmult", type=int, default=4)
    parser.add_argument(
        "--smoke", action="store_true", help="WRN-10-1, batch 4, K=2, 1 repeat: checks that it runs"
    )
    args = parser.parse_args()
    depth, widen = (10, 1) if args.smoke else (16, 4)
    batch_size, repeats, augmult = (4, 1, 2) if args.smoke else (args.batch_size, args.repeats, args.augmult)

    import torch

    torch.set_num_threads(2)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message="Full backward hook")
    net = jax_net(depth, widen)
    jax_functions, memory = jax_contenders(net, batch_size, augmult)
    model = torch_net(depth, widen)
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.arange(batch_size) % CLASSES
    rss_before = peak_rss_mib()
    torch_functions = {"Opacus": opacus_step(model, x, y)}
    jax_params = jc.train.count_params(net.init(jax.random.key(0), (-1, 32, 32, 3))[1])
    torch_params = sum(p.numel() for p in model.parameters())
    print(
        f"WRN-{depth}-{widen}, GroupNorm, 32x32x3, batch {batch_size}; parameters jaxconv {jax_params:,}, torch {torch_params:,}"
    )
    print(f"backend {jax.default_backend()}, load average before: {os.getloadavg()[0]:.2f}")
    seconds = median_seconds({**jax_functions, **torch_functions}, repeats)
    memory["Opacus"] = peak_rss_mib() - rss_before
    print(f"\n{'contender':28s} {'examples/s':>11s} {'s/step':>8s} {'peak MiB':>9s}")
    for name, value in seconds.items():
        print(f"{name:28s} {batch_size / value:11,.1f} {value:8.2f} {memory[name]:9,.0f}")
    ours = seconds["jaxconv default"]
    print(
        f"\njaxconv default vs Opacus {seconds['Opacus'] / ours:.2f}x, vs jax-privacy "
        f"{seconds['jax-privacy clipped_grad'] / ours:.2f}x; memory vs the non-private step "
        f"{memory['jaxconv default'] / memory['non-private gradient']:.2f}x; "
        f"augmult K={augmult} costs {seconds[f'jaxconv augmult K={augmult}'] / ours:.2f}x"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
