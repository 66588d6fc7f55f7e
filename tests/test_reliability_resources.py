"""Reliability of a search's stores, and the security defaults (issue 13: resources, security, two
searches at once on one workdir).

Everything is real: two `autoaug search` processes share one workdir; the read-only and the full
workdir are a real tmpfs mount remounted read-only and filled up (root; a non-root run uses chmod for
the read-only case and skips the full one); the PostgreSQL outage stops and restarts a private
PostgreSQL server started for this module (so a shared server is never touched).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

import store_harness
from autoaug.storage import redact_url
from conftest import missing_environment, run_cli
from store_harness import HELD_TASK, PrivatePostgres, fill, free_port, search_args, start_private_postgres
from store_harness import sqlite_complete_trials as complete_trials

SECRET = "s3cret-P4ss"


# ====================================================================== helpers
@pytest.fixture(scope="module")
def plugin_env() -> dict:
    return store_harness.plugin_env()


def start_cli(args: list[str], env: dict, log_dir: Path, label: str) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{label}.out", "w") as stdout, open(log_dir / f"{label}.err", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "autoaug", *args], env=env, stdout=stdout, stderr=stderr,
                                start_new_session=True, cwd=log_dir)


def finish(process: subprocess.Popen, log_dir: Path, label: str, timeout: float = 240) -> tuple[int, str, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        code = None
    return code, (log_dir / f"{label}.out").read_text(), (log_dir / f"{label}.err").read_text()


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def error_lines(stderr: str) -> list[str]:
    """stderr's lines that are not progress or library warnings about retries."""
    return [line for line in stderr.splitlines() if line.strip()]


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


