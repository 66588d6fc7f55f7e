"""The Optuna storage of a search: opened once per process, checked, and retried while it is briefly down."""

from __future__ import annotations

import os
import sqlite3

from autoaug.storage.locations import StorageError, check_sqlite_folder, is_embedded
from autoaug.storage.redaction import protect_logs, redact_url
from autoaug.storage.resilience import (CONTENTION_REASONS, SQLITE_BUSY_TIMEOUT_S, StorageFull,
                                        call_with_retry, creation_lock, first_line, out_of_space, sqlite_path, use_wal)


def optuna_storage(url: str, read_only: bool = False):
    """An Optuna storage for ``url``, connected once to prove it works; its calls retry while the
    database is briefly unavailable (`autoaug.storage.resilience`).

    SQLite files are switched to WAL mode with a generous lock timeout, so two searches on one
    workdir, a dashboard and a report can use one file at once; server databases get
    ``pool_pre_ping`` so a connection dropped by a restarting server is replaced, not reused.
    ``read_only`` (the UI launchers, the report, export) leaves the file exactly as it is, and so needs
    one: a SQLite file that is not there (or an in-memory database) is refused, not created empty.
    """
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    protect_logs()
    database = sqlite_path(url)
    if is_embedded(url):
        check_sqlite_folder(url, "--storage")
        if read_only and (database is None or not database.is_file()):
            raise StorageError(f"--storage {redact_url(url)}: no such SQLite database "
                               f"({database or 'in memory'}); a command that only reads needs search records")
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4}
    label = f"--storage {redact_url(url)}"
    try:
        from autoaug.storage.retrying import RetryingRDBStorage

        if database is not None and database.is_file() and not os.access(database.parent, os.W_OK):
            # a read-only folder (an archived or read-only mounted workdir) cannot hold SQLite's WAL
            # index: open the file immutable, which nothing on that folder can change anyway
            return RetryingRDBStorage(f"sqlite:///file:{database}?immutable=1&uri=true", engine_kwargs=engine_kwargs,
                                      skip_table_creation=True)
        # Opening waits out another process on the same store: one that opened the file with plain
        # Optuna (optuna-dashboard, a script) can create or check the schema at the same moment, and
        # SQLite answers one of two such writers "database is locked" at once, without waiting its
        # timeout. A server that does not answer is not waited for: at start that is bad input.
        if database is None or read_only:
            return call_with_retry(label, RetryingRDBStorage, url, engine_kwargs=engine_kwargs,
                                   skip_table_creation=read_only, only_for=CONTENTION_REASONS)
        with creation_lock(database):
            call_with_retry(label, use_wal, database, only_for=CONTENTION_REASONS)
            return call_with_retry(label, RetryingRDBStorage, url, engine_kwargs=engine_kwargs,
                                   only_for=CONTENTION_REASONS)
    # Optuna wraps a failed first commit (a server that does not answer) as its StorageInternalError
    except (SQLAlchemyError, StorageInternalError, ImportError, ValueError, sqlite3.Error, OSError) as error:
        full = out_of_space(error)
        if full:
            raise StorageFull(f"{label}: {full} ({first_line(error)})") from None
        raise StorageError(f"{label}: cannot open the Optuna storage ({first_line(error)})") from None


def open_study(optuna_url: str, name: str):
    """Study ``name`` of the storage at ``optuna_url``, opened read-only (export, the UI launchers, the
    report); an unknown name is bad input that lists the studies there."""
    import optuna

    storage = optuna_storage(optuna_url, read_only=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        listing = ", ".join(known) if known else "none"
        raise StorageError(f"--name {name}: no such study in {redact_url(optuna_url)} (studies there: {listing})") from None
