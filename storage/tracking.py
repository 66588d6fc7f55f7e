"""The MLflow tracking store of a search: created once in the driver, then used through retrying clients."""

from __future__ import annotations

import contextlib
import os
import sqlite3

from autoaug.storage.locations import StorageError, check_sqlite_folder, is_embedded, is_tracking_server
from autoaug.storage.redaction import protect_logs, redact_url
from autoaug.storage.resilience import StorageFull, creation_lock, first_line, out_of_space, sqlite_path, use_wal


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
    if is_embedded(tracking_uri):
        check_sqlite_folder(tracking_uri, "--tracking-uri")
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
            location = None if is_tracking_server(tracking_uri) else artifact_root
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
