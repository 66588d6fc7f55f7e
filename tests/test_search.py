"""`autoaug search` / `autoaug export` end to end: real Ray Tune, real Optuna,
real MLflow on SQLite, on a tiny shapes-vqa proxy (48 / 32 / 32 examples, 2-3 epochs).

Most searches go through the Python API in this process (one Ray instance for the module); the
resume test kills a real `python -m autoaug search` driver with SIGKILL and runs it again, and the
unreachable ``--address`` case runs as a subprocess in the background from the start of the module
(its Ray connection attempt is mostly waiting). Bad input and export go through the CLI's entry
point in this process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from autoaug.errors import AutoaugInputError
from autoaug.policy import Policy
from autoaug.search.controller import SearchRequest, run_search
from autoaug.search.searched import rungs
from autoaug.search.record_schema import ERROR_ATTR, POLICY_ATTR, STATE_ATTR
from autoaug.search.space import load_space
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from conftest import TASKS_MODULE, effective_setting, one_error_line, run_cli, search_request
from store_harness import sqlite_trial_states

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow

SMALL = {"train_size": 48, "val_size": 32, "test_size": 32}
CONTRACT_KEYS = {"study", "best_value", "best_trial", "n_complete", "n_pruned", "n_failed", "best_policy_path",
                 "mlflow_experiment_id"}
ADDRESS_TEST = "test_unreachable_address_exits_2_with_one_line"
ADDRESS_DEADLINE_S = 90


# ====================================================================== fixtures
# (plugin_dir, the task plug-ins on this process's and Ray's workers' path for the module: conftest)
def _start_cli(args: list[str], folder: Path, plugin_folder: Path, **extra_env: str) -> subprocess.Popen:
    env = dict(os.environ, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(folder / "stdout.txt", "w") as stdout, open(folder / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "autoaug", *args], cwd=folder, env=env, stdout=stdout,
                                stderr=stderr, start_new_session=True)  # its own process group, to kill it whole


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@pytest.fixture(scope="module", autouse=True)
def background(request, tmp_path_factory, plugin_dir):
    """Start the subprocess checks that are mostly waiting, if selected, at the start of the module."""
    started: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    if any(item.name == ADDRESS_TEST for item in request.session.items):
        folder = tmp_path_factory.mktemp("address")
        args = ["search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_task", "--name", "remote",
                "--trials", "1", "--max-epochs", "1", "--address", "127.0.0.1:1", "--workdir",
                str(folder / "runs"), "--json"]
        started["address"] = (_start_cli(args, folder, plugin_dir), folder, time.monotonic())
    yield started
    for process, _, _ in started.values():
        _kill_group(process)


_request = search_request  # the suite's small search (conftest), stages around the trials off


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The one workdir of the module's in-process searches, each under its own study name (a workdir
    holds many studies: README). A fresh workdir costs each search the creation of MLflow's tables
    (seconds under load); the tests read their own study and experiment, so sharing changes no check."""
    return tmp_path_factory.mktemp("shared") / "runs"


@pytest.fixture(scope="module")
def main_search(workdir, plugin_dir):
    """The shared small search: vlm_default, TPE, ASHA, 3 trials of up to 3 epochs."""
    request = _request(workdir, "main", trials=3, max_epochs=3, sampler="tpe", scheduler="asha")
    result = run_search(request)
    return request, result


def _study(request_or_workdir, name: str | None = None):
    if isinstance(request_or_workdir, SearchRequest):
        workdir, name = request_or_workdir.workdir, request_or_workdir.name
    else:
        workdir = request_or_workdir
    return optuna.load_study(study_name=name, storage=f"sqlite:///{Path(workdir).resolve() / 'optuna.db'}")


def _snapshot(study) -> list:
    return [(t.number, t.state, t.params, t.values, t.user_attrs, t.intermediate_values)
            for t in study.get_trials(deepcopy=True)]


def _client(result: dict) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=result["tracking_uri"])


def _runs(result: dict) -> tuple:
    """(the parent run, {trial label: child run}) of a search, checking there are no other runs."""
    client = _client(result)
    runs = client.search_runs([result["mlflow_experiment_id"]], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("autoaug_role") == "search"]
    assert len(parents) == 1, [run.data.tags for run in runs]
    parent = parents[0]
    children = [run for run in runs if run is not parent]
    assert all(run.data.tags.get("mlflow.parentRunId") == parent.info.run_id for run in children)
    labels = [run.data.tags["autoaug_trial"] for run in children]
    assert len(labels) == len(set(labels))
    return parent, {run.data.tags["autoaug_trial"]: run for run in children}


def _history(client, run, metric: str = "val_accuracy") -> list:
    return sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)


def _check_result_contract(result: dict, request: SearchRequest) -> None:
    assert CONTRACT_KEYS <= set(result), CONTRACT_KEYS - set(result)
    assert result["study"] == request.name
    assert json.loads(json.dumps(result)) == result  # JSON-serialisable as printed by --json


