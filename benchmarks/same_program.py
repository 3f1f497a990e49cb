"""Whether two checkouts of jaxconv compile the same train and evaluation steps.

A refactoring that should not change speed can be checked without timing: this script
compiles the default model's and ResNet-20's train step (SGD with momentum, batch 128)
and inference function in this checkout and in ``--baseline`` (another checkout, e.g. a
`git worktree` of an older commit). Each runs in its own process with that checkout first
on the path. It then compares XLA's optimised HLO, without source locations. Identical
programs run at identical speed, and timing noise cannot hide a change.

    git worktree add /tmp/jaxconv-base <commit>
    python benchmarks/same_program.py --baseline /tmp/jaxconv-base
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("convnet_train", "convnet_eval", "resnet20_train", "resnet20_eval")

DUMP = """
import sys, jax, jax.numpy as jnp, optax, jaxconv as jc
import jaxconv.train as jt
try:
    from jaxconv.models.small import convnet
except ImportError:  # checkouts before the re-layering
    from jaxconv.train import convnet
for name, shape in (("convnet", (28, 28, 1)), ("resnet20", (32, 32, 3))):
    net = convnet(num_classes=10) if name == "convnet" else jc.models.get("resnet20", num_classes=10)
    optimizer = optax.sgd(0.1, momentum=0.9)
    state = jt.init_train_state(net, optimizer, (-1, *shape), jax.random.key(0))
    x, y = jnp.zeros((128, *shape)), jnp.zeros((128,), jnp.int32)
    train = jt.make_train_step(net, optimizer).lower(state, x, y).compile().as_text()
    predict = jax.jit(lambda p, s, x: net.apply(p, s, x, train=False)[0])
    infer = predict.lower(state.params, state.state, x).compile().as_text()
    for kind, text in (("train", train), ("eval", infer)):
        open(f"{sys.argv[1]}/{name}_{kind}.txt", "w").write(text)
"""


def instructions(text: str) -> list[str]:
    """The HLO's computations and instructions, without metadata and the stack-frame tables."""
    kept = []
    for line in text.splitlines():
        if ("=" in line or line.startswith(("ENTRY", "%", "}"))) and not re.match(r"^\d+ ", line):
            line = re.sub(r", metadata=\{[^}]*\}|, stack_frame_id=\d+|, origin=\{[^}]*\}", "", line)
            kept.append(line)
    return [line for line in kept if not line.startswith("HloModule")]


def dump(checkout: Path, folder: Path) -> dict[str, list[str]]:
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-c", DUMP, str(folder)], check=True, env=environment, cwd=folder)
    return {name: instructions((folder / f"{name}.txt").read_text()) for name in PROGRAMS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of jaxconv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as here, tempfile.TemporaryDirectory() as there:
        ours, theirs = dump(ROOT, Path(here)), dump(args.baseline.resolve(), Path(there))
    for name in PROGRAMS:
        same = ours[name] == theirs[name]
        verdict = "identical" if same else f"DIFFERENT ({len(ours[name])} vs {len(theirs[name])} lines)"
        print(f"{name}: {verdict}, {len(ours[name]):,} HLO lines")


if __name__ == "__main__":
    main()
