"""Per-example gradient norms over training, per class and per layer (issue #7's study).

How large is each example's gradient, which classes and which layers carry it, and
how does that change as the net learns? These distributions are what DP-SGD clips
(Abadi et al. 2016 pick the clipping norm from their median) and what data-pruning
and importance-sampling studies rank examples by (e.g. Paul et al. 2021's GraNd score).

A small CNN with GroupNorm (BatchNorm mixes examples, so it has no per-example
gradient) trains on Fashion-MNIST with `jaxconv.runs.fit`, one epoch at a time;
at initialisation and after every epoch `jaxconv.per_example.per_example_grad_norms`
measures the gradient norm of each example of a fixed, class-balanced probe set of
training images, whole and per layer. Figures: ``per_class.png`` (box plots per class,
one panel per epoch) and ``per_layer.png`` (box plots per layer, one panel per epoch).

    python experiments/grad_norms.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import common
import matplotlib.pyplot as plt
import numpy as np

import jaxconv as jc
from jaxconv.per_example import net_loss, per_example_grad_norms
from jaxconv.runs import TrainConfig, fit

DEFAULT = common.Budget("default", 5_000, 5_000, 3)
FULL = common.Budget("full", None, None, 10)
PROBES_PER_CLASS = {"smoke": 4, "default": 50, "full": 100}


def small_cnn(width: int = 32, groups: int = 8) -> jc.Layer:
    """[CONV 3x3 -> GN -> RELU -> POOL]*2 -> FC 128 -> RELU -> FC: (N, 28, 28, 1) -> (N, 10)."""
    return jc.serial(
        jc.named("conv1", jc.Conv(width, 3, padding=1)), jc.named("norm1", jc.GroupNorm(groups)),
        jc.Relu, jc.MaxPool(2),  # (N, 14, 14, width)
        jc.named("conv2", jc.Conv(2 * width, 3, padding=1)), jc.named("norm2", jc.GroupNorm(groups)),
        jc.Relu, jc.MaxPool(2),  # (N, 7, 7, 2 * width)
        jc.Flatten, jc.named("fc1", jc.Dense(128)), jc.Relu, jc.named("fc2", jc.Dense(10)),
    )  # fmt: skip


def probe_set(data: jc.data.Dataset, per_class: int) -> tuple[jax.Array, np.ndarray]:
    """The first ``per_class`` images of each class, normalised: (10 * per_class, 28, 28, 1), labels."""
    index = np.concatenate([np.flatnonzero(data.labels == k)[:per_class] for k in range(data.num_classes)])
    images = jc.data.normalize(jnp.asarray(data.images[index]), data.mean, data.std)
    return images, data.labels[index]


def measure(norms_fn, params, state, images, labels) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    global_norms, layer_norms = norms_fn(params, state, images, jnp.asarray(labels))
    return np.asarray(global_norms), {path: np.asarray(value) for path, value in layer_norms.items()}


def snapshots(net, train, test, budget, probes) -> list[dict]:
    """Norms at initialisation and after each epoch of one `fit` run (its ``on_epoch`` hook)."""
    config = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, label_smoothing=0.0)
    norms_fn = jax.jit(per_example_grad_norms(net_loss(net)))
    _, params, state = net.init(jax.random.key(config.seed), (-1, *train.images.shape[1:]))
    taken = [{"epoch": 0, "test_top1": None, "norms": measure(norms_fn, params, state, *probes)}]

    def after_epoch(record, train_state):
        norms = measure(norms_fn, train_state.params, train_state.state, *probes)
        taken.append({"epoch": record["epoch"], "test_top1": record["test_top1"], "norms": norms})
        print(
            f"epoch {record['epoch']}: test top-1 {record['test_top1']:.4f}, median norm {np.median(norms[0]):.4g}",
            flush=True,
        )

    fit(
        net,
        train,
        test,
        config,
        initial=(params, state),
        on_epoch=after_epoch,
        progress=False,
        divergence_rule=None,
    )
    return taken


def plot(taken: list[dict], labels: np.ndarray, class_names, path: Path, per: str) -> None:
    """Box plots per class (``per='class'``) or per layer (``per='layer'``), one panel per snapshot."""
    figure, axes = plt.subplots(1, len(taken), figsize=(3.2 * len(taken), 3.6), sharey=True, squeeze=False)
    for ax, snapshot in zip(axes[0], taken, strict=True):
        global_norms, layer_norms = snapshot["norms"]
        if per == "class":
            groups = [global_norms[labels == k] for k in range(len(class_names))]
            names = class_names
        else:
            names = list(layer_norms)
            groups = [layer_norms[name] for name in names]
        ax.boxplot(groups, showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=90, fontsize=7)
        ax.set_yscale("log")
        accuracy = "" if snapshot["test_top1"] is None else f", test {snapshot['test_top1']:.1%}"
        ax.set_title(f"epoch {snapshot['epoch']}{accuracy}", fontsize=9)
    axes[0][0].set_ylabel("per-example gradient L2 norm")
    figure.suptitle(
        f"per-example gradient norms per {per} (small CNN with GroupNorm, Fashion-MNIST)", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def quartiles(values: np.ndarray) -> list[float]:
    return [float(q) for q in np.quantile(values, (0.25, 0.5, 0.75))]


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    train, test = common.load_fashion_mnist(args.budget)
    images, labels = probe_set(train, PROBES_PER_CLASS[args.budget.name])
    taken = snapshots(
        small_cnn(8 if args.budget.name == "smoke" else 32), train, test, args.budget, (images, labels)
    )
    folder = common.results_dir("grad_norms", args.out)
    for per in ("class", "layer"):
        plot(taken, labels, train.class_names, folder / f"per_{per}.png", per)
    rows, details = [], []
    for snapshot in taken:
        global_norms, layer_norms = snapshot["norms"]
        by_class = {
            name: float(np.median(global_norms[labels == k])) for k, name in enumerate(train.class_names)
        }
        by_layer = {name: float(np.median(values)) for name, values in layer_norms.items()}
        rows.append({
            "epoch": snapshot["epoch"],
            "test_top1": snapshot["test_top1"],
            "median_norm": float(np.median(global_norms)),
            "largest_class": max(by_class, key=by_class.get),
            "smallest_class": min(by_class, key=by_class.get),
            "largest_layer": max(by_layer, key=by_layer.get),
        })  # fmt: skip
        details.append({
            "epoch": snapshot["epoch"],
            "quartiles": quartiles(global_norms),
            "median_per_class": by_class,
            "median_per_layer": by_layer,
        })  # fmt: skip
    common.finish("grad_norms", args, rows, probes=len(labels), snapshots=details)


if __name__ == "__main__":
    main()