# ====================================================================== end to end
def test_small_search_json_contract_and_mlflow_records(main_search, tmp_path):
    request, result = main_search
    _check_result_contract(result, request)
    study = _study(request)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert result["n_complete"] + result["n_pruned"] == request.trials == len(finished)
    assert result["n_failed"] == 0 and len(trials) == request.trials
    states = {t.number: t.user_attrs[STATE_ATTR] for t in trials}
    assert result["n_complete"] == sum(state == "complete" for state in states.values())
    assert result["n_pruned"] == sum(state == "pruned" for state in states.values())

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert result["best_trial"] == best.number and result["best_value"] == pytest.approx(best.value)
    best_policy = Policy.load(result["best_policy_path"])
    assert [e.op for e in best_policy.config.entries] == [e["op"] for e in best.user_attrs[POLICY_ATTR]["entries"]]
    assert best_policy.config.provenance.trial == best.number

    client = _client(result)
    parent, children = _runs(result)
    assert parent.info.experiment_id == result["mlflow_experiment_id"]
    assert parent.data.tags["autoaug_study"] == request.name
    assert parent.data.params["space_hash"] == load_space("vlm_default").hash
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(f"trial {t.number}" for t in trials)  # one child per trial

    for trial in trials:
        run = children[f"trial {trial.number}"]
        tags, params = run.data.tags, run.data.params
        assert tags["autoaug_study"] == request.name
        assert tags["autoaug_trial"] == f"trial {trial.number}"
        assert tags["autoaug_state"] == trial.user_attrs[STATE_ATTR]
        assert run.info.status == "FINISHED"
        policy = Policy.from_dict(trial.user_attrs[POLICY_ATTR])
        entries = policy.config.entries
        # One name for one thing: every Optuna param is an MLflow param with the same value, and the
        # policy's ops appear under the same op.<name>.* names (issue 16 item 4).
        for name, value in trial.params.items():
            assert params[name] == str(value), name
        assert params["n_ops"] == str(len(entries))
        assert params["ops"] == ",".join(entry.op for entry in entries)
        for entry in entries:
            assert params[f"op.{entry.op}.use"] == "True"
            assert params[f"op.{entry.op}.magnitude"] == str(entry.magnitude)
            assert params[f"op.{entry.op}.p"] == str(entry.p)
            if f"op.{entry.op}.use" in trial.params:
                assert trial.params[f"op.{entry.op}.use"] is True
        unused = [name for name, value in trial.params.items() if name.endswith(".use") and value is False]
        assert all(name.removesuffix(".use").removeprefix("op.") not in params["ops"].split(",") for name in unused)
        # val_accuracy: one value per epoch in MLflow (epochs travel in each report's history); trials
        # report to Tune only at ASHA's rungs and at the end, so those are the values Optuna was told.
        history = _history(client, run)
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        # A 3-epoch trial has no ASHA rung (no early stopping: rungs at or after 85 % of the trial), so
        # it reports to Tune once, at the end; Ray may or may not pass that final result on to Optuna as
        # an intermediate value. So Optuna holds the last epoch or nothing, never an earlier one. Catches a
        # trial that reports every epoch (Optuna would hold epochs 1 and 2). That a rung's value reaches
        # Optuna is tested where trials have rungs (tests/test_searched_stage.py).
        assert rungs(request.max_epochs, None) == ()
        assert set(trial.intermediate_values) <= {len(history)} == {history[-1].step}
        for m in history:
            if m.step in trial.intermediate_values:
                assert m.value == pytest.approx(trial.intermediate_values[m.step])
        if trial.user_attrs[STATE_ATTR] == "complete":
            assert len(history) == request.max_epochs
        else:
            assert 1 <= len(history) < request.max_epochs
        assert history[-1].value == pytest.approx(trial.value)
        # The policy YAML as an artifact, the same policy the trial ran.
        local = client.download_artifacts(run.info.run_id, "policy.yaml", str(tmp_path))
        assert Policy.load(local).to_dict() == policy.to_dict()
    assert _history(client, children[f"trial {best.number}"])[-1].value == pytest.approx(result["best_value"])


