"""What a search survives when its stores misbehave: figures for the README's "Reliability" section.

Real processes and real servers only; each scenario runs `autoaug search` (tiny shapes-vqa proxy,
``--no-calibrate --no-confirm --no-baselines``, one-epoch trials) as a subprocess and prints one line
of figures:

- **at once**: K searches (different study names) started at the same moment on one fresh workdir
  (Optuna and MLflow in the workdir's SQLite files). Figure: searches that exited 0 with exactly
  their trials, out of K.
- **PostgreSQL outage**: a search whose study lives on a private PostgreSQL server (initdb in a
  temporary folder; a shared server is never touched); the server is stopped right after the first
  trial finished and started again after L seconds, for each L of ``--outages``, with
  ``AUTOAUG_STORAGE_RETRY_SECONDS`` = ``--retry-seconds``. Shorter outages must be waited out (exit 0,
  exact count); longer ones must stop with exit 1 and one line, keep the finished trials, and the same
  command run again must finish with the exact count.
- **full disk** (root: a 64 MB tmpfs workdir): the disk is filled right after the first trial
  finished. The search must stop with exit 1 and one line, keep the finished trials, and (space
  freed) the same command run again must finish with the exact count.

    .venv/bin/python benchmarks/store_outages.py                         # everything, about 6 min on 2 cores
    .venv/bin/python benchmarks/store_outages.py --only postgres --outages 3,40 --retry-seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The tests' harness of real stores and search processes (the same private PostgreSQL server, task
# plug-in and search command line as tests/test_reliability_resources.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from store_harness import PrivatePostgres, fill, plugin_env, sqlite_complete_trials, start_private_postgres  # noqa: E402
from store_harness import search_args as tiny_search_args  # noqa: E402

PASSWORD = "bench-secret-123"


def search_args(name: str, workdir: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autoaug", *tiny_search_args(name, workdir, trials, *extra)]


class Run:
    """One `autoaug search` subprocess with its output in files."""

    def __init__(self, args: list[str], env: dict, logs: Path, label: str) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / f"{label}.out", logs / f"{label}.err"
        with open(self.out, "w") as stdout, open(self.err, "w") as stderr:
            self.process = subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr, start_new_session=True)

    def wait(self, timeout: float = 900) -> dict:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            code = self.process.wait()
        lines = [line for line in self.out.read_text().splitlines() if line.strip()]
        err = [line for line in self.err.read_text().splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            result = None
        return {"code": code, "result": result, "last_line": err[-1] if err else "",
                "traceback": "Traceback" in self.err.read_text(), "retries_logged": sum("retrying in" in line for line in err),
                "password_printed": PASSWORD in self.out.read_text() + self.err.read_text()}


def wait_for(condition, run: Run, timeout: float = 600) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.process.poll() is None:
        with contextlib.suppress(Exception):
            if condition():
                return True
        time.sleep(0.3)
    return False


def exact(outcome: dict, trials: int) -> bool:
    """Exit 0 with exactly ``trials`` complete trials, and no failure other than the trials a stopped
    run left RUNNING (marked failed and replaced on resume, ``n_stale_marked_failed``)."""
    result = outcome["result"] or {}
    return outcome["code"] == 0 and result.get("n_complete") == trials and \
        result.get("n_failed") == result.get("n_stale_marked_failed", 0)


# ---------------------------------------------------------------------- scenarios
def at_once(args, env: dict, base: Path) -> dict:
    workdir, logs = base / "at-once", base / "logs-at-once"
    runs = {f"s{i}": Run(search_args(f"s{i}", workdir, args.trials), env, logs, f"s{i}") for i in range(args.concurrent)}
    outcomes = {name: run.wait() for name, run in runs.items()}
    ok = sum(exact(outcome, args.trials) for outcome in outcomes.values())
    failures = {name: outcome["last_line"] for name, outcome in outcomes.items() if not exact(outcome, args.trials)}
    return {"scenario": "at once", "searches": args.concurrent, "completed_exactly": ok, "failures": failures}


def postgres_outage(args, env: dict, base: Path, server: PrivatePostgres, outage_s: float) -> dict:
    name = f"outage{int(outage_s)}"
    workdir, logs = base / f"pg-{name}", base / f"logs-{name}"
    env = {**env, "AUTOAUG_STORAGE_RETRY_SECONDS": str(args.retry_seconds)}
    command = search_args(name, workdir, args.trials, "--storage", server.url)
    run = Run(command, env, logs, "first")
    if not wait_for(lambda: server.complete_trials(name) >= 1, run):
        return {"scenario": f"postgres down {outage_s:g} s", "error": "the search ended before its first trial finished",
                **run.wait()}
    server.stop()
    time.sleep(outage_s)
    server.start()
    first = run.wait()
    kept = server.complete_trials(name)
    figure = {"scenario": f"postgres down {outage_s:g} s (retry budget {args.retry_seconds:g} s)", "exit": first["code"],
              "retries_logged": first["retries_logged"], "traceback": first["traceback"],
              "password_printed": first["password_printed"], "complete_after_first_run": kept}
    if first["code"] != 0:
        figure["stop_line"] = first["last_line"]
        again = Run(command, env, logs, "again").wait()
        figure["resumed_exactly"] = exact(again, args.trials)
        figure["complete_after_rerun"] = server.complete_trials(name)
        figure["stale_marked_failed_on_resume"] = (again["result"] or {}).get("n_stale_marked_failed")
    else:
        figure["completed_exactly"] = exact(first, args.trials)
    return figure


def full_disk(args, env: dict, base: Path) -> dict:
    if os.geteuid() != 0:
        return {"scenario": "full disk", "skipped": "mounting a tmpfs needs root"}
    workdir, logs = base / "full", base / "logs-full"
    workdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(workdir)], check=True)
    try:
        # one trial at a time (one slot takes every core): the disk fills while the second trial runs, so
        # the search meets a full disk (with two slots the other trials could end before the filler did)
        command = search_args("full", workdir, args.trials, "--cpus-per-trial", str(os.cpu_count() or 1))
        run = Run(command, env, logs, "first")
        if not wait_for(lambda: sqlite_complete_trials(workdir / "optuna.db", "full") >= 1, run):
            return {"scenario": "full disk", "error": "the search ended before its first trial finished", **run.wait()}
        filler = fill(workdir)
        first = run.wait()
        kept = sqlite_complete_trials(workdir / "optuna.db", "full")
        filler.unlink()
        again = Run(command, env, logs, "again").wait()
        return {"scenario": "full disk after the first trial", "exit": first["code"], "stop_line": first["last_line"],
                "traceback": first["traceback"], "complete_after_first_run": kept,
                "resumed_exactly": exact(again, args.trials), "complete_after_rerun": sqlite_complete_trials(workdir / "optuna.db", "full"),
                "stale_marked_failed_on_resume": (again["result"] or {}).get("n_stale_marked_failed")}
    finally:
        subprocess.run(["umount", "-l", str(workdir)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("at-once", "postgres", "full"), help="run one scenario")
    parser.add_argument("--concurrent", type=int, default=3, help="searches started at once on one workdir")
    parser.add_argument("--trials", type=int, default=3, help="trials per search")
    parser.add_argument("--outages", default="5,45", help="PostgreSQL outage lengths in seconds, comma-separated")
    parser.add_argument("--retry-seconds", type=float, default=20.0, help="AUTOAUG_STORAGE_RETRY_SECONDS for the outages")
    parser.add_argument("--keep", action="store_true", help="keep the workdirs and logs (their folder is printed)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="autoaug-store-outages-"))
    env = plugin_env()
    started = time.time()
    print(f"# store outages, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    figures = []
    if args.only in (None, "at-once"):
        figures.append(at_once(args, env, base))
        print(json.dumps(figures[-1]), flush=True)
    if args.only in (None, "postgres"):
        server = start_private_postgres(PASSWORD, prefix="autoaug-bench-pg-")
        if server is None:
            raise SystemExit("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        try:
            for outage in (float(value) for value in args.outages.split(",")):
                figures.append(postgres_outage(args, env, base, server, outage))
                print(json.dumps(figures[-1]), flush=True)
        finally:
            server.close()
    if args.only in (None, "full"):
        figures.append(full_disk(args, env, base))
        print(json.dumps(figures[-1]), flush=True)
    print(f"# {len(figures)} scenarios in {time.time() - started:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    if args.keep:
        print(f"# workdirs and logs kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
