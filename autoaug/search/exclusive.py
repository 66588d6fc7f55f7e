"""One driver per study: a second `autoaug search` on a study that a live driver is running is refused.

Two drivers on one study would corrupt each other's records: on start a driver marks the trials it
finds RUNNING as left behind by a dead driver (`study.fail_stale_trials`) and closes their
MLflow runs as killed — a live colleague's trials included — and both would fill the same trial
budget. So the driver holds a lock for the whole search, taken before it reads or changes anything:

- SQLite (the laptop default): an exclusive ``flock`` on a file beside the database. The kernel
  releases it when the holding process dies, however it dies (SIGKILL included), so a killed driver
  never blocks the resume. It covers every process on the machine that opens that database.
- PostgreSQL (``--storage postgresql...``): a session advisory lock on the server, released when the
  holding connection closes (the server notices a killed client), so drivers on different machines
  sharing one study are covered.
- Other servers: no lock is taken (`LOCKS` has no entry); the README says a team uses PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from typing import Callable, Iterator, Optional

from autoaug.errors import AutoaugInputError, ParameterError


class StudyBusy(AutoaugInputError):
    """Another live driver holds the study (exit 2: wait for it, or choose another --name)."""


def _holder_note(holder: dict) -> str:
    if not holder:
        return "another autoaug search"
    started = time.strftime("%H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"autoaug search pid {holder.get('pid')} on {holder.get('host')} (started {started})"


def busy_message(name: str, holder: dict) -> str:
    return (f"--name {name}: this study is being searched right now by {_holder_note(holder)}; "
            "wait for it to finish (then the same command resumes it) or choose another --name (nothing was changed)")


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _key(name: str) -> str:
    return hashlib.sha256(f"autoaug-study:{name}".encode()).hexdigest()


@contextlib.contextmanager
def _sqlite_lock(url: str, name: str) -> Iterator[None]:
    """``flock`` on ``<database folder>/.autoaug-locks/<hash of the study name>.lock``; the file holds
    who has it (pid, host, start) for the refusal message."""
    import fcntl

    from autoaug.storage import sqlite_path

    database = sqlite_path(url)
    if database is None:
        yield  # an in-memory database cannot be shared
        return
    folder = database.parent / ".autoaug-locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"{_key(name)[:24]}.lock", "a+")
    except OSError as error:
        raise ParameterError("storage", f"{url}: cannot create the study's lock file in {folder} "
                                f"({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise StudyBusy(busy_message(name, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({**_me(), "study": name}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


@contextlib.contextmanager
def _postgresql_lock(url: str, name: str) -> Iterator[None]:
    """``pg_try_advisory_lock`` on a connection held for the search; the holder's pid and host are
    in its ``application_name`` so a refused driver can name it."""
    import sqlalchemy

    key = int(_key(name)[:16], 16) - (1 << 63)  # signed 64-bit, as PostgreSQL's bigint
    me = _me()
    label = f"autoaug {me['pid']}@{me['host']} {int(me['started'])}"[:63]
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"application_name": label})
    connection = engine.connect()
    try:
        if not connection.execute(sqlalchemy.text("select pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise StudyBusy(busy_message(name, _postgresql_holder(connection, key)))
        connection.commit()
        yield
    finally:
        connection.close()  # ends the session: the server releases the lock
        engine.dispose()


def _postgresql_holder(connection, key: int) -> dict:
    import sqlalchemy

    try:
        row = connection.execute(sqlalchemy.text(
            "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid "
            "where l.locktype = 'advisory' and l.granted and ((l.classid::bigint << 32) | l.objid::bigint) = :key"),
            {"key": key}).scalar()
    except Exception:  # the message is still clear without the holder's name
        return {}
    parts = str(row or "").split()
    if len(parts) == 3 and parts[0] == "autoaug" and "@" in parts[1]:
        pid, host = parts[1].split("@", 1)
        return {"pid": pid, "host": host, "started": float(parts[2])}
    return {}


LOCKS: dict[str, Callable[[str, str], contextlib.AbstractContextManager]] = {
    "sqlite": _sqlite_lock,
    "postgresql": _postgresql_lock,
}


def study_lock(storage_url: str, name: str) -> contextlib.AbstractContextManager:
    """Hold study ``name`` of ``storage_url`` for this driver, or raise `StudyBusy` at once."""
    dialect = storage_url.split(":", 1)[0].split("+", 1)[0]
    lock: Optional[Callable] = LOCKS.get(dialect)
    return lock(storage_url, name) if lock is not None else contextlib.nullcontext()