def test_search_json_times_each_stage_and_accounts_its_trials_epochs(main_search):
    """README: ``stage_seconds`` and ``cost`` — per stage, how much of the slots' time went to training
    epochs and how busy their cores were. On the shared search (stages around the trials off): one stage,
    ``search``, with its 3 trials; every fraction derived from the stage's own numbers; the epochs fit
    inside the trials' own lifetimes. Catches: ``outside_epochs_fraction`` as epochs / capacity (the
    inside fraction; tried), a stage's wall time not timed or timed under another name, trials of another
    stage counted here, epoch seconds counted more than once (beyond the trials' lifetimes)."""
    request, result = main_search
    stage_seconds, cost = result["stage_seconds"], result["cost"]
    assert set(stage_seconds) == {"search"} == set(cost["stages"])
    assert 0 < stage_seconds["search"] <= result["seconds"]
    slots, cpus = cost["slots"], cost["cpus_per_slot"]
    assert slots >= 1 and cpus == request.cpus_per_trial
    search = cost["stages"]["search"]
    assert search["trials"] == request.trials
    assert search["wall_seconds"] == pytest.approx(stage_seconds["search"], abs=0.051)  # rounded to 2 and 1 places
    assert search["trials_per_minute"] == pytest.approx(60 * request.trials / search["wall_seconds"], rel=1e-2)
    capacity = search["wall_seconds"] * slots
    trials = _study(request).get_trials(deepcopy=False)
    lifetimes = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    assert 0 < search["epoch_seconds"] <= min(capacity, lifetimes), (search, lifetimes)
    assert search["outside_epochs_fraction"] == pytest.approx(1 - search["epoch_seconds"] / capacity, abs=2e-3)
    assert 0 < search["outside_epochs_fraction"] < 1  # Ray's and MLflow's overhead is never nothing
    assert search["cpu_seconds"] > 0
    assert search["cores_busy_fraction"] == pytest.approx(search["cpu_seconds"] / (capacity * cpus), abs=2e-3)


# ====================================================================== export
def test_export_twice_gives_identical_bytes_with_provenance(main_search, tmp_path, capsys):
    request, result = main_search
    first, second = tmp_path / "a.yaml", tmp_path / "b" / "a.yaml"
    for out in (first, second):
        code, out_text, err = run_cli(["export", "--name", request.name, "--out", str(out), "--workdir", request.workdir,
                                    "--json"], capsys)
        assert code == 0, err
        assert json.loads(out_text.strip().splitlines()[-1]) == {"path": str(out), "trial": result["best_trial"],
                                                                "study": request.name}
    assert first.read_bytes() == second.read_bytes()
    policy = Policy.load(first)
    provenance = policy.config.provenance
    assert provenance.study == request.name
    assert provenance.trial == result["best_trial"]
    assert provenance.value == pytest.approx(result["best_value"])
    assert provenance.search_space == "vlm_default"
    assert provenance.search_space_hash == load_space("vlm_default").hash
    assert provenance.data_fingerprint == make_shapes_vqa(request.seed, **SMALL).fingerprint
    study = _study(request)
    assert policy.config.entries == Policy.from_dict(study.trials[result["best_trial"]].user_attrs[POLICY_ATTR]).config.entries


def test_export_a_chosen_trial(main_search, tmp_path, capsys):
    request, result = main_search
    study = _study(request)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    chosen = next((t for t in complete if t.number != result["best_trial"]), complete[0])
    out = tmp_path / "chosen.yaml"
    code, _, err = run_cli(["export", "--name", request.name, "--trial", str(chosen.number), "--out", str(out),
                         "--workdir", request.workdir], capsys)
    assert code == 0, err
    policy = Policy.load(out)
    assert policy.config.provenance.trial == chosen.number
    assert policy.config.provenance.value == pytest.approx(chosen.value)
    assert policy.config.entries == Policy.from_dict(chosen.user_attrs[POLICY_ATTR]).config.entries


