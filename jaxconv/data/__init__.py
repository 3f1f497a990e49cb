"""Datasets, augmentation and input pipelines.

- `load` reads MNIST, Fashion-MNIST and CIFAR-10 from local files into a
  `Dataset` of (N, H, W, C) uint8 images and (N,) int32 labels, and opens an image folder
  (``load("imagefolder", split, root=PATH)``) as an `ImageFolder` streamed through Grain;
- `augment`, `random_crop`, `random_flip`, `normalize` transform a batch on
  the device, inside `jit`;
- `batches` iterates over an epoch of shuffled, prefetched device batches.

    train = jc.data.load("fashion_mnist", "train")
    for epoch in range(epochs):
        for images, labels in jc.data.batches(train, 128, key=key, epoch=epoch):
            x = jc.data.normalize(images, train.mean, train.std)  # in the jitted step
"""

from jaxconv.data.augmentation import augment, normalize, random_crop, random_flip, test_views
from jaxconv.data.batching import (
    EpochBatches,
    batches,
    epoch_batches,
    epoch_order,
    num_batches,
    prefetch_to_device,
)
from jaxconv.data.cifar import read_cifar10_batch
from jaxconv.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST_MEAN,
    MNIST_STD,
    SPLITS,
    Dataset,
    load,
    names,
    search_dirs,
)
from jaxconv.data.folder import FolderBatches, ImageFolder, image_folder
from jaxconv.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx
from jaxconv.data.mixing import Mix, cutmix, mixup, parse_mix
from jaxconv.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "EpochBatches",
    "FolderBatches",
    "ImageFolder",
    "Mix",
    "augment",
    "batches",
    "cutmix",
    "epoch_batches",
    "epoch_order",
    "image_folder",
    "load",
    "mixup",
    "names",
    "normalize",
    "num_batches",
    "parse_idx",
    "parse_mix",
    "prefetch_to_device",
    "random_crop",
    "random_flip",
    "read_cifar10_batch",
    "read_idx",
    "search_dirs",
    "test_views",
]
