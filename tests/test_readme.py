"""The README's Python examples run as written (issue 15 item 13), so they cannot drift from the code.

The ```python blocks run in order in one namespace, as a reader pasting them into one session would
(the policy example continues with the batch the ops example built).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def run_blocks(count: int) -> dict:
    namespace: dict = {"__name__": "readme"}
    for index, block in enumerate(BLOCKS[:count]):
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    return namespace


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("count", range(1, len(BLOCKS) + 1), ids=lambda count: f"block{count}")
def test_readme_python_block_runs(count, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a block writes stays in the test's folder
    run_blocks(count)


def test_the_readme_batch_takes_every_preset(tmp_path, monkeypatch):
    """The batch built as the README shows is enough for the README's own presets."""
    from autoaug.policy import PRESETS, Policy

    monkeypatch.chdir(tmp_path)
    batch = run_blocks(1)["batch"]
    for preset in PRESETS:
        out = Policy.from_dict({**Policy.load(preset).to_dict(), "seed": 0})(batch, step=0, total_steps=10)
        out.validate()