@pytest.mark.parametrize("case", ["unknown study", "unknown trial", "no records in workdir"])
def test_export_bad_input_exits_2_with_one_line(case, main_search, tmp_path, capsys):
    request, _ = main_search
    out = tmp_path / "out.yaml"
    argv = {"unknown study": ["--name", "no-such-study", "--workdir", request.workdir],
            "unknown trial": ["--name", request.name, "--trial", "99", "--workdir", request.workdir],
            "no records in workdir": ["--name", request.name, "--workdir", str(tmp_path / "empty")]}[case]
    code, out_text, err = run_cli(["export", *argv, "--out", str(out)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert {"unknown study": "no-such-study", "unknown trial": "--trial 99",
            "no records in workdir": "no search records"}[case] in line
    assert not out.exists()


# ====================================================================== refusing another search under the same name
def test_same_name_with_another_space_or_task_is_refused(main_search, tmp_path, capsys):
    request, _ = main_search
    study_before = _study(request)
    before, attrs_before = _snapshot(study_before), dict(study_before.user_attrs)

    code, _, err = run_cli(["search", "--space", "randaugment", "--sampler", "grid", "--task", "shapes-vqa",
                         "--name", request.name, "--trials", "1", "--max-epochs", str(request.max_epochs),
                         "--workdir", request.workdir], capsys)
    assert code == 2
    line = one_error_line(err)
    assert f"--name: {request.name}" in line and "different search space" in line
    assert "vlm_default" in line and "randaugment" in line and "nothing was changed" in line

    with pytest.raises(AutoaugInputError, match="different task/data"):
        run_search(_request(Path(request.workdir), request.name, trials=request.trials, max_epochs=request.max_epochs,
                            task_options={**SMALL, "train_size": 40}))
    with pytest.raises(AutoaugInputError, match="--max-epochs"):
        run_search(_request(Path(request.workdir), request.name, trials=request.trials, max_epochs=request.max_epochs + 1))

    study_after = _study(request)
    assert _snapshot(study_after) == before
    assert dict(study_after.user_attrs) == attrs_before


# ====================================================================== bad input
def _bad_cases(request: SearchRequest, tmp_path: Path) -> dict:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("keep me")
    base = ["--task", "shapes-vqa", "--name", request.name, "--max-epochs", str(request.max_epochs)]
    workdir = ["--workdir", request.workdir]
    return {
        # case: (argv, expected exit code, substrings of the one line)
        "unknown space": (["search", "--space", "no_such_space", *base, *workdir], 2, ["--space no_such_space", "vlm_default"]),
        "zero trials": (["search", "--space", "vlm_default", *base, "--trials", "0", *workdir], 2, ["--trials", "0"]),
        "unknown sampler": (["search", "--space", "vlm_default", *base, "--sampler", "bayes", *workdir], 2,
                            ["--sampler", "tpe", "nsga2"]),
        "pbt with a policy space": (["search", "--space", "vlm_default", *base, "--scheduler", "pbt", *workdir], 2,
                                    ["--scheduler: pbt", "pba_schedule"]),
        "unreachable postgres": (["search", "--space", "vlm_default", *base, *workdir, "--storage",
                                  "postgresql+psycopg://user:secret@127.0.0.1:1/db"], 2,
                                 ["--storage", "user:***@127.0.0.1:1/db"]),
        "unknown dialect": (["search", "--space", "vlm_default", *base, *workdir, "--storage", "nosuchdb://x/y"], 2,
                            ["--storage nosuchdb://x/y"]),
        "workdir is a file": (["search", "--space", "vlm_default", *base, "--workdir", str(a_file)], 2,
                              ["--workdir", str(a_file), "not writable"]),
    }


def _workdir_files(workdir) -> list[str]:
    """The workdir's files, without SQLite's WAL files (they come and go with open connections)."""
    return sorted(p.name for p in Path(workdir).iterdir() if not p.name.endswith(("-wal", "-shm")))


def test_bad_input_exits_2_with_one_line_and_the_next_run_still_works(main_search, tmp_path, capsys):
    request, result = main_search
    before = _snapshot(_study(request))
    workdir_files = _workdir_files(request.workdir)
    for case, (argv, expected_code, parts) in _bad_cases(request, tmp_path).items():
        code, out, err = run_cli(argv, capsys)
        assert code == expected_code, (case, err)
        line = one_error_line(err)
        for part in parts:
            assert part in line, (case, part, line)
        assert "secret" not in err, "the password must not be printed"
        assert out == "", case
    assert (tmp_path / "not-a-folder").read_text() == "keep me"
    assert _workdir_files(request.workdir) == workdir_files
    assert _snapshot(_study(request)) == before

    # The same search run again in the same workdir still works and keeps its trials.
    again = run_search(request)
    assert _snapshot(_study(request)) == before
    for key in ("best_trial", "best_value", "n_complete", "n_pruned", "n_failed", "mlflow_experiment_id"):
        assert again[key] == result[key], key
    assert again["n_stale_marked_failed"] == 0
    parent, children = _runs(again)
    assert parent.data.tags.get("autoaug_resumed") == "true"
    assert len(children) == request.trials


# ====================================================================== --force and train --from-search
FAKE_CALIBRATION = {  # what calibration records when the model does not learn from the images
    "uses_images": False, "learning_rate": 0.0025, "trial_epochs": 2, "none_val_accuracy": 0.5,
    "question_only_val_accuracy": 0.5, "image_margin": 0.0, "image_margin_needed": 0.1}


def test_force_searches_past_the_image_refusal_and_train_from_search_uses_the_calibration(
        plugin_dir, workdir, monkeypatch, capsys):
    """README: calibration's image check stops the search unless ``--force``; ``train --from-search``
    trains with the calibrated learning rate and length (explicit flags win). Calibration itself is
    replaced by its record (stored where the real one stores it: tests/test_search_stages.py runs the
    real one); the search, its store and the training run are real. Catches: a --force that still
    refuses (or a refusal that ignores the image check), trials that do not take the calibrated rate
    and length, --from-search reading nothing (the training defaults: 1e-3, 30 epochs) or overriding
    an explicit --max-epochs."""
    from autoaug.search import controller
    from autoaug.search.calibration import ImageSignalMissing
    from autoaug.search.record_schema import CALIBRATION_ATTR

    def recorded_calibration(context, rates, cap):
        context.study.set_user_attr(CALIBRATION_ATTR, FAKE_CALIBRATION)
        return dict(FAKE_CALIBRATION)

    monkeypatch.setattr(controller, "calibrate", recorded_calibration)
    request = _request(workdir, "blind", trials=1, max_epochs=3, calibrate=True)
    with pytest.raises(ImageSignalMissing, match="does not learn from the images"):
        run_search(request)
    assert not _study(request).trials  # refused before any trial

    result = run_search(_request(workdir, "blind", trials=1, max_epochs=3, calibrate=True, force=True))
    assert result["n_complete"] == 1 and result["n_failed"] == 0
    assert (result["learning_rate"], result["trial_epochs"]) == (0.0025, 2)
    _, children = _runs(result)
    assert len(_history(_client(result), children["trial 0"])) == 2  # trained the calibrated length, not 3

    task = ["--task", "shapes-vqa", *[f"--task-option={key}={value}" for key, value in SMALL.items()]]
    for extra, epochs in (([], 2), (["--max-epochs", "1"], 1)):
        code, out, err = run_cli(["train", "--from-search", "blind", "--workdir", str(workdir), *task, *extra, "--json"],
                                 capsys)
        assert code == 0, err
        trained = json.loads(out.strip().splitlines()[-1])
        assert (trained["learning_rate"], trained["epochs"]) == (0.0025, epochs), extra
        assert "as search blind calibrated: learning rate 0.0025, 2 epochs" in err


# ====================================================================== failures inside trials
@pytest.fixture(scope="module")
def failing_search(tmp_path_factory, workdir, plugin_dir):
    """A search whose task plug-in breaks two trials: one raises in forward, one trains into NaN."""
    folder = tmp_path_factory.mktemp("failing")
    markers = folder / "markers"
    markers.mkdir()
    request = _request(workdir, "failing", task=f"{TASKS_MODULE}:make_breaking_task", sampler="random",
                       trials=3, task_options={"marker_dir": str(markers), "plan": ["ok", "raise", "nan"], **SMALL})
    return request, run_search(request), markers


def _failed_runs(request: SearchRequest, result: dict) -> list:
    study = _study(request)
    _, children = _runs(result)
    return [children[f"trial {t.number}"] for t in study.trials if t.state == TrialState.FAIL]


def test_failing_trials_are_recorded_and_the_search_goes_on(failing_search, tmp_path, capsys):
    request, result, markers = failing_search
    _check_result_contract(result, request)
    assert len(list(markers.iterdir())) == 5  # 3 trials in the first round, 2 replacements
    assert result["n_failed"] == 2
    assert result["n_complete"] + result["n_pruned"] == request.trials

    study = _study(request)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs[STATE_ATTR] == "failed" for t in failed)
    assert all(POLICY_ATTR in t.user_attrs for t in failed)

    client = _client(result)
    _, children = _runs(result)
    assert len(children) == len(study.trials) == 5
    errors = []
    for run in _failed_runs(request, result):
        assert run.data.tags["autoaug_state"] == "failed"
        assert run.info.status == "FAILED"
        assert run.data.tags["autoaug_error"].strip()
        local = client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path / run.info.run_id))
        errors.append(Path(local).read_text().strip().splitlines()[-1])
    assert sorted(errors) == ["FloatingPointError: val_loss is nan at epoch 1",
                              "RuntimeError: deliberate failure from the test plug-in"], errors
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            run = children[f"trial {trial.number}"]
            assert run.data.tags["autoaug_state"] == "complete" and "autoaug_error" not in run.data.tags
            assert math.isfinite(trial.value)

    # A failed trial does not export; a complete one does.
    code, _, err = run_cli(["export", "--name", request.name, "--trial", str(failed[0].number), "--out",
                         str(tmp_path / "failed.yaml"), "--workdir", request.workdir], capsys)
    assert code == 2 and "only complete trials export" in one_error_line(err)
    assert Policy.load(result["best_policy_path"]).config.provenance.trial == result["best_trial"]


