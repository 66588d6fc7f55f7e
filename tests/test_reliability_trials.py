"""Reliability of a search's trials and driver (issue 13): a killed worker, trials that raise, train
into NaN or run out of memory, a search whose trials all fail, ``--max-failures``, a second driver on
the same study, and a killed driver's orphan MLflow runs. Real Ray Tune, Optuna and MLflow on SQLite,
on a tiny shapes-vqa proxy; the searches run in this process on one Ray instance, except the driver
that is killed (a real ``python -m autoaug search`` in its own process group).

The long version of the driver kills is ``benchmarks/kill_driver.py`` (README, Reliability).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from autoaug.search.controller import SearchRequest, run_search
from autoaug.search.exclusive import StudyBusy, study_lock
from autoaug.search.record_schema import ERROR_ATTR, POLICY_ATTR, RETRIES_ATTR, STATE_ATTR
from conftest import TASKS_MODULE, missing_environment, one_error_line, run_cli, search_request
from store_harness import sqlite_trial_states

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow

SMALL = {"train_size": 48, "val_size": 32, "test_size": 32}  # 2 training batches of 32 per epoch
EXPECTED_ERRORS = {
    "raise": "RuntimeError: deliberate failure from the test plug-in",
    "nan": "FloatingPointError: val_loss is nan at epoch 1",
    "oom": "DefaultCPUAllocator: can't allocate memory",
}


# ====================================================================== fixtures and helpers
def _breaking_request(folder: Path, name: str, plan: list[str], **options) -> SearchRequest:
    markers = folder / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    settings = dict(task=f"{TASKS_MODULE}:make_breaking_task", sampler="random", max_epochs=1,
                    task_options={"marker_dir": str(markers), "plan": plan, **SMALL})
    settings.update(options)
    return search_request(folder / "runs", name, **settings)


def _study(workdir, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{Path(workdir).resolve() / 'optuna.db'}")


def _children(workdir, name: str) -> dict[str, object]:
    """{trial label: MLflow child run} of the study's parent run (there must be exactly one parent)."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"autoaug-{name}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("autoaug_role") == "search"]
    assert len(parents) == 1
    return {run.data.tags["autoaug_trial"]: run for run in runs if run is not parents[0]}


def _parent(workdir, name: str):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"autoaug-{name}")
    return next(run for run in client.search_runs([experiment.experiment_id], max_results=1000)
                if run.data.tags.get("autoaug_role") == "search")


def _is_worker_death(reason: str) -> bool:
    return any(word in reason.lower() for word in ("died", "sigkill", "killed", "exit", "actor"))


# ====================================================================== bad trials and a killed worker
@pytest.fixture(scope="module")
def breaking_search(tmp_path_factory, plugin_dir):
    """4 trials wanted; builds 1-4 break: worker SIGKILLed mid-epoch, raise, out of memory, NaN.
    (Round 1: 4 trials, 1 finishes; round 2: 3 trials, 2 finish; round 3: 1 trial.)"""
    folder = tmp_path_factory.mktemp("breaking")
    request = _breaking_request(folder, "breaking", ["ok", "sigkill", "raise", "oom", "nan"], trials=4)
    return request, run_search(request)


def test_failed_trials_are_recorded_with_their_error_in_optuna_and_mlflow(breaking_search):
    request, result = breaking_search
    assert result["n_complete"] + result["n_pruned"] == request.trials  # the search went on and completed
    assert result["n_failed"] == 4
    study = _study(request.workdir, request.name)
    failed = [trial for trial in study.trials if trial.state == TrialState.FAIL]
    reasons = {trial.number: trial.user_attrs.get(ERROR_ATTR, "") for trial in failed}
    assert all(trial.user_attrs[STATE_ATTR] == "failed" and POLICY_ATTR in trial.user_attrs for trial in failed)
    for kind, text in EXPECTED_ERRORS.items():
        assert sum(text in reason for reason in reasons.values()) == 1, (kind, reasons)
    killed = [reason for reason in reasons.values() if not any(text in reason for text in EXPECTED_ERRORS.values())]
    assert len(killed) == 1 and _is_worker_death(killed[0]), reasons

    children = _children(request.workdir, request.name)
    assert len(children) == len(study.trials)
    for number, reason in reasons.items():
        run = children[f"trial {number}"]
        assert run.info.status == "FAILED" and run.data.tags["autoaug_state"] == "failed"
        assert reason in run.data.tags["autoaug_error"], (reason, run.data.tags["autoaug_error"])
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            assert children[f"trial {trial.number}"].info.status == "FINISHED"
    assert Path(result["best_policy_path"]).is_file()


