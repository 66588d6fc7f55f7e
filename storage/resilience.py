"""What a search does when its stores misbehave mid-run: wait out what passes, stop clearly on what won't.

Three kinds of trouble, told apart by `classify`:

- *transient*: a PostgreSQL server restarting or unreachable, an MLflow server that does not answer,
  a SQLite file locked by another search of the same workdir. The call is retried with exponential
  backoff (0.2 s doubling to 15 s) for up to ``AUTOAUG_STORAGE_RETRY_SECONDS`` (default 120 s), then
  the search stops with `StorageUnavailable`.
- *resource*: the workdir is full or read-only. Retrying cannot help: the search stops at once with
  `StorageFull`.
- anything else is not ours to judge and propagates unchanged.

Both stops are `AutoaugError`s (exit 1, one line) naming the store with its password hidden. A write
that failed was rolled back by the database, so every trial finished before the stop is still in
the study, and running the same command again resumes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Optional

from autoaug.errors import AutoaugError
from autoaug.storage.redaction import redact_url

RETRY_SECONDS_ENV = "AUTOAUG_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
FIRST_DELAY_S = 0.2
LONGEST_DELAY_S = 15.0
SQLITE_BUSY_TIMEOUT_S = 60

TRANSIENT = "transient"
RESOURCE = "resource"

_log = logging.getLogger("autoaug.storage")

# SQLite reports resource trouble through OperationalError messages, not errno.
_SQLITE_RESOURCE = {"database or disk is full": "no space left", "attempt to write a readonly database": "read-only",
                    "disk i/o error": "disk I/O error", "unable to open database file": "cannot open the database file"}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database schema is locked")
# Two processes creating one store's tables at once (a search, and optuna-dashboard, a script or an
# MLflow server opening the same file): the loser sees a table that "already exists" or a duplicate
# schema-version row (Optuna's `version_info`, Optuna's and MLflow's alembic `alembic_version`). These
# tables are written only while a store is created, so a retry finds the winner's schema.
_SCHEMA_VERSION_TABLES = ("alembic_version", "version_info")
LOCKED_REASON = "locked by another process"
SCHEMA_RACE_REASON = "another process was creating its tables"
# What another process on the same store causes; opening a store waits out only these (a server that
# does not answer at start is bad input, exit 2, not a wait).
CONTENTION_REASONS = frozenset({LOCKED_REASON, SCHEMA_RACE_REASON})
_OS_RESOURCE = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit reached",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# MLflow's REST client and requests/urllib3 when a tracking server is down or restarting.
_NETWORK_TRANSIENT = ("max retries exceeded", "connection refused", "connectionerror", "connection aborted",
                      "remote end closed connection", "temporarily unavailable", "timed out", "name or service not known")


SPACE_REASONS = ("no space left", "disk quota exceeded", "file size limit reached")


def out_of_space(error: BaseException) -> Optional[str]:
    """The reason when ``error`` says the disk (or quota) is full; None otherwise."""
    kind, reason = classify(error)
    return reason if kind == RESOURCE and reason in SPACE_REASONS else None


class StorageUnavailable(AutoaugError):
    """A database or tracking server that stopped answering and did not come back in time."""


class StorageFull(AutoaugError):
    """A store whose disk is full or read-only: no retry can help."""


def retry_seconds() -> float:
    """How long a store may be unreachable before the search stops (``AUTOAUG_STORAGE_RETRY_SECONDS``)."""
    raw = os.environ.get(RETRY_SECONDS_ENV)
    if raw is None:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        from autoaug.errors import AutoaugInputError

        raise AutoaugInputError(f"{RETRY_SECONDS_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it (Optuna and MLflow wrap the driver's errors once or twice)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def classify(error: BaseException) -> tuple[Optional[str], str]:
    """``(TRANSIENT | RESOURCE | None, reason)`` for an error raised by a store call."""
    from sqlalchemy import exc as sqlalchemy_exc

    for link in _chain(error):
        text = str(link).lower()
        if isinstance(link, OSError) and link.errno in _OS_RESOURCE:
            return RESOURCE, _OS_RESOURCE[link.errno]
        if isinstance(link, (sqlite3.OperationalError, sqlalchemy_exc.OperationalError)):
            for needle, reason in _SQLITE_RESOURCE.items():
                if needle in text:
                    return RESOURCE, reason
            if any(needle in text for needle in _SQLITE_TRANSIENT):
                return TRANSIENT, LOCKED_REASON
            if "already exists" in text:
                return TRANSIENT, SCHEMA_RACE_REASON
        if isinstance(link, (sqlite3.IntegrityError, sqlalchemy_exc.IntegrityError)) and \
                any(table in text for table in _SCHEMA_VERSION_TABLES):
            return TRANSIENT, SCHEMA_RACE_REASON
        if isinstance(link, sqlalchemy_exc.OperationalError):  # a server database: connection trouble
            return TRANSIENT, "the database server did not answer"
        if isinstance(link, (sqlalchemy_exc.InterfaceError, sqlalchemy_exc.DisconnectionError)) or \
                getattr(link, "connection_invalidated", False):
            return TRANSIENT, "the connection to the database was lost"
        if type(link).__name__ == "MlflowException":
            if getattr(link, "error_code", "") == "TEMPORARILY_UNAVAILABLE":
                return TRANSIENT, "the MLflow store is temporarily unavailable"
            if "api request to" in text and any(needle in text for needle in _NETWORK_TRANSIENT):
                return TRANSIENT, "the MLflow tracking server did not answer"
    return None, ""


def first_line(error: BaseException) -> str:
    """The innermost useful line of an error, redacted (library errors span many lines)."""
    for link in reversed(list(_chain(error))):
        lines = [line.strip() for line in str(link).splitlines() if line.strip()]
        if lines:
            return redact_url(lines[0])[:300]
    return type(error).__name__


def call_with_retry(store: str, operation: Callable[..., Any], *args,
                    only_for: Optional[Collection[str]] = None, **kwargs) -> Any:
    """``operation(*args, **kwargs)``, retried with backoff while the store is transiently unavailable.

    ``store`` names the store in messages, e.g. ``"--storage postgresql+psycopg://u:***@db/optuna"``.
    ``only_for``: the transient reasons (`classify`) worth waiting for; other errors propagate unchanged.
    """
    deadline = time.monotonic() + retry_seconds()
    started, delay, tries = time.monotonic(), FIRST_DELAY_S, 0
    while True:
        tries += 1
        try:
            return operation(*args, **kwargs)
        except (StorageUnavailable, StorageFull):
            raise  # a nested call already waited and decided
        except Exception as error:
            kind, reason = classify(error)
            if kind == RESOURCE:
                raise StorageFull(
                    f"{store}: {reason} ({first_line(error)}); trials finished before are kept: free space or make "
                    "it writable, then run the same command again to resume") from None
            if kind != TRANSIENT or (only_for is not None and reason not in only_for):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"{store}: {reason} for {time.monotonic() - started:.0f} s ({tries} tries; last error: "
                    f"{first_line(error)}); trials finished before are kept there: run the same command again "
                    f"once it answers (wait longer with {RETRY_SECONDS_ENV})") from None
            wait = min(delay, left)  # the last wait ends at the deadline, for one last try there
            _log.warning("%s: %s (%s); retrying in %.1f s", store, reason, first_line(error), wait)
            time.sleep(wait)
            delay = min(delay * 2, LONGEST_DELAY_S)


# ---------------------------------------------------------------------- SQLite files shared by searches
def sqlite_path(url: str) -> Optional[Path]:
    """The file of a ``sqlite:///path`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def creation_lock(database: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``database`` while its schema is created or checked.

    Two searches started at once on one workdir would otherwise both find no tables and both create
    them (one fails with "table already exists"); the lock makes the second find the first's tables.
    """
    lock_path = database.with_name(f".{database.name}.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def use_wal(database: Path) -> None:
    """Switch a SQLite file to write-ahead logging (persistent, stored in the file).

    In WAL mode readers never block the writer nor the writer the readers: two searches on one
    workdir, a dashboard and `autoaug report` can all use the file at once; writers still take
    turns, waiting up to ``SQLITE_BUSY_TIMEOUT_S`` (and `call_with_retry` beyond that).
    """
    with contextlib.closing(sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