def test_failed_trial_error_tag_names_the_exception(failing_search):
    request, result, _ = failing_search
    tags = [run.data.tags["autoaug_error"] for run in _failed_runs(request, result)]
    assert any("RuntimeError: deliberate failure from the test plug-in" in tag for tag in tags), tags
    assert any("val_loss is nan" in tag for tag in tags), tags


# ====================================================================== samplers and schedulers
def _front_and_choice(values: dict[int, tuple[float, float]]) -> tuple[list[int], int]:
    """The Pareto front of (clean, robust) and the README's export from it, computed here by brute
    force (not by `autoaug.search.study`, the code under test): front trials by clean accuracy, best
    first; the export is the best clean accuracy among front trials within 0.02 of the best robust."""
    front = [number for number, (clean, robust) in values.items()
             if not any(c >= clean and r >= robust and (c, r) != (clean, robust) for c, r in values.values())]
    front.sort(key=lambda number: (-values[number][0], -values[number][1], number))
    best_robust = max(values[number][1] for number in front)
    eligible = [number for number in front if values[number][1] >= best_robust - 0.02]
    return front, min(eligible, key=lambda number: (-values[number][0], -values[number][1], number))


def test_nsga2_objective_pair(plugin_dir, workdir):
    # ASHA is asked for, but a two-objective trial is never cut on clean accuracy alone: all run to the end.
    # --confirm is asked for too (2 seeds, so a wrong implementation stays cheap): "a two-objective search
    # has no confirmation stage" (README). The front rule itself is tested on hand-built studies in
    # tests/test_nsga2_front.py; here the real search's JSON must agree with it.
    request = _request(workdir, "pareto", sampler="nsga2", trials=2, scheduler="asha", max_epochs=2,
                       confirm=True, confirm_seeds=2)
    result = run_search(request)
    _check_result_contract(result, request)
    assert result["n_complete"] == 2 and result["n_pruned"] == 0 and result["n_failed"] == 0
    assert result["confirmation"] is None and "confirmation" not in result["stage_seconds"]
    study = _study(request)
    assert len(study.directions) == 2 and study.user_attrs["sampler"] == "nsga2"
    assert all(len(t.values) == 2 for t in study.trials)
    front, choice = _front_and_choice({t.number: tuple(t.values) for t in study.trials})
    assert result["best_trial"] == choice
    assert result["best_value"] == pytest.approx(study.trials[choice].values[0])
    assert [row["trial"] for row in result["pareto_front"]] == front
    for row in result["pareto_front"]:
        assert Policy.load(row["policy_path"]).config.provenance.trial == row["trial"]
        assert (row["val_accuracy"], row["robust_val_accuracy"]) == pytest.approx(tuple(study.trials[row["trial"]].values))

    client = _client(result)
    _, children = _runs(result)
    for trial in study.trials:
        run = children[f"trial {trial.number}"]
        clean, robust = _history(client, run), _history(client, run, "robust_val_accuracy")
        assert len(clean) == len(robust) == request.max_epochs
        assert clean[-1].value == pytest.approx(trial.values[0])  # best_value is clean val accuracy
        assert robust[-1].value == pytest.approx(trial.values[1])
    assert "confirmation" not in children  # no confirmation child run either


