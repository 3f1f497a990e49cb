"""Test-wide settings: CPU only, no Hypothesis deadlines (a shared 2-core machine has slow
moments; the tests are about results, never speed), strict about warnings (see pyproject)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest
from hypothesis import settings

settings.register_profile("jaxconv", deadline=None, print_blob=True)
settings.load_profile("jaxconv")

# scripts the distributed tests start in processes of their own; importing them here (for
# doctests) would run their module-level set-up inside pytest
collect_ignore = ["distributed/data_parallel_runner.py", "distributed/multiprocess_worker.py"]


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture(autouse=True, scope="session")
def pixel_cache_in_a_temporary_directory(tmp_path_factory):
    """Image folders' pixel caches go under the test session's temporary directory, not the
    user's ~/.cache (subprocesses inherit it)."""
    os.environ["JAXCONV_CACHE"] = str(tmp_path_factory.mktemp("pixel-cache"))
