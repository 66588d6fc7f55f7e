"""Where search state and records live (installed as ``autoaug.storage``).

Laptop default: everything under one ``--workdir`` (default ``./autoaug-runs``; the layout is in
`autoaug.storage.locations`). A team points ``--storage`` at PostgreSQL (``postgresql+psycopg://...``)
and ``--tracking-uri`` at an MLflow server; the command stays the same. Every location is checked
before a search starts, so a bad URL or an unwritable folder is one clear error (exit 2), never a
half-written run; a full disk is exit 1.

Mid-search, a store that stops answering (PostgreSQL restarting, an MLflow server down, a SQLite file
locked by another search on the same workdir) is retried with backoff before the search stops with
one clear line (`autoaug.storage.resilience`); finished trials stay in the study. Passwords in URLs
are hidden in every message and log line (`redact_url`, `protect_logs`).

Modules: `locations` (workdir layout, URL kinds), `studies` (the Optuna storage), `tracking` (the
MLflow store), `resilience` and `retrying` (riding out outages), `redaction` (hiding passwords).
This package only re-exports their public names.
"""

from __future__ import annotations

from autoaug.storage.locations import (ARTIFACTS_FOLDER, DEFAULT_WORKDIR, EXPORTS_FOLDER, MLFLOW_FILE, OPTUNA_FILE,
                                       RAY_FOLDER, Locations, RecordLocations, StorageError, ensure_writable,
                                       find_records, is_embedded, is_tracking_server, resolve, sqlite_path, sqlite_url,
                                       workdir_path)
from autoaug.storage.redaction import protect_logs, redact_url
from autoaug.storage.resilience import StorageFull, StorageUnavailable
from autoaug.storage.studies import open_study, optuna_storage
from autoaug.storage.tracking import prepare_tracking, tracking_client

redact = redact_url  # the name the search code imported first

__all__ = ["ARTIFACTS_FOLDER", "DEFAULT_WORKDIR", "EXPORTS_FOLDER", "Locations", "MLFLOW_FILE", "OPTUNA_FILE",
           "RAY_FOLDER", "RecordLocations", "StorageError", "StorageFull", "StorageUnavailable", "ensure_writable",
           "find_records", "is_embedded", "is_tracking_server", "open_study", "optuna_storage", "prepare_tracking", "protect_logs",
           "redact", "redact_url", "resolve", "sqlite_path", "sqlite_url", "tracking_client", "workdir_path"]
