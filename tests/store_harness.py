"""Real stores and real `autoaug search` processes for the tests and benchmarks of a search's storage
(tests/test_reliability_resources.py, benchmarks/store_outages.py): the command line of a tiny search,
the environment that makes its task plug-in importable, the count of complete trials read straight
from a store, a private PostgreSQL server, and a file system filled to the last byte.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

TASK_PLUGINS = Path(__file__).resolve().parent / "plugins"
TINY_TASK = "autoaug_test_tasks:make_task"  # shapes-vqa at proxy size (48 / 32 / 32 examples)
HELD_TASK = "autoaug_test_tasks:make_held_task"  # the same, training held while AUTOAUG_TEST_HOLD's file exists
COMPLETE_TRIALS_SQL = ("SELECT COUNT(*) FROM trials JOIN studies USING (study_id) "
                       "WHERE study_name = {} AND state = 'COMPLETE'")  # Optuna's RDB schema


def search_args(name: str, workdir: Path, trials: int, *extra: str, task: str = TINY_TASK) -> list[str]:
    """``autoaug`` arguments of a tiny search: one-epoch trials, no stages around them, JSON result."""
    return ["search", "--space", "vlm_default", "--task", task, "--name", name, "--trials", str(trials),
            "--max-epochs", "1", "--scheduler", "none", "--no-calibrate", "--no-confirm", "--no-baselines",
            "--workdir", str(workdir), "--json", *extra]


def plugin_env(base: Optional[dict] = None) -> dict:
    """The environment of a CLI subprocess: the task plug-ins importable, one torch thread per process."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(TASK_PLUGINS)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


def sqlite_complete_trials(database: Path, study: str) -> int:
    """Complete trials of ``study`` read straight from an Optuna SQLite file (not through our code);
    0 while the file or its tables do not exist yet."""
    return sum(state == "COMPLETE" for state in sqlite_trial_states(database, study).values())


def sqlite_trial_states(database: Path, study: str) -> dict[int, str]:
    """``{trial number: Optuna state name}`` of ``study``, read through a read-only connection while a
    driver may still be creating the file (plain Optuna would write the schema at the same moment);
    empty while the file, its tables or the study do not exist yet."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            return dict(connection.execute(
                "SELECT number, state FROM trials JOIN studies USING (study_id) WHERE study_name = ?", (study,)))
    except sqlite3.Error:
        return {}


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostgres:
    """A real PostgreSQL server of the caller only (initdb in a temporary folder, a free port on
    127.0.0.1, password authentication), so stopping it never disturbs a shared server."""

    def __init__(self, bindir: Path, folder: Path, user: Optional[str], password: str) -> None:
        self.bindir, self.folder, self.user = bindir, folder, user
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://autoaug:{password}@127.0.0.1:{self.port}/postgres"
        (folder / "pw").write_text(password)

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.user, capture_output=True, text=True,
                              cwd=self.folder, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]}: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "autoaug", f"--pwfile={self.folder / 'pw'}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def complete_trials(self, study: str) -> int:
        import psycopg

        with psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5) as connection:
            return connection.execute(COMPLETE_TRIALS_SQL.format("%s"), (study,)).fetchone()[0]

    def close(self) -> None:
        """Stop at once (whatever state the server is in) and delete its folder."""
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], user=self.user,
                       capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_private_postgres(password: str, prefix: str = "autoaug-pg-") -> Optional[PrivatePostgres]:
    """A started `PrivatePostgres`, or None where PostgreSQL's server programs are not installed (or,
    as root, there is no ``postgres`` account to run them: the server refuses to run as root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found or not found[-1]:
        return None
    user = None
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        user = "postgres"
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = PrivatePostgres(Path(found[-1]).parent, folder, user, password)
    try:
        server.init()
        server.start()
    except BaseException:
        server.close()
        raise
    return server
