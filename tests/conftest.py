"""Test-wide settings: CPU only, deterministic, strict about warnings (see pyproject)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)
