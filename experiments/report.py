"""Write each experiment's measured table into ``experiments/README.md`` from its results.json.

The README marks each experiment's generated block with ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->``; everything between them is replaced by the command, its
budget and the machine's load, and the rows as a Markdown table, so no number in the
details is copied by hand.

    python experiments/report.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import common

README = common.ROOT / "experiments" / "README.md"
BLOCK = re.compile(r"(<!-- results:(?P<name>\w+) -->\n).*?(<!-- /results:(?P=name) -->)", re.DOTALL)


def block(name: str) -> str:
    """The Markdown for ``results/<name>/results.json``: command, budget, load, then the table."""
    record = json.loads((common.RESULTS / name / "results.json").read_text())
    load = record["machine"]["load_average"]
    heading = f"`{record['command']}` ({record['budget']['description']}; load {load:.1f})"
    return f"{heading}\n\n{common.format_table(record['rows'], markdown=True)}\n"


def render(text: str) -> str:
    return BLOCK.sub(lambda match: match.group(1) + block(match.group("name")) + match.group(3), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is out of date")
    args = parser.parse_args()
    text = README.read_text()
    rendered = render(text)
    if args.check:
        sys.exit(
            0
            if rendered == text
            else "experiments/README.md is out of date: run python experiments/report.py"
        )
    README.write_text(rendered)


if __name__ == "__main__":
    main()
