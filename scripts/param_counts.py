"""Write jaxconv/train/param_counts.json: every model name of `jaxconv models` and its trainable
parameter count at its native input and default classes (what `jaxconv models` prints).

    .venv/bin/python scripts/param_counts.py

Run it after adding or changing a model; tests/train/test_param_counts.py checks the table.
"""

from __future__ import annotations

import json

from jaxconv.train.default_model import PARAM_COUNTS, count_model_params, model_names


def main() -> None:
    counts = {name: count_model_params(name) for name in model_names()}
    PARAM_COUNTS.write_text(json.dumps(counts, indent=1) + "\n")
    print(f"wrote {len(counts)} counts to {PARAM_COUNTS}")


if __name__ == "__main__":
    main()
