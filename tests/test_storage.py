"""Where a search's state lives (`autoaug.storage`): the workdir layout, read-only lookup of records,
and the names the package exports."""

from __future__ import annotations

import contextlib

import pytest

import autoaug.storage as storage
from autoaug.errors import AutoaugInputError


def test_every_exported_name_and_every_name_imported_before_the_split_is_there():
    # the names other modules imported from the package before it was split into modules
    before = {"DEFAULT_WORKDIR", "Locations", "StorageError", "StorageFull", "StorageUnavailable", "ensure_writable",
              "optuna_storage", "prepare_tracking", "redact", "redact_url", "resolve", "tracking_client"}
    missing = [name for name in sorted(before | set(storage.__all__)) if not hasattr(storage, name)]
    assert missing == []


def test_resolve_lays_out_the_workdir(tmp_path):
    where = storage.resolve(tmp_path / "runs")
    workdir = (tmp_path / "runs").resolve()
    assert where.workdir == workdir and workdir.is_dir()
    assert where.optuna_url == f"sqlite:///{workdir / storage.OPTUNA_FILE}"
    assert where.tracking_uri == f"sqlite:///{workdir / storage.MLFLOW_FILE}"
    assert where.artifact_root == (workdir / storage.ARTIFACTS_FOLDER).as_uri()
    assert (where.ray_dir, where.exports_dir) == (workdir / storage.RAY_FOLDER, workdir / storage.EXPORTS_FOLDER)
    assert where.embedded
    served = storage.resolve(tmp_path / "runs", storage="postgresql+psycopg://u@db/optuna",
                             tracking_uri="http://mlflow:5000")
    assert not served.embedded and served.optuna_url == "postgresql+psycopg://u@db/optuna"


@pytest.mark.parametrize("url, embedded, server", [
    ("sqlite:///x/optuna.db", True, False), ("sqlite://", True, False), ("postgresql+psycopg://u@db/o", False, False),
    ("http://mlflow:5000", False, True), ("https://mlflow", False, True), ("databricks", False, True),
])
def test_url_kinds(url, embedded, server):
    assert (storage.is_embedded(url), storage.is_tracking_server(url)) == (embedded, server)


def test_find_records_creates_nothing_and_says_what_is_missing(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(AutoaugInputError, match=r"^--workdir .*absent: no search records here \(no such folder"):
        storage.find_records(absent)
    assert not absent.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AutoaugInputError, match=r"^--workdir .*empty: no search records here \(.*optuna\.db does not exist\)"):
        storage.find_records(empty)
    (empty / storage.OPTUNA_FILE).touch()
    found = storage.find_records(empty)
    assert (found.optuna_url, found.tracking_uri) == (f"sqlite:///{empty.resolve() / storage.OPTUNA_FILE}", None)
    assert found.artifacts_dir == empty.resolve() / storage.ARTIFACTS_FOLDER
    with pytest.raises(AutoaugInputError, match=r"^--workdir .*: no MLflow records here"):
        storage.find_records(empty, need_tracking=True)
    with pytest.raises(AutoaugInputError, match=r"^--storage sqlite:///.*nothing\.db: no such database file"):
        storage.find_records(empty, storage=f"sqlite:///{tmp_path / 'nothing.db'}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty"]
    assert sorted(path.name for path in empty.iterdir()) == [storage.OPTUNA_FILE]


def test_open_study_names_the_studies_there(tmp_path):
    import optuna

    url = storage.sqlite_url(tmp_path / storage.OPTUNA_FILE)
    for name in ("first", "second"):
        optuna.create_study(study_name=name, storage=url)
    assert storage.open_study(url, "second").study_name == "second"
    with pytest.raises(AutoaugInputError) as refused:
        storage.open_study(url, "third")
    assert str(refused.value) == f"--name third: no such study in {url} (studies there: first, second)"