def test_a_search_whose_trials_all_fail_exits_1_naming_the_first_error(plugin_dir, tmp_path, capsys):
    workdir = tmp_path / "runs"
    code, out, err = run_cli(["search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_failing_task",
                           "--name", "all-fail", "--trials", "1", "--max-epochs", "1", "--sampler", "random",
                           "--scheduler", "none", "--workdir", str(workdir), "--no-calibrate", "--no-confirm",
                           "--no-baselines", "--json"], capsys)
    assert code == 1, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # progress lines come first; the verdict is one line, last
    assert line.startswith("stopped: search all-fail: all 1 searched trials failed, nothing to export"), line
    assert line.endswith("first error (trial 0): RuntimeError: deliberate failure from the test plug-in"), line
    # the failed trial's reason was shown as it happened, in one line
    assert "[search all-fail] trial 0 failed: RuntimeError: deliberate failure from the test plug-in" in err
    assert out == ""  # no JSON result, no best policy
    assert not (workdir / "exports").exists()
    study = _study(workdir, "all-fail")
    assert [trial.state for trial in study.trials] == [TrialState.FAIL]
    assert _parent(workdir, "all-fail").info.status == "FAILED"


def test_max_failures_retries_a_trial_whose_worker_was_killed(plugin_dir, tmp_path):
    request = _breaking_request(tmp_path, "retried", ["sigkill"], trials=1, max_failures=1)
    result = run_search(request)
    assert result["n_failed"] == 0 and result["n_complete"] == 1
    study = _study(request.workdir, request.name)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    (attempt,) = trial.user_attrs[RETRIES_ATTR]
    assert _is_worker_death(attempt), attempt
    run = _children(request.workdir, request.name)["trial 0"]
    assert run.info.status == "FINISHED" and run.data.tags["autoaug_retries"] == "1"
    assert len(list((tmp_path / "markers").iterdir())) == 2  # the killed build, then the retry's


def test_max_failures_is_validated(capsys):
    from autoaug.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["search", "--space", "vlm_default", "--task", "shapes-vqa", "--name", "x", "--max-failures", "-1"])
    assert caught.value.code == 2
    assert "--max-failures" in one_error_line(capsys.readouterr().err)