# ====================================================================== credentials
@pytest.mark.parametrize("given, shown", [
    ("postgresql+psycopg://autoaug:s3cret@db.example:5432/optuna", "postgresql+psycopg://autoaug:***@db.example:5432/optuna"),
    ("https://alice:p%40ss@mlflow.example/", "https://alice:***@mlflow.example/"),
    ("postgresql://u:pa/ss@word@db/optuna", "postgresql://u:***@db/optuna"),  # raw '/' and '@' in a hand-written password
    ("mysql://root:@localhost/db", "mysql://root:***@localhost/db"),
    ("postgresql://db/optuna?user=u&password=s3cret&sslmode=require", "postgresql://db/optuna?user=u&password=***&sslmode=require"),
    ("error: cannot reach 'postgresql://u:s3cret@db/x' (retry) and http://a:b@c:5000/api",
     "error: cannot reach 'postgresql://u:***@db/x' (retry) and http://a:***@c:5000/api"),
    ("sqlite:////tmp/work/optuna.db", "sqlite:////tmp/work/optuna.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
    ("postgresql://autoaug@db/optuna", "postgresql://autoaug@db/optuna"),
])
def test_redact_url_hides_the_password_and_keeps_the_rest(given, shown):
    assert redact_url(given) == shown
    assert redact_url(shown) == shown  # idempotent


def test_log_records_of_any_library_never_carry_a_password():
    from autoaug.storage.redaction import protect_logs

    protect_logs()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mlflow.store.db.utils.test")  # as deep as MLflow's own loggers
    logger.addHandler(handler)
    try:
        url = f"postgresql+psycopg://autoaug:{SECRET}@db:5432/optuna"
        logger.warning("engine for %s could not be created", url)
        try:
            raise ConnectionError(f"API request to https://bob:{SECRET}@mlflow:5000/api failed")
        except ConnectionError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and all(SECRET not in text for text in records), records
    assert "postgresql+psycopg://autoaug:***@db:5432/optuna" in records[0]
    assert "https://bob:***@mlflow:5000/api" in records[1]


def test_an_mlflow_server_that_does_not_answer_is_retried_then_one_clear_line(monkeypatch, caplog):
    from autoaug.storage import StorageUnavailable, tracking_client

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries (7 by default) on top of ours
    monkeypatch.setenv("AUTOAUG_STORAGE_RETRY_SECONDS", "4")
    port = free_port()
    client = tracking_client(f"http://autoaug:{SECRET}@127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        client.search_runs(["0"])
    message = str(caught.value)
    assert time.monotonic() - started >= 0.6  # it waited (backoff 0.2, 0.4, ... s) before giving up
    retries = [record.getMessage() for record in caplog.records if "retrying in" in record.getMessage()]
    assert len(retries) >= 2 and all(SECRET not in line for line in retries), retries
    assert message.startswith(f"--tracking-uri http://autoaug:***@127.0.0.1:{port}: the MLflow tracking server did not answer")
    assert "tries" in message and "run the same command again" in message
    assert SECRET not in message and "\n" not in message
    assert os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT") == "true"  # no "View run <URL>" lines on stdout


# ====================================================================== YAML and plug-ins
@pytest.mark.parametrize("kind", ["policy", "space"])
def test_yaml_with_python_tags_is_refused_with_one_line(kind, tmp_path, capsys):
    """`!!python/object` would run code with an unsafe loader: every YAML is read with safe_load."""
    from autoaug.cli import main

    sentinel = tmp_path / "code-ran"
    evil = tmp_path / f"evil-{kind}.yaml"
    evil.write_text(f'!!python/object/apply:os.system ["touch {sentinel}"]\n')
    workdir = tmp_path / "runs"
    argv = {"policy": ["show", str(evil)],
            "space": ["search", "--space", str(evil), "--task", "shapes-vqa", "--name", "x", "--workdir", str(workdir)]}[kind]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert caught.value.code == 2 and len(lines) == 1, err
    assert str(evil) in lines[0] and "python/object/apply:os.system" in lines[0], lines[0]
    assert "Traceback" not in err
    assert not sentinel.exists() and not workdir.exists()


def test_every_yaml_read_in_the_package_uses_a_safe_loader():
    """No unsafe loader anywhere in the shipped code (the test above proves the two user-facing ones)."""
    import re

    root = Path(__file__).resolve().parents[1]
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load|full_load_all)\(|Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)")
    offenders = [f"{path.relative_to(root)}:{number}" for folder in ("autoaug", "trainers", "dashboards", "storage", "benchmarks")
                 for path in (root / folder).rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if unsafe.search(line) and "SafeLoader" not in line]
    assert offenders == []


# ====================================================================== a private PostgreSQL server
@pytest.fixture(scope="module")
def private_postgres():
    """A private server of this module (a shared one is never stopped), or None where PostgreSQL's
    server programs are not installed."""
    server = start_private_postgres(SECRET)
    try:
        yield server
    finally:
        if server is not None:
            server.close()


def need(server):
    if server is None:
        missing_environment("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    return server


def test_postgres_down_longer_than_the_retry_budget_stops_with_one_line_and_keeps_trials(private_postgres, monkeypatch):
    import optuna

    from autoaug.storage import StorageUnavailable, optuna_storage

    server = need(private_postgres)
    name = f"budget-{uuid.uuid4().hex[:6]}"
    study = optuna.create_study(study_name=name, storage=optuna_storage(server.url))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    monkeypatch.setenv("AUTOAUG_STORAGE_RETRY_SECONDS", "2")
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            study.ask()
        elapsed = time.monotonic() - started
    finally:
        server.start()
    message = str(caught.value)
    assert 1.0 <= elapsed < 30, elapsed
    assert message.startswith(f"--storage postgresql+psycopg://autoaug:***@127.0.0.1:{server.port}/postgres: "
                              "the database server did not answer for "), message
    assert "run the same command again" in message and SECRET not in message and "\n" not in message
    assert [trial.value for trial in optuna.load_study(study_name=name, storage=server.url).trials] == [0.5]


# ====================================================================== three searches at once
OUTAGE_S = 6
RETRY_WINDOW_S = 120  # c's AUTOAUG_STORAGE_RETRY_SECONDS: longer than any outage here


@pytest.fixture(scope="module")
def searches_at_once(tmp_path_factory, plugin_env, private_postgres):
    """Three real `autoaug search` processes started at the same moment on one fresh workdir: ``a``
    and ``b`` keep their studies in the workdir's SQLite file, ``c`` on the private PostgreSQL
    server, which is stopped right after c's first trial finished, while c's other trials are held in
    training, and started again ``OUTAGE_S`` seconds after c has met the outage (all three share the
    workdir's MLflow SQLite store).

    As root the workdir is a 64 MB tmpfs, so the read-only and full tests can use it afterwards.
    """
    base = tmp_path_factory.mktemp("at-once")
    workdir = base / "runs"
    workdir.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(workdir)], capture_output=True).returncode == 0
    logs = base / "logs"
    hold = base / "hold"  # c's trials after its first wait in training until the server is down
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes = {name: start_cli(search_args(name, workdir, 2), plugin_env, logs, name) for name in "ab"}
        outage = None
        if private_postgres is not None:
            hold.touch()
            env = {**plugin_env, "AUTOAUG_STORAGE_RETRY_SECONDS": str(RETRY_WINDOW_S),
                   "AUTOAUG_TEST_HOLD": str(hold), "AUTOAUG_TEST_HOLD_FREE": "1"}
            processes["c"] = start_cli(search_args("c", workdir, 3, "--storage", private_postgres.url, task=HELD_TASK),
                                       env, logs, "c")
            outage = _interrupt_postgres_after_first_trial(private_postgres, processes["c"], logs / "c.err", hold)
        outcomes = {name: finish(process, logs, name, timeout=600) for name, process in processes.items()}
        yield SimpleNamespace(workdir=workdir, mounted=mounted, outcomes=outcomes, outage=outage, postgres=private_postgres)
    finally:
        hold.unlink(missing_ok=True)
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, 9)
        if mounted:
            subprocess.run(["umount", "-l", str(workdir)], check=False)


