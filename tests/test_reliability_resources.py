"""Reliability of a search's stores, and the security defaults (issue 13: resources, security, two
searches at once on one workdir).

Everything is real: two `autoaug search` processes share one workdir; the read-only and the full
workdir are a real tmpfs mount remounted read-only and filled up (root; a non-root run uses chmod for
the read-only case and skips the full one); the PostgreSQL outage stops and restarts a private
PostgreSQL server started for this module (so a shared server is never touched).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from autoaug.storage import redact_url

PLUGIN_MODULE = "autoaug_resources_test_plugin"
PLUGIN = '''
"""shapes-vqa at proxy size for tests/test_reliability_resources.py (the CLI has no task-size flag)."""
from autoaug.trainers.shapes_vqa import make_shapes_vqa


def make_task(seed):
    return make_shapes_vqa(seed, train_size=48, val_size=32, test_size=32)
'''
SECRET = "s3cret-P4ss"


# ====================================================================== helpers
@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict:
    """The environment of a CLI subprocess: the tiny task importable, one torch thread per process."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{PLUGIN_MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    return env


def search_args(name: str, workdir: Path, trials: int, *extra: str) -> list[str]:
    return ["search", "--space", "vlm_default", "--task", f"{PLUGIN_MODULE}:make_task", "--name", name,
            "--trials", str(trials), "--max-epochs", "1", "--scheduler", "none", "--no-calibrate", "--no-confirm",
            "--no-baselines", "--workdir", str(workdir), "--json", *extra]


def start_cli(args: list[str], env: dict, log_dir: Path, label: str) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{label}.out", "w") as stdout, open(log_dir / f"{label}.err", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "autoaug", *args], env=env, stdout=stdout, stderr=stderr,
                                start_new_session=True, cwd=log_dir)


def finish(process: subprocess.Popen, log_dir: Path, label: str, timeout: float = 240) -> tuple[int, str, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        code = None
    return code, (log_dir / f"{label}.out").read_text(), (log_dir / f"{label}.err").read_text()


def run_cli(args: list[str], env: dict, log_dir: Path, label: str, timeout: float = 240) -> tuple[int, str, str]:
    return finish(start_cli(args, env, log_dir, label), log_dir, label, timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def error_lines(stderr: str) -> list[str]:
    """stderr's lines that are not progress or library warnings about retries."""
    return [line for line in stderr.splitlines() if line.strip()]


def complete_trials(optuna_db: Path, study: str) -> int:
    """Complete trials of ``study`` read straight from the SQLite file (not through our code)."""
    with contextlib.closing(sqlite3.connect(f"file:{optuna_db}?mode=ro", uri=True)) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ? AND state = 'COMPLETE'",
            (study,)).fetchone()[0]


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A real small tmpfs at ``folder`` (root only); skips where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler.bin"
    block = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(block)
        except OSError as error:
            assert error.errno == errno.ENOSPC
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


# ====================================================================== credentials
@pytest.mark.parametrize("given, shown", [
    ("postgresql+psycopg://autoaug:s3cret@db.example:5432/optuna", "postgresql+psycopg://autoaug:***@db.example:5432/optuna"),
    ("https://alice:p%40ss@mlflow.example/", "https://alice:***@mlflow.example/"),
    ("postgresql://u:pa/ss@word@db/optuna", "postgresql://u:***@db/optuna"),  # raw '/' and '@' in a hand-written password
    ("mysql://root:@localhost/db", "mysql://root:***@localhost/db"),
    ("postgresql://db/optuna?user=u&password=s3cret&sslmode=require", "postgresql://db/optuna?user=u&password=***&sslmode=require"),
    ("error: cannot reach 'postgresql://u:s3cret@db/x' (retry) and http://a:b@c:5000/api",
     "error: cannot reach 'postgresql://u:***@db/x' (retry) and http://a:***@c:5000/api"),
    ("sqlite:////tmp/work/optuna.db", "sqlite:////tmp/work/optuna.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
    ("postgresql://autoaug@db/optuna", "postgresql://autoaug@db/optuna"),
])
def test_redact_url_hides_the_password_and_keeps_the_rest(given, shown):
    assert redact_url(given) == shown
    assert redact_url(shown) == shown  # idempotent


def test_log_records_of_any_library_never_carry_a_password():
    from autoaug.storage.redaction import protect_logs

    protect_logs()
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mlflow.store.db.utils.test")  # as deep as MLflow's own loggers
    logger.addHandler(handler)
    try:
        url = f"postgresql+psycopg://autoaug:{SECRET}@db:5432/optuna"
        logger.warning("engine for %s could not be created", url)
        try:
            raise ConnectionError(f"API request to https://bob:{SECRET}@mlflow:5000/api failed")
        except ConnectionError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and all(SECRET not in text for text in records), records
    assert "postgresql+psycopg://autoaug:***@db:5432/optuna" in records[0]
    assert "https://bob:***@mlflow:5000/api" in records[1]


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_mlflow_server_that_does_not_answer_is_retried_then_one_clear_line(monkeypatch, caplog):
    from autoaug.storage import StorageUnavailable, tracking_client

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries (7 by default) on top of ours
    monkeypatch.setenv("AUTOAUG_STORAGE_RETRY_SECONDS", "1.5")
    port = _dead_port()
    client = tracking_client(f"http://autoaug:{SECRET}@127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        client.search_runs(["0"])
    message = str(caught.value)
    assert time.monotonic() - started >= 0.6  # it waited (backoff 0.2, 0.4, ... s) before giving up
    retries = [record.getMessage() for record in caplog.records if "retrying in" in record.getMessage()]
    assert len(retries) >= 2 and all(SECRET not in line for line in retries), retries
    assert message.startswith(f"--tracking-uri http://autoaug:***@127.0.0.1:{port}: the MLflow tracking server did not answer")
    assert "tries" in message and "run the same command again" in message
    assert SECRET not in message and "\n" not in message
    assert os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT") == "true"  # no "View run <URL>" lines on stdout


# ====================================================================== YAML and plug-ins
@pytest.mark.parametrize("kind", ["policy", "space"])
def test_yaml_with_python_tags_is_refused_with_one_line(kind, tmp_path, capsys):
    """`!!python/object` would run code with an unsafe loader: every YAML is read with safe_load."""
    from autoaug.cli import main

    sentinel = tmp_path / "code-ran"
    evil = tmp_path / f"evil-{kind}.yaml"
    evil.write_text(f'!!python/object/apply:os.system ["touch {sentinel}"]\n')
    workdir = tmp_path / "runs"
    argv = {"policy": ["show", str(evil)],
            "space": ["search", "--space", str(evil), "--task", "shapes-vqa", "--name", "x", "--workdir", str(workdir)]}[kind]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert caught.value.code == 2 and len(lines) == 1, err
    assert str(evil) in lines[0] and "python/object/apply:os.system" in lines[0], lines[0]
    assert "Traceback" not in err
    assert not sentinel.exists() and not workdir.exists()


def test_every_yaml_read_in_the_package_uses_a_safe_loader():
    """No unsafe loader anywhere in the shipped code (the test above proves the two user-facing ones)."""
    import re

    root = Path(__file__).resolve().parents[1]
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load|full_load_all)\(|Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)")
    offenders = [f"{path.relative_to(root)}:{number}" for folder in ("autoaug", "trainers", "dashboards", "storage", "benchmarks")
                 for path in (root / folder).rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if unsafe.search(line) and "SafeLoader" not in line]
    assert offenders == []
