"""Pretrained backbone: fine-tune a zoo model whose weights came through the torchvision importer.

The path a researcher takes with ImageNet weights, end to end: torchvision's
``resnet18`` ``state_dict`` -> `jaxconv.interop.from_torchvision` -> jaxconv's
ResNet-18 with a new 10-class head -> `jaxconv.runs.fit` on Fashion-MNIST. No
weights can be downloaded here, so the state_dict is torchvision's own random
initialisation (seeded): the experiment shows that the port is exact (jaxconv's
logits against torchvision's on the same input, before the head is replaced) and
that fine-tuning from imported weights trains; it cannot show the benefit of
ImageNet features. Fashion-MNIST is zero-padded to 32x32 and its grey channel
repeated three times. Beside it, the same net from jaxconv's own initialisation.

    python experiments/pretrained_backbone.py [--smoke | --full] [--out DIR]
"""

from __future__ import annotations

import common
import jax
import numpy as np

from jaxconv.train import count_params

try:
    from jaxconv.interop import from_torchvision, model
except ImportError as error:  # the importer is newer than this script's first version
    raise SystemExit(
        f"pretrained_backbone needs jaxconv.interop.from_torchvision ({error}); row pending"
    ) from error

DEFAULT = common.Budget("default", 5_000, 5_000, 2)
FULL = common.Budget("full", None, None, 10)
NAME = "resnet18"
SIZE = 32  # Fashion-MNIST padded to 32x32, three channels


def torchvision_weights(seed: int = 0):
    """A seeded, randomly initialised torchvision ResNet-18 (1000 classes), in evaluation mode."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.get_model(NAME, weights=None).eval()


def port_difference(torch_net, params, state) -> float:
    """max |jaxconv logits - torchvision logits| / max |torchvision logits| on one random image."""
    import torch

    image = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(image.transpose(0, 3, 1, 2))).numpy()
    with jax.default_matmul_precision("highest"):
        logits, _ = model(NAME).apply(params, state, image)
    return float(np.max(np.abs(np.asarray(logits) - expected)) / np.max(np.abs(expected)))


def new_head(params, fresh):
    """The imported params, with the fresh ones wherever the shapes differ (the 10-class head)."""
    return jax.tree_util.tree_map(lambda old, new: old if old.shape == new.shape else new, params, fresh)


def main() -> None:
    args = common.parse_args(__doc__, DEFAULT, FULL)
    torch_net = torchvision_weights()
    params, state = from_torchvision(NAME, torch_net.state_dict())
    difference = port_difference(torch_net, params, state)
    print(
        f"ported {NAME}: {count_params(params):,} parameters, max relative logit difference {difference:.2e}"
    )

    net = model(NAME, num_classes=10)
    _, fresh_params, _ = net.init(jax.random.key(0), (-1, SIZE, SIZE, 3))
    train, test = common.load_fashion_mnist(args.budget, pad_to=SIZE, channels=3)
    rows = []
    starts = {
        "torchvision weights (random init), new head": (new_head(params, fresh_params), state),
        "jaxconv's own initialisation": None,
    }
    for start, initial in starts.items():
        result = common.train_and_evaluate(net, train, test, args.budget, initial)
        rows.append({"model": f"{NAME} (torchvision layout)", "start": start, **result})
        print(f"{start}: test top-1 {result['test_top1']:.4f}", flush=True)
    common.finish("pretrained_backbone", args, rows, port_max_relative_difference=difference)


if __name__ == "__main__":
    main()
