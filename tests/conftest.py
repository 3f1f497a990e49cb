"""Test-wide settings: CPU only, no Hypothesis deadlines (a shared 2-core machine has slow
moments; the tests are about results, never speed), strict about warnings (see pyproject), and
compiling made cheaper, since compiling is most of the suite's time:

- XLA's backend (LLVM) optimisation level 0, as the environment's ``XLA_FLAGS`` unless they set a
  level: the HLO passes, and so the programs' operations, memory and cost analyses, are
  unchanged; the generated loops are slower and compile faster (the suite took 0.7x the time);
- one persistent XLA compilation cache for the session: many tests build the same step for the
  same net again (a fresh closure, or a subprocess running the CLI), and the cache hands back the
  program compiled before for the same HLO. Both xdist workers and every subprocess inherit it
  (from the environment); the process that made the directory removes it at the end.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process (xdist's controller) makes it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxconv-xla-cache-")
    os.environ["JAXCONV_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

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


def pytest_unconfigure(config):
    if os.environ.get("JAXCONV_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
