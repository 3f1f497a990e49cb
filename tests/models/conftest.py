import math

import jax
import pytest

from jaxconv import models


def count_params(name: str, **options) -> int:
    """Trainable parameters of ``name`` at its native input, without allocating them."""
    net = models.get(name, **options)
    shape = models.input_shape(name, batch=1)
    params = jax.eval_shape(lambda key: net.init(key, shape)[1], jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@pytest.fixture
def count():
    return count_params
