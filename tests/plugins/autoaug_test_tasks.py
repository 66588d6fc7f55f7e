"""Task plug-ins of the test suite and the benchmarks (``--task autoaug_test_tasks:<function>``).

One module for every test that needs a user's task: shapes-vqa at proxy size (the CLI has no
task-size flag) and model builds that break on purpose. `conftest.plugin_on_path` puts this folder on
``PYTHONPATH`` for the searches of a test module (Ray's workers import the plug-in by name);
``benchmarks/store_outages.py`` does the same for its subprocesses.
"""

import os
import signal
import time

import torch

from autoaug.trainers.model import build_model
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from autoaug.trainers.train import TaskPlugin

DELIBERATE_FAILURE = "deliberate failure from the test plug-in"


def make_task(seed, train_size=48, val_size=32, test_size=32):
    """shapes-vqa at proxy size."""
    return make_shapes_vqa(seed, train_size=train_size, val_size=val_size, test_size=test_size)


def _claim(folder):
    """The number of this model build in the search (0, 1, 2, ...), claimed atomically across workers."""
    number = 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"build-{number}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return number
        except FileExistsError:
            number += 1


def _break(model, how):
    original = model.forward
    steps = {"training": 0}

    def forward(batch):
        if model.training:
            steps["training"] += 1
            if how == "sigkill" and steps["training"] == 2:  # the second batch of the first epoch
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "raise":
                raise RuntimeError(DELIBERATE_FAILURE)
            if how == "oom":  # more memory than any machine has: the allocator itself refuses
                torch.empty(1 << 62, dtype=torch.uint8)
        return original(batch)

    model.forward = forward


def make_breaking_task(seed, marker_dir, plan, train_size=48, val_size=32, test_size=32):
    """Model build k (in the order trials build them) behaves as plan[k] (then "ok"): ok, sigkill
    (the worker process kills itself mid-epoch), raise, oom, nan (the head's weights are NaN).
    ``plan=None``: every build raises."""
    data = make_task(seed, train_size, val_size, test_size)

    def build(tokenizer, task):
        model = build_model(tokenizer, task.num_classes, image_size=task.image_size)
        if plan is None:
            how = "raise"
        else:
            number = _claim(marker_dir)
            how = plan[number] if number < len(plan) else "ok"
        if how == "nan":
            with torch.no_grad():
                for parameter in model.head.parameters():
                    parameter.fill_(float("nan"))
        elif how != "ok":
            _break(model, how)
        return model

    return TaskPlugin(data, build_model=build)


def make_failing_task(seed, train_size=48, val_size=32, test_size=32):
    """Every trial raises in its first training step (what a broken model or space does)."""
    return make_breaking_task(seed, None, None, train_size, val_size, test_size)


def make_held_task(seed, train_size=48, val_size=32, test_size=32):
    """Training steps wait while the file named by AUTOAUG_TEST_HOLD exists, so a test can stop the
    driver while a trial is certainly running (without it, a fast machine finishes trials first).
    The first AUTOAUG_TEST_HOLD_FREE model builds of the search (default 0) train freely: a test that
    needs a finished trial beside a running one sets it to 1."""
    data = make_task(seed, train_size, val_size, test_size)
    hold = os.environ.get("AUTOAUG_TEST_HOLD")
    free = int(os.environ.get("AUTOAUG_TEST_HOLD_FREE", "0"))

    def build(tokenizer, task):
        model = build_model(tokenizer, task.num_classes, image_size=task.image_size)
        if hold and free:
            builds = hold + ".builds"
            os.makedirs(builds, exist_ok=True)
            held = _claim(builds) >= free
        else:
            held = bool(hold)
        if held:
            original = model.forward

            def forward(batch):
                while model.training and os.path.exists(hold):
                    time.sleep(0.05)
                return original(batch)

            model.forward = forward
        return model

    return TaskPlugin(data, build_model=build)
