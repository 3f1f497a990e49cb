"""Write jaxconv/models/param_counts.json: every model name of `jaxconv models` and its trainable
parameter count at its native input and default classes (what `jaxconv models` prints).

    .venv/bin/python scripts/param_counts.py

Run it after adding or changing a model; tests/models/test_param_counts.py checks the table.
"""

from __future__ import annotations

import json

from jaxconv.models import count_model_params, names
from jaxconv.models.registry import PARAM_COUNTS


def main() -> None:
    counts = {name: count_model_params(name) for name in names()}
    PARAM_COUNTS.write_text(json.dumps(counts, indent=1) + "\n")
    print(f"wrote {len(counts)} counts to {PARAM_COUNTS}")


if __name__ == "__main__":
    main()
