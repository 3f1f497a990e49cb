#!/usr/bin/env bash
# The device check of issue #19: every figure that waits for a GPU, in one run under 8 minutes,
# written to DIR/device_check.json and DIR/device_check.md (default DIR: device_check_out/).
#
#   bash benchmarks/device_check.sh [--smoke] [--out DIR] [--budget-s 450] [--only a,b,...]
#
# It installs nothing from the network. Python: $PYTHON if set, else the repository's .venv,
# else python3 (a GPU image's own, with jax[cuda], flax, optax and torch). jaxconv itself is
# this checkout (put on PYTHONPATH). Packages the image lacks travel as wheels in a folder of the
# checkout, $WHEELS (default: .whl/), installed offline into a scratch folder. Prepare it on a
# machine with the network, for the device's Python (3.12 here), e.g.:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       opacus==1.6.0 dp-accounting==0.6.0
#
# (add "jax[cuda12]" and its plugin wheels the same way where the device has no JAX; a section
# whose packages are missing fails alone, the others still run).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
    python="$root/.venv/bin/python"
else
    python="python3"
fi
wheels="${WHEELS:-$root/.whl}"
if compgen -G "$wheels/*.whl" >/dev/null; then
    site="${TMPDIR:-/tmp}/device_check_site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/benchmarks/device_check.py" "$@"
