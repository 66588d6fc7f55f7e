"""Shared fixtures: the device matrix and batches shaped for each op's stage."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

# The suite's models are tiny: a second intra-op thread only adds OpenMP hand-offs, and when anything
# else wants the cores (Ray workers, a subprocess under test, a shared CI box) those hand-offs spin.
# Measured here under load: a 2-epoch shapes-vqa run took 1.1 s wall with one thread, 10-18 s with
# two. Subprocesses (CLI tests, Ray's local workers) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from autoaug import ops
from autoaug.synthetic import example_batch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def batch_for(op: ops.Op, device: str = "cpu", **overrides):
    """A batch with what ``op``'s stage needs: images for pixel ops, embeddings for embedding ops,
    two frames for frame ops."""
    options = dict(batch_size=8, grid=4, patch_dim=12, text_len=12, seed=0, device=device)
    if op.stage == "pixel":
        options["image_size"] = 32
    if op.stage == "embedding":
        options["embed_dim"] = 16
    if op.name.startswith("frame_"):
        options["num_frames"] = 4
    options.update(overrides)
    return example_batch(**options)


def generator(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def assert_batches_equal(left, right) -> None:
    """Every tensor field bit-identical (and the same fields present)."""
    left_tensors, right_tensors = left.tensors(), right.tensors()
    assert left_tensors.keys() == right_tensors.keys()
    for name, tensor in left_tensors.items():
        assert torch.equal(tensor, right_tensors[name]), f"field {name} differs"


def effective_setting(policy, op: str, progress: float) -> tuple[float, float]:
    """(p, magnitude), rounded to 6 places, that ``op`` runs at at training ``progress`` under ``policy``:
    the one entry of ``op`` whose p is not zero there (a PBT export has one entry per stretch)."""
    active = []
    for entry in policy.config.entries:
        if entry.op != op:
            continue
        multiplier = entry.schedule(progress)
        p = entry.p * (multiplier if entry.schedule_p else 1.0)
        if p > 0:
            active.append((round(p, 6), round(entry.magnitude * multiplier, 6)))
    assert len(active) == 1, (op, progress, active)
    return active[0]


def missing_environment(reason: str) -> None:
    """Skip a test whose environment is missing here — but fail it under ``CI=true``, where `.ci/test`
    installs and starts everything the suite needs: a missing install step must show, not skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, yet {reason}: .ci/test should have provided it", pytrace=False)
    pytest.skip(reason)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``autoaug argv`` in this process: (exit code, stdout, stderr) of that command alone."""
    from autoaug.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        main(argv)
    captured = capsys.readouterr()
    return caught.value.code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The one line a failed command prints on stderr (the CLI's error contract: no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


TASK_PLUGINS = Path(__file__).resolve().parent / "plugins"  # holds autoaug_test_tasks, the suite's task plug-ins
TASKS_MODULE = "autoaug_test_tasks"
PROXY_SIZES = {"train_size": 48, "val_size": 32, "test_size": 32}  # the proxy size of the plug-ins' make_task


@contextlib.contextmanager
def plugin_on_path(folder: Path = TASK_PLUGINS):
    """Make the task plug-ins in ``folder`` (by default `autoaug_test_tasks`) importable here and by
    the Ray workers of the searches run inside the block (``--task module:function``). Ray is shut
    down on entry and exit: workers started before would not see the new ``PYTHONPATH``, and those
    started inside must not outlive it; the searches inside the block share the Ray instance the first
    one starts."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder)] + ([old] if old else []))
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="module")
def plugin_dir():
    """The suite's task plug-ins (`plugin_on_path`) for a whole test module: importable here and by
    the Ray workers of the module's searches (``PYTHONPATH`` is set before Ray starts)."""
    with plugin_on_path() as folder:
        yield folder


def search_request(workdir: Path | str, name: str, **options):
    """A small real search of the suite: the stages around the trials (calibration, baselines,
    confirmation) are off unless asked, because they have their own tests (tests/test_search_stages.py);
    the built-in task at proxy size, or a plug-in task with the options given."""
    from autoaug.search.controller import SearchRequest

    settings = dict(space="vlm_default", name=name, task="shapes-vqa", trials=2, max_epochs=2, scheduler="none",
                    workdir=str(workdir), seed=0, calibrate=False, confirm=False, baselines=False,
                    screen=False)
    settings.update(options)
    if settings["task"] == "shapes-vqa":
        settings.setdefault("task_options", dict(PROXY_SIZES))
    return SearchRequest(**settings)