def _met_postgres_outage(stderr: str) -> bool:
    """Whether the search said it waits for the PostgreSQL store (a retry of the shared MLflow SQLite
    file, locked by a or b, says "retrying in" too and would not count)."""
    return any("--storage postgresql" in line and "retrying in" in line for line in stderr.splitlines())


def _interrupt_postgres_after_first_trial(server: PrivatePostgres, process: subprocess.Popen, stderr: Path,
                                         hold: Path) -> str:
    """Stop the server once c's first trial finished, then let c's held trials go on: c certainly meets
    the outage (its next result needs the server). Start it again ``OUTAGE_S`` s after c said it retries."""
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None:
            return f"the search ended before its first trial finished: {stderr.read_text()[-2000:]}"
        if time.monotonic() > deadline:
            return "no trial finished in 600 s"
        with contextlib.suppress(Exception):  # the study's tables appear once the search creates them
            if server.complete_trials("c") >= 1:
                break
        time.sleep(0.3)
    server.stop()
    hold.unlink()
    try:
        met_by = time.monotonic() + RETRY_WINDOW_S / 2
        while not _met_postgres_outage(stderr.read_text()):
            if process.poll() is not None:
                return f"the search ended during the outage without retrying: {stderr.read_text()[-2000:]}"
            if time.monotonic() > met_by:
                return f"the search did not meet the outage within {RETRY_WINDOW_S / 2:.0f} s"
            time.sleep(0.3)
        time.sleep(OUTAGE_S)
    finally:
        server.start()
    return "done"


@pytest.mark.slow
def test_two_searches_with_different_names_on_one_workdir_both_complete(searches_at_once):
    workdir = searches_at_once.workdir
    for name in "ab":
        code, out, err = searches_at_once.outcomes[name]
        assert code == 0, f"search {name} exited {code}: {err[-3000:]}"
        result = last_json(out)
        assert (result["study"], result["n_complete"], result["n_failed"]) == (name, 2, 0), result
        assert complete_trials(workdir / "optuna.db", name) == 2
        assert "Traceback" not in err
    with contextlib.closing(sqlite3.connect(f"file:{workdir / 'optuna.db'}?mode=ro", uri=True)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # read with sqlite3 and closed again: an open MLflow client would keep the file busy (no remount)
    with contextlib.closing(sqlite3.connect(f"file:{workdir / 'mlflow.db'}?mode=ro", uri=True)) as connection:
        rows = connection.execute(
            "SELECT experiments.name, runs.status, tags.value FROM runs JOIN experiments USING (experiment_id) "
            "JOIN tags ON tags.run_uuid = runs.run_uuid AND tags.key = 'autoaug_role'").fetchall()
    for name, trials in (("a", 2), ("b", 2)) + ((("c", 3),) if searches_at_once.postgres else ()):
        mine = sorted((status, role) for experiment, status, role in rows if experiment == f"autoaug-{name}")
        assert mine == [("FINISHED", "search")] + [("FINISHED", "trial")] * trials, rows


@pytest.mark.slow
def test_a_search_survives_a_postgres_restart_mid_search(searches_at_once):
    """c's server was down for OUTAGE_S seconds mid-search: the search waited, then finished with
    exactly the asked trials, and no password appears in anything it printed."""
    server = need(searches_at_once.postgres)
    assert searches_at_once.outage == "done", searches_at_once.outage
    code, out, err = searches_at_once.outcomes["c"]
    assert code == 0, err[-3000:]
    result = last_json(out)
    assert (result["n_complete"], result["n_failed"]) == (3, 0), result
    assert server.complete_trials("c") == 3
    assert _met_postgres_outage(err)  # the outage really met the search
    assert SECRET not in out + err
    assert result["optuna_storage"] == f"postgresql+psycopg://autoaug:***@127.0.0.1:{server.port}/postgres"
    assert "Traceback" not in err


def _make_read_only(workdir: Path, mounted: bool):
    if mounted:
        remount(workdir, "ro")
        return lambda: remount(workdir, "rw")
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [workdir, *workdir.rglob("*")] if path.is_dir()}
        for path in modes:
            path.chmod(0o555)
        return lambda: [path.chmod(mode) for path, mode in modes.items()]
    missing_environment("root ignores permissions and no tmpfs could be mounted: no honest read-only workdir here")


