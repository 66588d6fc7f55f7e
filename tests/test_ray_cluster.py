"""`--address`: a search joins a running Ray cluster (a real `ray start --head` on 127.0.0.1, started
and stopped by `ray_harness.LocalCluster`; several nodes: tests/test_ray_multinode.py).

The task is the suite's plug-in (`tests/plugins`), which reaches the cluster's workers through the
search's runtime_env.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import TASK_PLUGINS, TASKS_MODULE
from ray_harness import LocalCluster


@pytest.fixture
def ray_head():
    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()


def test_search_joins_a_running_cluster(ray_head, tmp_path):
    env = {**ray_head.env, "PYTHONPATH": os.pathsep.join([str(TASK_PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(
        [sys.executable, "-m", "autoaug", "search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_task",
         "--name", "joined", "--trials", "2", "--max-epochs", "2", "--address", ray_head.address,
         "--workdir", str(tmp_path / "runs"), "--json", "--no-calibrate", "--no-confirm", "--no-baselines"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_complete"] + summary["n_pruned"] == 2 and summary["n_failed"] == 0, (summary, result.stderr[-3000:])
    # the trials ran on the cluster we started, not on a private local Ray: its session logs hold
    # the workers that ran the trainable
    logs = list((ray_head.temp_dir / "session_latest" / "logs").glob("worker-*"))
    assert logs, "no worker ran on the started cluster"
