"""Where one workdir keeps a search's state and records, and what a store URL says about itself.

Everyone who needs a path or a URL of the records asks here (the search, export, the UI launchers,
the report, benchmarks), so the workdir layout is written once::

    autoaug-runs/          DEFAULT_WORKDIR
      optuna.db            OPTUNA_FILE: Optuna study storage (SQLite), the search state resume reads
      mlflow.db            MLFLOW_FILE: MLflow tracking store (SQLite)
      mlartifacts/         ARTIFACTS_FOLDER: MLflow artifacts (policy YAMLs, the search space file)
      ray/                 RAY_FOLDER: Ray Tune's experiment folders
      exports/             EXPORTS_FOLDER: policies written by `autoaug search` for its best trial

Two ways in: `resolve` for a command that writes (a search creates the folder and proves it
writable), `find_records` for one that only reads (export, `autoaug ui`, `autoaug report`), which
creates nothing and refuses a workdir without records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugInputError
from autoaug.storage.redaction import protect_logs, redact_url
from autoaug.storage.resilience import StorageFull, out_of_space, sqlite_path

DEFAULT_WORKDIR = "autoaug-runs"  # the --workdir default of every command and of the library calls
OPTUNA_FILE = "optuna.db"
MLFLOW_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"
RAY_FOLDER = "ray"
EXPORTS_FOLDER = "exports"

# Tracking URIs of an MLflow server (which keeps its own artifacts) rather than a database store.
_SERVER_PREFIXES = ("http://", "https://", "databricks")


class StorageError(AutoaugInputError):
    """A storage URL, tracking URI or folder that cannot be used."""


def is_embedded(url: str) -> bool:
    """Whether ``url`` is a SQLite store (a file in a folder, or in memory) rather than a server."""
    return url.startswith("sqlite:")


def is_tracking_server(tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` names an MLflow tracking server, not a database store."""
    return tracking_uri.startswith(_SERVER_PREFIXES)


def sqlite_url(database: Path) -> str:
    """The SQLAlchemy URL of SQLite file ``database``."""
    return f"sqlite:///{database}"


def workdir_path(workdir: Path | str) -> Path:
    """``workdir`` as the absolute folder every location is resolved against."""
    return Path(workdir).expanduser().resolve()


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
        return is_embedded(self.optuna_url) and is_embedded(self.tracking_uri)


def resolve(workdir: Path | str = DEFAULT_WORKDIR, storage: Optional[str] = None,
            tracking_uri: Optional[str] = None) -> Locations:
    """Defaults under ``workdir`` unless a URL is given; creates and checks the folder."""
    protect_logs()
    workdir = workdir_path(workdir)
    ensure_writable(workdir)
    return Locations(
        workdir=workdir,
        optuna_url=storage or sqlite_url(workdir / OPTUNA_FILE),
        tracking_uri=tracking_uri or sqlite_url(workdir / MLFLOW_FILE),
        artifact_root=(workdir / ARTIFACTS_FOLDER).as_uri(),
        ray_dir=workdir / RAY_FOLDER,
        exports_dir=workdir / EXPORTS_FOLDER,
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


@dataclass(frozen=True)
class RecordLocations:
    """The stores of a finished (or running) search, checked to exist; nothing was created."""

    workdir: Path
    optuna_url: str
    tracking_uri: Optional[str]  # None: no MLflow records to read (the report says so)

    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / ARTIFACTS_FOLDER


def find_records(workdir: Path | str = DEFAULT_WORKDIR, storage: Optional[str] = None,
                 tracking_uri: Optional[str] = None, need_tracking: bool = False) -> RecordLocations:
    """The stores a read-only command opens: ``storage`` / ``tracking_uri`` where given, else the
    workdir's SQLite files, which must already exist (a missing one is a clear error, never a fresh
    empty store). Without ``need_tracking`` a workdir with no MLflow file gives ``tracking_uri=None``."""
    folder = workdir_path(workdir)
    if storage is None or (tracking_uri is None and need_tracking):
        if not folder.is_dir():
            raise StorageError(f"--workdir {workdir}: no search records here (no such folder: run `autoaug search` "
                               "first, or pass --workdir)")
    if storage is None:
        database = folder / OPTUNA_FILE
        if not database.is_file():
            raise StorageError(f"--workdir {workdir}: no search records here ({database} does not exist)")
        storage = sqlite_url(database)
    else:
        check_sqlite_file(storage, "--storage")
    if tracking_uri is None:
        database = folder / MLFLOW_FILE
        if database.is_file():
            tracking_uri = sqlite_url(database)
        elif need_tracking:
            raise StorageError(f"--workdir {workdir}: no MLflow records here ({database} does not exist)")
    else:
        check_sqlite_file(tracking_uri, "--tracking-uri")
    return RecordLocations(workdir=folder, optuna_url=storage, tracking_uri=tracking_uri)


def check_sqlite_file(url: str, flag: str) -> None:
    """A SQLite ``url`` (given as ``flag``) must name an existing file: reading never creates one."""
    if is_embedded(url) and ":///" in url:
        path = Path(url.split(":///", 1)[1])
        if not path.is_file():
            raise StorageError(f"{flag} {redact_url(url)}: no such database file")


def check_sqlite_folder(url: str, flag: str) -> None:
    """A SQLite ``url`` (given as ``flag``) must lie in an existing folder: SQLite creates the file,
    not the folders above it."""
    path = Path(url.split(":///", 1)[-1]) if ":///" in url else None
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"{flag} {redact_url(url)}: folder {path.parent} does not exist")


__all__ = ["ARTIFACTS_FOLDER", "DEFAULT_WORKDIR", "EXPORTS_FOLDER", "Locations", "MLFLOW_FILE", "OPTUNA_FILE",
           "RAY_FOLDER", "RecordLocations", "StorageError", "check_sqlite_file", "check_sqlite_folder",
           "ensure_writable", "find_records", "is_embedded", "is_tracking_server", "resolve", "sqlite_path",
           "sqlite_url", "workdir_path"]
