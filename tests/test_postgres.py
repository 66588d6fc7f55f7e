"""The team set-up: Optuna study and MLflow records on a real PostgreSQL server.

`.ci/run` installs and starts PostgreSQL and sets AUTOAUG_TEST_POSTGRES_URL (a role that may create
databases); without it (a laptop without PostgreSQL) these tests are skipped, not faked.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from conftest import missing_environment

BASE_URL = os.environ.get("AUTOAUG_TEST_POSTGRES_URL")


@pytest.fixture(scope="module", autouse=True)
def _postgres_server():
    """Before the module's databases: skip without a server, fail under CI=true (`missing_environment`)."""
    if not BASE_URL:
        missing_environment("AUTOAUG_TEST_POSTGRES_URL is not set (no PostgreSQL server)")


TINY = {"train_size": 48, "val_size": 32, "test_size": 32}


@pytest.fixture(scope="module")
def databases():
    """Two fresh databases (Optuna, MLflow) on the server, dropped afterwards."""
    import psycopg

    names = [f"autoaug_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("optuna", "mlflow")]
    admin = BASE_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names:
            connection.execute(f'CREATE DATABASE "{name}"')
    base = BASE_URL.rsplit("/", 1)[0]
    yield tuple(f"{base}/{name}" for name in names)
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def assert_password_hidden(result: dict, optuna_url: str, mlflow_url: str) -> None:
    """The result names both servers, user and database included, with the password replaced."""
    from sqlalchemy.engine import make_url

    assert make_url(optuna_url).password, "AUTOAUG_TEST_POSTGRES_URL must carry a password for this check"
    printed = json.dumps(result)
    for key, url in (("optuna_storage", optuna_url), ("tracking_uri", mlflow_url)):
        given, shown = make_url(url), make_url(result[key])
        assert shown.password == "***", f"{key}: {result[key]}"
        assert (shown.username, shown.host, shown.port, shown.database) == \
            (given.username, given.host, given.port, given.database)
        assert f":{given.password}@" not in printed


def test_search_resume_and_export_on_postgresql(databases, tmp_path):
    import mlflow
    import optuna

    from autoaug import Policy
    from autoaug.search.controller import SearchRequest, run_search
    from autoaug.search.export import export_from_storage

    optuna_url, mlflow_url = databases
    request = SearchRequest(space="vlm_default", name="team", task="shapes-vqa", trials=2, max_epochs=2,
                            workdir=str(tmp_path), storage=optuna_url, tracking_uri=mlflow_url,
                            task_options=TINY, scheduler="none", calibrate=False, confirm=False, baselines=False)
    first = run_search(request)
    assert first["n_complete"] == 2 and first["n_failed"] == 0
    assert_password_hidden(first, optuna_url, mlflow_url)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()

    study = optuna.load_study(study_name="team", storage=optuna_url)
    params_before = [trial.params for trial in study.trials]
    request.trials = 3
    second = run_search(request)  # same study name: resumes, runs one more trial only
    study = optuna.load_study(study_name="team", storage=optuna_url)
    assert second["n_complete"] == 3 and len(study.trials) == 3
    assert [trial.params for trial in study.trials[:2]] == params_before

    client = mlflow.MlflowClient(tracking_uri=mlflow_url)
    runs = client.search_runs([first["mlflow_experiment_id"]])
    parents = [run for run in runs if run.data.tags.get("autoaug_role") == "search"]
    children = [run for run in runs if run.data.tags.get("autoaug_role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}

    path, number = export_from_storage("team", tmp_path / "policy.yaml", storage=optuna_url)
    again, _ = export_from_storage("team", tmp_path / "again.yaml", storage=optuna_url)
    assert path.read_bytes() == again.read_bytes()
    assert Policy.load(path).config.provenance.trial == number == second["best_trial"]
