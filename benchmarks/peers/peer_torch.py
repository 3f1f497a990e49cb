"""PyTorch: ``nn.Module`` classes in NCHW, ``torch.optim.SGD``, eager or under ``torch.compile``.

On a CPU the peak memory is the growth of the process's peak resident set size
(``resource.getrusage``) over building and running the model, not an allocator's figure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from harness import Contestant, max_rss_bytes
from torch import nn
from workloads import (
    BN_EPS,
    BN_MOMENTUM,
    CNN_DROPOUT,
    CNN_HIDDEN,
    CNN_WIDTH,
    LEARNING_RATE,
    MOMENTUM,
    BlockSpec,
    ResNetConfig,
    Workload,
    block_specs,
    synthetic_batch,
)


def conv_bn(
    in_channels: int, features: int, kernel: int, stride: int = 1, padding: int = 0
) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, features, kernel, stride, padding, bias=False)
    return [conv, nn.BatchNorm2d(features, eps=BN_EPS, momentum=1 - BN_MOMENTUM)]


class SmallCNN(nn.Sequential):
    def __init__(self, in_channels: int, flat_size: int, num_classes: int):
        super().__init__(
            *conv_bn(in_channels, CNN_WIDTH, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            *conv_bn(CNN_WIDTH, 2 * CNN_WIDTH, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat_size, CNN_HIDDEN), nn.ReLU(), nn.Dropout(CNN_DROPOUT),
            nn.Linear(CNN_HIDDEN, num_classes),
        )  # fmt: skip


class Block(nn.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec, layers, channels = spec, [], spec.in_channels
        for index, conv_spec in enumerate(spec.convs):
            layers += conv_bn(channels, *conv_spec) + ([nn.ReLU()] if index < len(spec.convs) - 1 else [])
            channels = conv_spec.features
        self.body = nn.Sequential(*layers)
        self.projection = None
        if spec.shortcut == "B":
            self.projection = nn.Sequential(*conv_bn(spec.in_channels, spec.out_channels, 1, spec.stride))

    def forward(self, x):
        y = self.body(x)
        if self.spec.shortcut == "A":
            x = x[:, :, :: self.spec.stride, :: self.spec.stride]
            x = F.pad(x, (0, 0, 0, 0, 0, self.spec.out_channels - x.shape[1]))
        elif self.projection is not None:
            x = self.projection(x)
        return F.relu(y + x)


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig, in_channels: int, num_classes: int):
        super().__init__()
        if config.cifar:
            stem = [*conv_bn(in_channels, config.stem_width, 3, padding=1), nn.ReLU()]
        else:
            stem = [*conv_bn(in_channels, config.stem_width, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        blocks = [Block(spec) for stage in block_specs(config) for spec in stage]
        self.features = nn.Sequential(*stem, *blocks)
        self.head = nn.Linear(config.out_channels, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def build(workload: Workload, compile: bool = False) -> Contestant:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rss_before = max_rss_bytes()
    height, width, channels = workload.image_shape
    if workload.resnet is None:
        model = SmallCNN(channels, (height // 4) * (width // 4) * 2 * CNN_WIDTH, workload.num_classes)
    else:
        model = ResNet(workload.resnet, channels, workload.num_classes)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    runner = torch.compile(model) if compile else model
    images, labels, infer_images = tensors(workload, device)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(runner(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device

    @torch.no_grad()
    def infer():
        model.eval()
        return runner(infer_images)[0, 0].item()

    def peak_memory():
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return (
            max_rss_bytes() - rss_before,
            "CPU: growth of the process's peak RSS (getrusage), not comparable to XLA's",
        )

    notes = "torch.compile (inductor, default mode), NCHW" if compile else "eager, NCHW"
    params = sum(parameter.numel() for parameter in model.parameters())
    return Contestant(params, train_step, infer, peak_memory, torch.__version__, notes, eager=not compile)


def tensors(workload: Workload, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed batches as NCHW tensors on ``device``."""
    images, labels = synthetic_batch(workload, workload.train_batch)
    infer_images, _ = synthetic_batch(workload, workload.infer_batch, seed=1)

    def nchw(array):
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)

    return nchw(images), torch.from_numpy(labels).long().to(device), nchw(infer_images)
