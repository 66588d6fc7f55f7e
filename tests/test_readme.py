"""The README's Python examples run as written (issue 15 item 13), so they cannot drift from the code.

The ```python blocks run in order in one namespace, as a reader pasting them into one session would
(the policy example continues with the batch the ops example built).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
# Blocks that need files and extras a test sets up elsewhere: (a marker in the block, the test file
# that runs it, the name of the copy that test runs). The copy must equal the README's block.
RUN_ELSEWHERE = [("PolicySFTTrainer", "test_integrations_transformers.py", "README_EXAMPLE")]


def elsewhere(block: str):
    return next((entry for entry in RUN_ELSEWHERE if entry[0] in block), None)


def run_blocks(count: int) -> dict:
    namespace: dict = {"__name__": "readme"}
    for index, block in enumerate(BLOCKS[:count]):
        if elsewhere(block) is None:
            exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    return namespace


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("count", range(1, len(BLOCKS) + 1), ids=lambda count: f"block{count}")
def test_readme_python_block_runs(count, tmp_path, monkeypatch):
    """Each block runs after the blocks before it, or is the exact code another test runs."""
    entry = elsewhere(BLOCKS[count - 1])
    if entry is not None:
        _, test_file, name = entry
        source = (Path(__file__).parent / test_file).read_text()
        copy = re.search(rf"^{name} = '''\n(.*?)'''", source, flags=re.S | re.M)
        assert copy is not None, f"{test_file} no longer holds {name}"
        assert copy.group(1).strip() == BLOCKS[count - 1].strip(), f"README block {count} drifted from {test_file}"
        return
    monkeypatch.chdir(tmp_path)  # whatever a block writes stays in the test's folder
    run_blocks(count)


def _changed_fields(before, after) -> set[str]:
    """The tensor fields whose shape or values differ between two batches."""
    old, new = before.tensors(), after.tensors()
    return {name for name in old.keys() | new.keys()
            if name not in old or name not in new or old[name].shape != new[name].shape
            or not torch.equal(old[name], new[name])}


def test_the_readme_batch_takes_every_preset(tmp_path, monkeypatch):
    """The batch built as the README shows is enough for the README's own presets: each preset runs
    on it and augments it (``none`` leaves it as it was). Catches a call that returns the batch it was
    given (or skips the ops whose fields it lacks): a valid output alone, the old check, passes that."""
    from autoaug.policy import PRESETS, Policy

    monkeypatch.chdir(tmp_path)
    batch = run_blocks(1)["batch"]
    for preset in PRESETS:
        out = Policy.from_dict({**Policy.load(preset).to_dict(), "seed": 0})(batch, step=0, total_steps=10)
        out.validate()
        changed = _changed_fields(batch, out)
        if preset == "none":
            assert changed == set() and not out.augmented.any(), preset
        else:  # with p <= 1 per op a sample can come through clean; at step 0 every preset hit most of the 8
            assert out.augmented.any() and changed - {"augmented"}, (preset, changed)
