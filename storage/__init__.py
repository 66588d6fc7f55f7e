"""Where search state and records live (installed as ``autoaug.storage``).

Laptop default: everything under one ``--workdir`` (default ``./autoaug-runs``)::

    autoaug-runs/
      optuna.db        Optuna study storage (SQLite): the search state, what resume reads
      mlflow.db        MLflow tracking store (SQLite)
      mlartifacts/     MLflow artifacts (policy YAMLs, the search space file)
      ray/             Ray Tune's experiment folders
      exports/         policies written by `autoaug search` for its best trial

A team points ``--storage`` at PostgreSQL (``postgresql+psycopg://...``) and ``--tracking-uri`` at an
MLflow server; the command stays the same. Every location is checked before a search starts, so a bad
URL or an unwritable folder is one clear error (exit 2), never a half-written run; a full disk is exit 1.

Mid-search, a store that stops answering (PostgreSQL restarting, an MLflow server down, a SQLite file
locked by another search on the same workdir) is retried with backoff before the search stops with
one clear line (`autoaug.storage.resilience`); finished trials stay in the study. Passwords in URLs
are hidden in every message and log line (`redact_url`, `protect_logs`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugInputError
from autoaug.storage.redaction import protect_logs, redact_url
from autoaug.storage.resilience import (SQLITE_BUSY_TIMEOUT_S, StorageFull, StorageUnavailable, creation_lock, first_line,
                                        out_of_space, sqlite_path, use_wal)

__all__ = ["DEFAULT_WORKDIR", "Locations", "StorageError", "StorageFull", "StorageUnavailable", "ensure_writable",
           "optuna_storage", "prepare_tracking", "redact", "redact_url", "resolve", "tracking_client"]

redact = redact_url  # the name the search code imported first

DEFAULT_WORKDIR = Path("autoaug-runs")


class StorageError(AutoaugInputError):
    """A storage URL, tracking URI or folder that cannot be used."""


@dataclass(frozen=True)
class Locations:
    """Resolved places for one search's state and records."""

    workdir: Path
    optuna_url: str
    tracking_uri: str
    artifact_root: str
    ray_dir: Path
    exports_dir: Path

    @property
    def embedded(self) -> bool:
        return self.optuna_url.startswith("sqlite:") and self.tracking_uri.startswith("sqlite:")


def resolve(workdir: Path | str = DEFAULT_WORKDIR, storage: Optional[str] = None,
            tracking_uri: Optional[str] = None) -> Locations:
    """Defaults under ``workdir`` unless a URL is given; creates and checks the folder."""
    protect_logs()
    workdir = Path(workdir).expanduser().resolve()
    ensure_writable(workdir)
    artifacts = workdir / "mlartifacts"
    return Locations(
        workdir=workdir,
        optuna_url=storage or f"sqlite:///{workdir / 'optuna.db'}",
        tracking_uri=tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}",
        artifact_root=artifacts.as_uri(),
        ray_dir=workdir / "ray",
        exports_dir=workdir / "exports",
    )


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there.

    A read-only or foreign folder is bad input (exit 2: choose another ``--workdir``); a full disk is
    not (exit 1: the folder is right, the machine is short of space)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".autoaug-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        full = out_of_space(error)
        if full:
            raise StorageFull(f"--workdir {folder}: {full} ({error.strerror or error}); free space there or "
                              "choose another --workdir") from None
        raise StorageError(f"--workdir {folder}: not writable ({error.strerror or error})") from None


def optuna_storage(url: str, read_only: bool = False):
    """An Optuna storage for ``url``, connected once to prove it works; its calls retry while the
    database is briefly unavailable (`autoaug.storage.resilience`).

    SQLite files are switched to WAL mode with a generous lock timeout, so two searches on one
    workdir, a dashboard and a report can use one file at once; server databases get
    ``pool_pre_ping`` so a connection dropped by a restarting server is replaced, not reused.
    ``read_only`` (the UI launchers, the report, export) leaves the file exactly as it is, and so needs
    one: a SQLite file that is not there (or an in-memory database) is refused, not created empty.
    """
    from sqlalchemy.exc import SQLAlchemyError

    protect_logs()
    database = sqlite_path(url)
    if url.startswith("sqlite:"):
        _check_sqlite_folder(url, "--storage")
        if read_only and (database is None or not database.is_file()):
            raise StorageError(f"--storage {redact_url(url)}: no such SQLite database "
                               f"({database or 'in memory'}); a command that only reads needs search records")
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4}
    try:
        from autoaug.storage.retrying import RetryingRDBStorage

        if database is not None and database.is_file() and not os.access(database.parent, os.W_OK):
            # a read-only folder (an archived or read-only mounted workdir) cannot hold SQLite's WAL
            # index: open the file immutable, which nothing on that folder can change anyway
            return RetryingRDBStorage(f"sqlite:///file:{database}?immutable=1&uri=true", engine_kwargs=engine_kwargs,
                                      skip_table_creation=True)
        if database is None or read_only:
            return RetryingRDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=read_only)
        with creation_lock(database):
            use_wal(database)
            return RetryingRDBStorage(url, engine_kwargs=engine_kwargs)
    except (SQLAlchemyError, ImportError, ValueError, sqlite3.Error, OSError) as error:
        full = out_of_space(error)
        if full:
            raise StorageFull(f"--storage {redact_url(url)}: {full} ({first_line(error)})") from None
        raise StorageError(f"--storage {redact_url(url)}: cannot open the Optuna storage ({first_line(error)})") from None


def tracking_client(tracking_uri: str):
    """An MLflow client whose calls retry while the tracking store is briefly unavailable."""
    from autoaug.storage.retrying import RetryingMlflowClient

    _quiet_mlflow_urls()
    return RetryingMlflowClient(tracking_uri=tracking_uri)


def prepare_tracking(tracking_uri: str, artifact_root: str, experiment_name: str) -> str:
    """Create (once, in the driver) the MLflow store and the experiment; returns the experiment id.

    Creating the SQLite schema from parallel processes races (two searches started at once on one
    workdir), so it happens here, before any trial starts, under a lock beside the file.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    database = sqlite_path(tracking_uri)
    if tracking_uri.startswith("sqlite:"):
        _check_sqlite_folder(tracking_uri, "--tracking-uri")
    try:
        with creation_lock(database) if database is not None else contextlib.nullcontext():
            if database is not None:
                use_wal(database)
            # not retried: a store that does not answer at start is bad input (exit 2), said at once
            _quiet_mlflow_urls()
            client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:
                return experiment.experiment_id
            # A database store (SQLite or PostgreSQL) keeps artifacts in the workdir; a tracking server
            # decides for itself.
            served = tracking_uri.startswith(("http://", "https://", "databricks"))
            location = None if served else artifact_root
            return client.create_experiment(experiment_name, artifact_location=location)
    except (MlflowException, OSError, sqlite3.Error) as error:
        full = out_of_space(error)
        if full:
            raise StorageFull(f"--tracking-uri {redact_url(tracking_uri)}: {full} ({first_line(error)})") from None
        raise StorageError(f"--tracking-uri {redact_url(tracking_uri)}: cannot use the MLflow tracking store "
                           f"({first_line(error)})") from None


def _quiet_mlflow_urls() -> None:
    """MLflow prints "View run ... at: <tracking URI>" to stdout each time a run ends on a tracking
    server: stdout carries our JSON result, and the URI may carry a password."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    protect_logs()


def _check_sqlite_folder(url: str, flag: str) -> None:
    path = Path(url.split(":///", 1)[-1]) if ":///" in url else None
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"{flag} {redact_url(url)}: folder {path.parent} does not exist")