def test_opening_a_sqlite_file_retries_while_another_process_holds_it(tmp_path, monkeypatch):
    """When two processes create or check one file's schema at once, SQLite answers one of them
    "database is locked" at once, without waiting its busy timeout (CI saw a search refused at start
    while a test polled the file with plain Optuna): opening waits that out like every later call."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import autoaug.storage.resilience as resilience
    import autoaug.storage.studies as studies

    monkeypatch.setattr(resilience, "FIRST_DELAY_S", 0.01)
    monkeypatch.setenv(resilience.RETRY_SECONDS_ENV, "30")
    failures = {"use_wal": 2, "storage": 2}
    real_use_wal = studies.use_wal

    def locked_use_wal(database):
        if failures["use_wal"]:
            failures["use_wal"] -= 1
            raise sqlite3.OperationalError("database is locked")
        real_use_wal(database)

    from autoaug.storage.retrying import RetryingRDBStorage

    class LockedAtFirst(RetryingRDBStorage):
        def __init__(self, *args, **kwargs):
            if failures["storage"]:
                failures["storage"] -= 1
                raise OperationalError("PRAGMA", {}, sqlite3.OperationalError("database is locked"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(studies, "use_wal", locked_use_wal)
    monkeypatch.setattr("autoaug.storage.retrying.RetryingRDBStorage", LockedAtFirst)
    url = storage.sqlite_url(tmp_path / storage.OPTUNA_FILE)
    opened = studies.optuna_storage(url)
    assert failures == {"use_wal": 0, "storage": 0}
    assert isinstance(opened, RetryingRDBStorage) and opened.get_all_studies() == []


def test_opening_gives_up_after_the_retry_window_with_one_line(tmp_path, monkeypatch):
    import sqlite3

    import autoaug.storage.resilience as resilience
    import autoaug.storage.studies as studies

    monkeypatch.setattr(resilience, "FIRST_DELAY_S", 0.01)
    monkeypatch.setenv(resilience.RETRY_SECONDS_ENV, "0.2")

    def always_locked(database):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(studies, "use_wal", always_locked)
    url = storage.sqlite_url(tmp_path / storage.OPTUNA_FILE)
    with pytest.raises(resilience.StorageUnavailable) as stopped:
        studies.optuna_storage(url)
    message = str(stopped.value)
    assert message.startswith(f"--storage {url}: locked by another process for ") and "\n" not in message


def _wrapped(kind, statement: str, message: str):
    """``message`` as SQLAlchemy raises it: the driver's error wrapped in SQLAlchemy's."""
    import sqlite3

    from sqlalchemy import exc

    return getattr(exc, kind)(statement, {}, getattr(sqlite3, kind)(message))


@pytest.mark.parametrize("kind, message", [
    ("IntegrityError", "UNIQUE constraint failed: alembic_version.version_num"),  # Optuna's or MLflow's alembic
    ("IntegrityError", "UNIQUE constraint failed: version_info.version_info_id"),  # Optuna's own version row
    ("OperationalError", "table studies already exists"),
])
def test_another_process_creating_the_tables_is_waited_for_not_bad_input(kind, message):
    from autoaug.storage.resilience import SCHEMA_RACE_REASON, TRANSIENT, classify

    assert classify(_wrapped(kind, "CREATE", message)) == (TRANSIENT, SCHEMA_RACE_REASON)


def test_any_other_integrity_error_is_not_retried():
    from autoaug.storage.resilience import classify

    assert classify(_wrapped("IntegrityError", "INSERT", "UNIQUE constraint failed: studies.study_name")) == (None, "")


def test_a_search_opening_a_fresh_file_beside_plain_optuna_always_gets_its_storage(tmp_path):
    """What a user's optuna-dashboard or script does while a search starts: both create or check the schema
    of one fresh SQLite file at the same moment. Plain Optuna may lose (not ours); the search's open may not.
    Before the schema-race retry, 3 to 5 of these 40 opens failed ("UNIQUE constraint failed: alembic_version")."""
    import threading

    import optuna

    from autoaug.storage.studies import optuna_storage

    failures = []
    for round_ in range(40):
        url = storage.sqlite_url(tmp_path / f"race{round_}.db")
        start = threading.Barrier(2)

        def plain():
            start.wait()
            with contextlib.suppress(Exception):
                optuna.storages.RDBStorage(url).engine.dispose()

        def ours():
            start.wait()
            try:
                optuna_storage(url).engine.dispose()
            except Exception as error:  # noqa: BLE001 - collected and reported below
                failures.append(f"round {round_}: {error}")

        threads = [threading.Thread(target=plain), threading.Thread(target=ours)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_opening_does_not_wait_for_a_server_that_does_not_answer(monkeypatch):
    """Only contention is waited for at start: an unreachable PostgreSQL server is bad input at once."""
    import time
    from types import SimpleNamespace

    import autoaug.storage.resilience as resilience
    from autoaug.storage.studies import optuna_storage

    def no_waiting(seconds):
        raise AssertionError(f"opening waited {seconds} s for a server that refused the connection")

    monkeypatch.setattr(resilience, "time", SimpleNamespace(monotonic=time.monotonic, sleep=no_waiting))
    with pytest.raises(AutoaugInputError) as refused:
        optuna_storage("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    message = str(refused.value)
    assert message.startswith("--storage postgresql+psycopg://user:***@127.0.0.1:1/db: cannot open the Optuna storage")