@pytest.mark.slow
def test_a_read_only_workdir_is_refused_with_one_line_and_its_trials_stay_readable(searches_at_once, tmp_path, capsys):
    workdir = searches_at_once.workdir
    assert complete_trials(workdir / "optuna.db", "a") == 2
    restore = _make_read_only(workdir, searches_at_once.mounted)
    try:
        code, out, err = run_cli(search_args("a", workdir, 3), capsys)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: --workdir {workdir}: not writable ("), lines[0]
        assert "Read-only file system" in lines[0] or "Permission denied" in lines[0], lines[0]
        # what finished is still there and still readable from the read-only folder
        code, out, err = run_cli(["export", "--name", "a", "--out", str(tmp_path / "a.yaml"), "--workdir", str(workdir),
                               "--json"], capsys)
        assert code == 0, err
        assert last_json(out)["trial"] in (0, 1) and (tmp_path / "a.yaml").is_file()
    finally:
        restore()
    assert complete_trials(workdir / "optuna.db", "a") == 2


@pytest.mark.slow
def test_a_full_workdir_stops_with_one_line_exit_1_and_loses_nothing(searches_at_once, capsys):
    workdir = searches_at_once.workdir
    if not searches_at_once.mounted:
        missing_environment("no real small file system (a tmpfs mounted as root) to fill")
    filler = fill(workdir)
    try:
        code, out, err = run_cli(search_args("b", workdir, 3), capsys)
        lines = error_lines(err)
        assert code == 1 and len(lines) == 1, err
        assert lines[0].startswith(f"stopped: --workdir {workdir}: no space left"), lines[0]
    finally:
        filler.unlink()
    assert complete_trials(workdir / "optuna.db", "b") == 2


def test_every_optuna_storage_call_is_retried():
    """An Optuna upgrade that adds or renames a storage call must not silently bypass the retries."""
    from optuna.storages import BaseStorage, RDBStorage

    from autoaug.storage.retrying import OPTUNA_CALLS, RetryingRDBStorage

    assert all(hasattr(RDBStorage, name) for name in OPTUNA_CALLS)
    api = {name for name in dir(BaseStorage) if not name.startswith("_") and callable(getattr(BaseStorage, name))}
    not_database_calls = {"remove_session", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback",
                          "is_heartbeat_enabled", "check_trial_is_updatable"}
    assert api - not_database_calls <= set(OPTUNA_CALLS), api - not_database_calls - set(OPTUNA_CALLS)
    assert all(getattr(RetryingRDBStorage, name) is not getattr(RDBStorage, name) for name in OPTUNA_CALLS)


def test_every_private_storage_call_optuna_makes_is_retried():
    """`RetryingRDBStorage` wraps the private RDBStorage methods that Optuna itself calls on a storage
    (its `_CachedStorage` and heartbeat code reach past the public API). Optuna may add or rename such
    calls in any release: this reads Optuna's installed source and fails, naming the call, when one
    would bypass the retries (then add it to `OPTUNA_CALLS`)."""
    import re
    from pathlib import Path

    import optuna

    from autoaug.storage.retrying import OPTUNA_CALLS

    pattern = re.compile(r"\b(?:_backend|storage)\.(_[a-z]\w*)\(")
    source = Path(optuna.__file__).parent
    called = {name: path.relative_to(source).as_posix() for path in source.rglob("*.py")
              for name in pattern.findall(path.read_text(encoding="utf-8"))}
    assert {"_create_new_trial", "_get_trials", "_get_stale_trial_ids"} <= called.keys(), \
        f"Optuna {optuna.__version__} no longer calls the storage's private methods where it did: re-read " \
        f"optuna/storages/_cached_storage.py and _heartbeat.py and update OPTUNA_CALLS ({sorted(called)})"
    missing = {name: where for name, where in called.items() if name not in OPTUNA_CALLS}
    assert not missing, f"Optuna {optuna.__version__} calls private storage methods that bypass the retries: {missing}"
