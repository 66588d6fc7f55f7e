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
URL or an unwritable folder is one clear error (exit 2), never a half-written run.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugInputError

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
    """Create ``folder`` if needed and prove a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".autoaug-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise StorageError(f"--workdir {folder}: not writable ({error.strerror or error})") from None


def optuna_storage(url: str):
    """An Optuna `RDBStorage` for ``url``, connected once to prove it works.

    SQLite gets a generous lock timeout (the Tune driver is the only writer, but MLflow and a
    dashboard may read at the same time); server databases get ``pool_pre_ping`` so a connection
    dropped by the server is replaced instead of failing a trial.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("sqlite:"):
        _check_sqlite_folder(url, "--storage")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=False)
    except (SQLAlchemyError, ImportError, ValueError, sqlite3.Error) as error:
        raise StorageError(f"--storage {redact(url)}: cannot open the Optuna storage ({_short(error)})") from None


def prepare_tracking(tracking_uri: str, artifact_root: str, experiment_name: str) -> str:
    """Create (once, in the driver) the MLflow store and the experiment; returns the experiment id.

    Creating the SQLite schema from parallel processes has raced in other projects, so it happens
    here, before any trial starts.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri.startswith("sqlite:"):
        _check_sqlite_folder(tracking_uri, "--tracking-uri")
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        # A database store (SQLite or PostgreSQL) keeps artifacts in the workdir; a tracking server
        # decides for itself.
        served = tracking_uri.startswith(("http://", "https://", "databricks"))
        location = None if served else artifact_root
        return client.create_experiment(experiment_name, artifact_location=location)
    except (MlflowException, OSError) as error:
        raise StorageError(f"--tracking-uri {redact(tracking_uri)}: cannot use the MLflow tracking store ({_short(error)})") from None


def redact(url: str) -> str:
    """A URL with its password hidden (for messages and logs)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _check_sqlite_folder(url: str, flag: str) -> None:
    path = Path(url.split(":///", 1)[-1]) if ":///" in url else None
    if path is not None and not path.parent.is_dir():
        raise StorageError(f"{flag} {url}: folder {path.parent} does not exist")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