def test_grid_sampler_runs_min_of_trials_and_grid(plugin_dir, workdir, tmp_path):
    space = tmp_path / "small_grid.yaml"
    space.write_text("kind: randaugment\nname: small_grid\nops: [vision_token_dropout, text_mask]\n"
                     "n: [1]\nm: [0.2, 0.6]\n")
    request = _request(workdir, "grid", space=str(space), sampler="grid", trials=3)
    result = run_search(request)
    _check_result_contract(result, request)
    study = _study(request)
    assert len(study.trials) == 2 == result["n_complete"] + result["n_pruned"]  # min(3 trials, 2 grid points)
    assert sorted((t.params["n"], t.params["m"]) for t in study.trials) == [(1, 0.2), (1, 0.6)]
    policy = Policy.load(result["best_policy_path"])
    assert policy.config.selection == "random_n" and policy.config.n == 1
    assert [e.op for e in policy.config.entries] == ["vision_token_dropout", "text_mask"]
    assert policy.config.provenance.search_space_hash == load_space(space).hash


def test_cmaes_sampler_models_its_parameters_with_baselines_in_the_study(plugin_dir, workdir):
    # 4 trials on 2 slots: Ray keeps one trial proposed ahead, so the third may be proposed before any has
    # finished, but the fourth only once a slot is free, after a searched trial has finished: CMA-ES has a
    # search space for every trial proposed from then on. The baselines (trials without parameters) used
    # to empty that space: CMA-ES then never ran.
    request = _request(workdir, "cmaes", sampler="cmaes", trials=4, cpus_per_trial=1.0, baselines=True)
    result = run_search(request)
    _check_result_contract(result, request)
    assert result["n_complete"] == 4 and result["n_failed"] == 0  # scheduler none: nothing is stopped early
    study = _study(request)
    assert study.user_attrs["sampler"] == "cmaes"
    searched = [t for t in study.trials if "autoaug_baseline" not in t.user_attrs]
    first_finished = min(t.datetime_complete for t in searched)
    later = [t for t in searched if t.datetime_start > first_finished]
    assert later, [(t.number, t.datetime_start, t.datetime_complete) for t in searched]
    # CMA-ES writes its generation and optimiser state on every trial it proposed
    assert all(any(key.startswith("cma:") for key in t.system_attrs) for t in later), [t.system_attrs for t in later]
    assert all({"max_ops", "clean_fraction", "augmented_loss_weight"} <= set(t.params) for t in searched)


def test_cmaes_refuses_a_space_it_cannot_model(tmp_path):
    request = _request(tmp_path / "runs", "cmaes-grid", space="randaugment", sampler="cmaes")
    with pytest.raises(AutoaugInputError, match="cmaes: randaugment has no numeric parameter"):
        run_search(request)


