"""`--address`: a search joins a running Ray cluster (a real `ray start --head` on 127.0.0.1).

Ray 2.59+ turns on token authentication for clusters started with `ray start`; a loopback test
cluster runs with RAY_AUTH_MODE=disabled, and the driver gets the same setting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head():
    port = free_port()
    # Ray's unix sockets live under the temp dir, whose path must stay short (108-byte socket paths).
    temp_dir = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("ray start --head did not open its port within 90 s")
    # The open GCS port comes before the head's node has registered; a driver joining in between fails.
    while subprocess.run([str(RAY), "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True).returncode:
        if time.time() > deadline + 90:
            os.killpg(head.pid, signal.SIGKILL)
            pytest.fail("the head's `ray status` did not answer within 180 s")
        time.sleep(1)
    yield f"127.0.0.1:{port}", env, temp_dir
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_search_joins_a_running_cluster(ray_head, tmp_path):
    address, env, temp_dir = ray_head
    (tmp_path / "tiny_task.py").write_text(
        "from autoaug.trainers.shapes_vqa import make_shapes_vqa\n"
        "def make_task(seed):\n"
        "    return make_shapes_vqa(seed=seed, train_size=48, val_size=32, test_size=32)\n")
    env = {**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "autoaug", "search", "--space", "vlm_default", "--task", "tiny_task:make_task",
         "--name", "joined", "--trials", "2", "--max-epochs", "2", "--address", address,
         "--workdir", str(tmp_path / "runs"), "--json", "--no-calibrate", "--no-confirm", "--no-baselines"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_complete"] + summary["n_pruned"] == 2 and summary["n_failed"] == 0, (summary, result.stderr[-3000:])
    # the trials ran on the cluster we started, not on a private local Ray: its session logs hold
    # the workers that ran the trainable
    logs = list((temp_dir / "session_latest" / "logs").glob("worker-*"))
    assert logs, "no worker ran on the started cluster"
