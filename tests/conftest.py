"""Test-wide settings: CPU only, deterministic, strict about warnings (see pyproject)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)