PBA_FAST = """\
kind: pba_schedule
name: pba_fast
ops:
  vision_token_dropout: {p: [0.2, 1.0], magnitude: [0.0, 1.0]}
  text_mask: {p: [0.2, 1.0], magnitude: [0.0, 1.0]}
perturbation_interval: 1
quantile_fraction: 0.5
"""


@pytest.fixture(scope="module")
def pbt_search(tmp_path_factory, workdir, plugin_dir):
    """Population Based Training: 4 members, 3 epochs, exploit/explore after every epoch."""
    folder = tmp_path_factory.mktemp("pbt")
    space = folder / "pba_fast.yaml"
    space.write_text(PBA_FAST)
    request = _request(workdir, "pbt", space=str(space), scheduler="pbt", trials=4, max_epochs=3,
                       cpus_per_trial=0.5)
    return request, run_search(request)


def test_pbt_exports_piecewise_schedules(pbt_search):
    request, result = pbt_search
    _check_result_contract(result, request)
    assert result["n_complete"] == 4 and result["n_failed"] == 0
    # PBT's trials are accounted in the stage its wall time is: its cost counts the 4 members' epochs
    search_cost = result["cost"]["stages"]["search"]
    assert search_cost["trials"] == 4 and search_cost["epoch_seconds"] > 0, search_cost
    study = _study(request)
    assert len(study.trials) == 4  # each member's policy and exploit count: the next test

    policy = Policy.load(result["best_policy_path"])
    assert {e.op for e in policy.config.entries} == {"vision_token_dropout", "text_mask"}
    for entry in policy.config.entries:
        assert entry.schedule.kind == "piecewise"
        points = entry.schedule.points
        assert [t for t, _ in points] == sorted(t for t, _ in points) and all(0 <= t <= 1 for t, _ in points)
        assert 0.2 <= entry.p <= 1.0
        if entry.schedule_p:  # one stretch of constant (p, magnitude): the schedule switches it on and off
            assert {value for _, value in points} <= {0.0, 1.0}
        else:
            assert entry.magnitude == 1.0  # the schedule value is the magnitude
    for op in ("vision_token_dropout", "text_mask"):  # PBA starts at magnitude 0
        active = [entry for entry in policy.config.entries if entry.op == op and entry.schedule(0.0) > 0
                  or entry.op == op and not entry.schedule_p]
        assert len(active) == 1 and active[0].magnitude * active[0].schedule(0.0) == 0.0
    assert policy.config.provenance.trial == result["best_trial"]
    assert study.trials[result["best_trial"]].values[0] == pytest.approx(result["best_value"])
    _, children = _runs(result)
    assert len(children) == 4  # one child run per member, whatever its exploits


def _pbt_logs(request: SearchRequest) -> dict[str, list]:
    """{member id: its exploit lines} from Ray's pbt_policy_<member>.txt logs."""
    (experiment,) = Path(request.workdir, "ray").glob(f"{request.name}-search-*")  # PBT is the search stage
    return {path.stem.removeprefix("pbt_policy_"): [json.loads(line) for line in path.read_text().splitlines() if line]
            for path in experiment.glob("pbt_policy_*.txt")}


def _config_in_force(lines: list, epoch: int) -> dict:
    """From a member's exploit lines ([target, clone, target_iter, clone_iter, old, new], oldest first):
    the config it trained with in ``epoch`` (0-based): after an exploit it continues from the clone's
    checkpoint at ``clone_iter`` with the new config; before the first, the lineage's first config."""
    config = lines[0][4]
    for *_, clone_iter, _old, new_config in lines:
        if clone_iter <= epoch:
            config = new_config
    return config


def test_pbt_members_record_their_own_exploit_history_and_export_what_they_trained(pbt_search):
    """Each member's ``pbt_exploits`` is the number of exploit lines Ray logged for it (0 without a log),
    also for a member exploited after its last epoch: it never reports again, so its count cannot come
    from a report. Either case, or both, can occur in one run; the same check covers them. Each member's
    policy applies, in every epoch, the p and magnitude its log says it trained with (a member never
    exploited: its first p throughout, magnitude 0 as PBA starts).

    At least one member is exploited: 4 members, the worse half exploited at each of 2 epoch boundaries
    where 2 or more have reported — a run without an exploit would test none of this. Catches: counts
    from reports, another member's log or policy, and (with the exploit required) a population that
    is never exploited (Ray's perturbation interval or quantile lost)."""
    request, _ = pbt_search
    logs = _pbt_logs(request)
    assert any(logs.values()), "no member was exploited: the checks below would hold vacuously"
    study = _study(request)
    ids = [t.user_attrs["pbt_trial_id"] for t in study.trials]
    assert len(set(ids)) == 4, ids
    recorded = {t.user_attrs["pbt_trial_id"]: t.user_attrs["pbt_exploits"] for t in study.trials}
    assert set(logs) <= set(recorded), (sorted(logs), sorted(recorded))
    assert recorded == {member: len(logs.get(member, [])) for member in recorded}, (recorded, logs)

    for trial in study.trials:
        policy = Policy.from_dict(trial.user_attrs[POLICY_ATTR])
        lines = logs.get(trial.user_attrs["pbt_trial_id"], [])
        for epoch in range(request.max_epochs):
            for op in ("vision_token_dropout", "text_mask"):
                p, magnitude = effective_setting(policy, op, epoch / request.max_epochs)
                if lines:
                    config = _config_in_force(lines, epoch)
                    expected = (round(config[f"op.{op}.p"], 6), round(config[f"op.{op}.magnitude"], 6))
                    assert (p, magnitude) == expected, (trial.number, op, epoch, lines)
                else:
                    assert magnitude == 0.0 and 0.2 <= p <= 1.0, (trial.number, op, epoch, p, magnitude)
                    assert p == effective_setting(policy, op, 0.0)[0]


