"""``jaxconv`` as a process of its own, with the tests' tiny ConvNet registered as ``tiny``:
``python tests/reliability/tiny_cli.py train --model tiny ...``. The kill-and-resume test and
``benchmarks/kill_resume.py`` run it, to kill it anywhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runs"))
from synthetic import tiny_net

import jaxconv.cli as cli
from jaxconv.models import registry

if __name__ == "__main__":
    registry._MODELS["tiny"] = registry.ModelSpec("tiny", tiny_net, (28, 28, 1), 10, {})
    sys.exit(cli.main(sys.argv[1:]))