# ====================================================================== one driver per study
def _holder(url: str, name: str, folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from autoaug.search.exclusive import study_lock
        with study_lock({url!r}, {name!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=folder,
                               start_new_session=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_study_lock_refuses_a_second_holder_until_the_first_is_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    holder = _holder(url, "shared", tmp_path)
    try:
        with pytest.raises(StudyBusy, match=f"pid {holder.pid} on "):
            with study_lock(url, "shared"):
                pass
        with study_lock(url, "another-study"):  # other studies of the same database are free
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    with study_lock(url, "shared"):  # the kernel released the dead holder's lock
        pass


def test_study_lock_on_postgresql(tmp_path):
    if not os.environ.get("AUTOAUG_TEST_POSTGRES_URL"):
        missing_environment("AUTOAUG_TEST_POSTGRES_URL is not set (no PostgreSQL server)")
    url = os.environ["AUTOAUG_TEST_POSTGRES_URL"]
    holder = _holder(url, f"shared-{os.getpid()}", tmp_path)
    try:
        with pytest.raises(StudyBusy, match=f"pid {holder.pid} on "):
            with study_lock(url, f"shared-{os.getpid()}"):
                pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 30  # the server ends the dead client's session
    while True:
        try:
            with study_lock(url, f"shared-{os.getpid()}"):
                break
        except StudyBusy:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def _start_cli(args: list[str], folder: Path, plugin_folder: Path, **extra_env: str) -> subprocess.Popen:
    env = dict(os.environ, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(folder / "stdout.txt", "w") as stdout, open(folder / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "autoaug", *args], cwd=folder, env=env, stdout=stdout,
                                stderr=stderr, start_new_session=True)


def _running_child_runs(workdir: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{workdir / 'mlflow.db'}?mode=ro", uri=True, timeout=5) as connection:
            return [label for label, in connection.execute(
                "select t.value from runs r join tags t on t.run_uuid = r.run_uuid "
                "where r.status = 'RUNNING' and t.key = 'autoaug_trial'")]
    except sqlite3.Error:
        return []


def test_second_driver_is_refused_and_a_killed_driver_resumes_with_its_orphans_closed(plugin_dir, tmp_path, capsys):
    workdir = tmp_path / "runs"
    args = ["search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_held_task", "--name", "shared",
            "--trials", "2", "--max-epochs", "2", "--sampler", "random", "--scheduler", "none",
            "--workdir", str(workdir), "--no-calibrate", "--no-confirm", "--no-baselines", "--json"]
    (tmp_path / "first").mkdir()
    hold = tmp_path / "hold"  # the first driver's trials wait in training until this file is removed
    hold.touch()
    first = _start_cli(args, tmp_path / "first", plugin_dir, AUTOAUG_TEST_HOLD=str(hold))
    url = f"sqlite:///{workdir / 'optuna.db'}"
    try:
        deadline = time.monotonic() + 600
        while True:  # a trial running, and its MLflow run open
            assert first.poll() is None, (tmp_path / "first" / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "no running trial within 600 s"
            running = [number for number, state in sqlite_trial_states(workdir / "optuna.db", "shared").items()
                       if state == "RUNNING"]
            if running and _running_child_runs(workdir):
                break
            time.sleep(0.2)

        # A second driver on the same study is refused at once, and changes nothing.
        code, out, err = run_cli(args, capsys)
        assert code == 2, err
        line = one_error_line(err)
        assert "--name shared" in line and f"pid {first.pid} on " in line and "nothing was changed" in line, line
        assert out == ""
        states = {t.number: t.state for t in optuna.load_study(study_name="shared", storage=url).trials}
        assert all(states[number] == TrialState.RUNNING for number in running), states  # not marked stale
        assert first.poll() is None
        assert _running_child_runs(workdir)

        os.killpg(first.pid, signal.SIGKILL)  # the driver and its Ray processes, mid-trial
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        hold.unlink()
    killed = optuna.load_study(study_name="shared", storage=url).trials
    stale = {t.number for t in killed if t.state == TrialState.RUNNING}
    finished_before = {t.number: (t.params, t.values) for t in killed if t.state == TrialState.COMPLETE}
    open_runs = set(_running_child_runs(workdir))
    assert stale and open_runs

    # What a driver killed mid-export leaves (export writes a temporary file, then renames it).
    (workdir / "exports").mkdir(exist_ok=True)
    leftover = workdir / "exports" / ".shared-best.yaml.x1y2z3.tmp"
    leftover.write_text("name: trunc")

    # The same command again: the dead driver's lock is gone, its trials and runs are closed.
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_complete"] == 2 and result["n_stale_marked_failed"] == len(stale)
    after = {t.number: t for t in optuna.load_study(study_name="shared", storage=url).trials}
    assert all((after[n].params, after[n].values) == kept for n, kept in finished_before.items())
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == 2

    children = _children(workdir, "shared")
    assert not _running_child_runs(workdir)
    killed_runs = {label for label, run in children.items() if run.info.status == "KILLED"}
    assert killed_runs == {label for label in open_runs if int(label.split()[-1]) in stale}
    assert result["n_orphan_runs_marked_killed"] == len(killed_runs)
    for label in killed_runs:
        tags = children[label].data.tags
        assert tags["autoaug_state"] == "killed" and "driver stopped" in tags["autoaug_error"]
        assert after[int(label.split()[-1])].state == TrialState.FAIL
    assert _parent(workdir, "shared").info.status == "FINISHED"
    assert not leftover.exists() and (workdir / "exports" / "shared-best.yaml").is_file()


# ====================================================================== export
def test_an_interrupted_export_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    from autoaug.errors import AutoaugInputError
    from autoaug.policy import Policy
    from autoaug.search.export import _write

    out = tmp_path / "best.yaml"
    _write(Policy.load("moderate"), out)
    before = out.read_bytes()

    def dies(*args, **kwargs):  # the process stops between writing and publishing the new file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(AutoaugInputError, match="--out"):
        _write(Policy.load("aggressive"), out)
    assert out.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.yaml"]  # no temporary file left
