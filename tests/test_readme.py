"""The README's Python blocks run, in order, as a reader would paste them (one namespace, in a
fresh directory); the torchvision weights one block loads are written there first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


def test_the_readme_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if any("resnet50.pth" in block for block in BLOCKS):
        torch = pytest.importorskip("torch")
        torchvision = pytest.importorskip("torchvision")
        torch.save(torchvision.models.resnet50().state_dict(), "resnet50.pth")
    namespace: dict = {}
    for number, block in enumerate(BLOCKS, 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as error:
            error.add_note(f"README.md python block {number}:\n{block}")
            raise
