"""The reliability suite shares the training tests' synthetic data (tests/runs/synthetic.py) and
registers their tiny ConvNet as the model ``tiny`` so that runs take seconds."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "runs"))
sys.path.insert(0, str(Path(__file__).parent))  # the suite's own helpers, as top-level modules
from synthetic import synthetic, tiny_net, write_idx

from jaxconv.models import registry


@pytest.fixture
def tiny_model():
    """The model name ``tiny``: `synthetic.tiny_net`, for 28x28x1 images."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._MODELS, "tiny", registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {}))
        yield "tiny"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A Fashion-MNIST-shaped IDX dataset of 128 training and 64 test images."""
    directory = tmp_path / "data"
    directory.mkdir()
    for prefix, n, seed in (("train", 128, 0), ("t10k", 64, 1)):
        images, labels = synthetic(n, seed=seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory
