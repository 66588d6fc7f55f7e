"""A search on a running Ray cluster reached the two supported ways — a Ray job submitted to the head's
job server (issue 22 item 1) and ``--address`` — and the head lost under a running search (item 3's
head part). One real head (`ray start --head` with its dashboard, started and killed by
`ray_harness.LocalCluster`) serves the module: a cluster start is seconds of the suite's time each.
The head-lost test kills that head, so it runs last (tests run in file order; the module is one
xdist unit: ``--dist loadfile``). Several nodes: tests/test_ray_multinode.py.

The task is the suite's plug-in (`tests/plugins`): a job ships it with ``--working-dir``; a driver
started with ``--address`` makes it importable on the workers through the search's runtime_env.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TASK_PLUGINS, TASKS_MODULE, missing_environment
from ray_harness import RAY, LocalCluster, trial_runs

TINY = ["--max-epochs", "2", "--no-calibrate", "--no-confirm", "--no-baselines", "--no-screen", "--scheduler", "none",
        "--json"]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head with two CPUs and its dashboard (the job server). Trials of `make_held_task` wait while
    the file ``head.hold`` exists (set before the head starts: its workers inherit the variable)."""
    cluster = LocalCluster()
    cluster.hold = tmp_path_factory.mktemp("hold") / "hold"
    cluster.env["AUTOAUG_TEST_HOLD"] = str(cluster.hold)
    cluster.env["AUTOAUG_TEST_HOLD_FREE"] = "1"  # the first trial finishes; the others wait while `hold` exists
    # `autoaug` on PATH of the job's entrypoint shell, as an installed autoaug is on a real head
    cluster.env["PATH"] = os.pathsep.join([str(RAY.parent), cluster.env.get("PATH", "")])
    try:
        cluster.start_head(num_cpus=2, dashboard=not _dashboard_missing())
        yield cluster
    finally:
        cluster.stop()


def _dashboard_missing() -> str:
    """Why the head cannot serve jobs here ('' when it can): the job server is the dashboard, which
    needs Ray's `[default]` extra (autoaug's `cluster` extra)."""
    from ray._private.utils import get_dashboard_dependency_error

    error = get_dashboard_dependency_error()
    return f"Ray's dashboard (the job server) is not installed: {error} (pip install -e '.[cluster]')" if error else ""


@pytest.mark.slow
def test_search_submitted_as_a_ray_job(head, tmp_path):
    """Item 1: `ray job submit` — the README's way from a laptop — runs a search on the cluster: the
    job's driver joins the job's cluster (RAY_ADDRESS, no --address), the plug-in ships with
    --working-dir, the job ends SUCCEEDED and the study's trials are where the submitter reads them
    (here an explicit --workdir: submitter and head share this machine; on a team's cluster, a
    PostgreSQL --storage and an MLflow server, README "On a cluster").
    Catches: a driver in a job that starts a private local Ray (or refuses RAY_ADDRESS) instead of
    joining; a runtime_env of the search that clashes with the job's (--working-dir); a job reported
    SUCCEEDED with fewer than --trials finished trials."""
    if _dashboard_missing():
        missing_environment(_dashboard_missing())
    from ray.job_submission import JobStatus, JobSubmissionClient

    shipped = tmp_path / "ship"
    shipped.mkdir()
    shutil.copy(TASK_PLUGINS / f"{TASKS_MODULE}.py", shipped)
    workdir = tmp_path / "records"
    submission = f"autoaug-{tmp_path.name}"
    address = f"http://127.0.0.1:{head.dashboard_port}"
    result = subprocess.run(
        [str(RAY), "job", "submit", "--address", address, "--submission-id", submission, "--working-dir",
         str(shipped), "--", "autoaug", "search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_task",
         "--name", "job", "--trials", "2", "--workdir", str(workdir), *TINY],
        env=head.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert JobSubmissionClient(address).get_job_status(submission) == JobStatus.SUCCEEDED
    summary = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{")))
    assert summary["n_complete"] + summary["n_pruned"] == 2 and summary["n_failed"] == 0, summary
    runs = trial_runs(workdir, "job")
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}, [run.info for run in runs]


@pytest.mark.slow
def test_head_lost_ends_with_one_line_and_the_same_command_resumes(head, tmp_path):
    """Item 3, the head: a search of 2 trials joined with --address (one finished, the other held in training)
    loses the head node — every process of it killed, the driver's own Ray with it. The search ends
    with one line on stderr and no traceback; the finished trial is still finished in the study; the
    same command, once a new head listens on the same address, completes exactly --trials.
    Catches: a driver that hangs on a dead GCS (Ray retries for a minute, then aborts with a C++ stack);
    a Ray traceback as the only report; a resume that counts the lost trial as finished or loses the
    finished one. Runs last: the module's head is replaced by a new one without a dashboard."""
    from autoaug.search.cluster import HEAD_LOST

    env = {**head.env, "PYTHONPATH": os.pathsep.join([str(TASK_PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]),
           # Ray's own give-up is 60 s (then it aborts the driver with a C++ log line); the search gives the
           # head 3/4 of it: 6 s here
           "RAY_gcs_rpc_server_reconnect_timeout_s": "8"}
    workdir = tmp_path / "runs"
    command = [sys.executable, "-m", "autoaug", "search", "--space", "vlm_default", "--task",
               f"{TASKS_MODULE}:make_held_task", "--name", "headless", "--trials", "2", "--address", head.address,
               "--workdir", str(workdir), *TINY]
    head.hold.touch()
    search = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while True:
        runs = trial_runs(workdir, "headless")
        states = [run.info.status for run in runs]
        if "FINISHED" in states and "RUNNING" in states:
            break
        if search.poll() is not None or time.time() > deadline:
            search.kill()
            raise AssertionError(f"no finished trial beside a running one (exit {search.poll()}): "
                                 f"{search.communicate()[1][-3000:]}")
        time.sleep(0.3)
    finished = {run.info.run_id for run in runs if run.info.status == "FINISHED"}
    head.remove(head.nodes[0])
    try:
        out, err = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"stopped: {HEAD_LOST}") and head.address in lines[-1], err[-3000:]
    assert {run.info.run_id for run in trial_runs(workdir, "headless") if run.info.status == "FINISHED"} == finished

    head.hold.unlink()
    head.start_head(num_cpus=2, port=head.port)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n_complete"] + summary["n_pruned"] == 2, summary
    runs = trial_runs(workdir, "headless")
    assert finished <= {run.info.run_id for run in runs if run.info.status == "FINISHED"}
    assert len([run for run in runs if run.info.status == "FINISHED"]) == 2, [run.info for run in runs]
    assert not [run for run in runs if run.info.status == "RUNNING"]