# ====================================================================== resume after SIGKILL
def test_resume_after_sigkill_keeps_finished_trials(plugin_dir, tmp_path):
    workdir = tmp_path / "runs"
    args = ["search", "--space", "vlm_default", "--task", f"{TASKS_MODULE}:make_held_task", "--name", "resumable",
            "--trials", "4", "--max-epochs", "2", "--workdir", str(workdir), "--json",
            "--no-calibrate", "--no-confirm", "--no-baselines"]
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    # The first trial trains freely, later ones wait in training while the hold file exists: the driver
    # is certainly killed with a finished trial and a running one (CI once saw the last three trials
    # stopped early within a second, between two polls, and the driver end before the kill).
    hold = tmp_path / "hold"
    hold.touch()
    first = _start_cli(args, first_dir, plugin_dir, AUTOAUG_TEST_HOLD=str(hold), AUTOAUG_TEST_HOLD_FREE="1")
    url = f"sqlite:///{workdir / 'optuna.db'}"
    deadline = time.monotonic() + 600
    try:
        while True:
            assert first.poll() is None, "the driver ended before it was killed:\n" + (first_dir / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "no finished + running trial within 600 s"
            states = set(sqlite_trial_states(workdir / "optuna.db", "resumable").values())
            if states & {"COMPLETE", "PRUNED"} and "RUNNING" in states:
                break
            time.sleep(0.25)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        _kill_group(first)
        hold.unlink()
    assert first.returncode == -signal.SIGKILL

    killed = optuna.load_study(study_name="resumable", storage=url).get_trials(deepcopy=True)
    finished = {t.number: t for t in killed if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    running = {t.number for t in killed if t.state == TrialState.RUNNING}
    assert finished and running

    second = _start_cli(args, second_dir, plugin_dir)
    try:
        second.wait(timeout=900)
    finally:
        _kill_group(second)
    err = (second_dir / "stderr.txt").read_text()
    assert second.returncode == 0, err
    # the terminal carries our progress and summary, not the libraries' banners (Ray's box per stage, Optuna's
    # and MLflow's notes on creating or reusing their stores)
    for printed in ((first_dir / "stderr.txt").read_text(), err):
        for banner in ("Configuration for experiment", "View detailed results", "A new study created",
                       "Using an existing study", "Creating initial MLflow database tables"):
            assert banner not in printed, printed
    result = json.loads((second_dir / "stdout.txt").read_text().strip().splitlines()[-1])
    assert CONTRACT_KEYS <= set(result)
    assert result["n_complete"] + result["n_pruned"] == 4
    assert result["n_stale_marked_failed"] == len(running)
    assert result["n_failed"] == len(running)

    after = {t.number: t for t in optuna.load_study(study_name="resumable", storage=url).get_trials(deepcopy=True)}
    for number, trial in finished.items():  # kept, not re-run
        assert after[number].state == trial.state
        assert after[number].params == trial.params
        assert after[number].values == trial.values
        assert after[number].user_attrs[POLICY_ATTR] == trial.user_attrs[POLICY_ATTR]
    for number in running:
        assert after[number].state == TrialState.FAIL
        assert "driver stopped" in after[number].user_attrs[ERROR_ATTR]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after.values()) == 4
    parent, _ = _runs(result)  # still one parent run for the one study
    assert parent.data.tags.get("autoaug_resumed") == "true"


# ====================================================================== unreachable Ray cluster (last: it ran in the background)
def test_unreachable_address_exits_2_with_one_line(background):
    process, folder, started = background["address"]
    try:
        process.wait(timeout=max(1.0, started + ADDRESS_DEADLINE_S - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        pytest.fail(f"autoaug search --address 127.0.0.1:1 still running after {ADDRESS_DEADLINE_S} s")
    err = (folder / "stderr.txt").read_text()
    assert process.returncode == 2, err
    line = one_error_line(err)
    assert "--address: 127.0.0.1:1" in line
