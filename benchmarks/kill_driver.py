"""Kill `autoaug search` with SIGKILL at N moments, re-run the same command each time, and check that
nothing finished is lost (issue 13, "Killing the driver").

Each *episode* is one study in a fresh workdir: the same command is started, killed (SIGKILL to its
whole process group: the driver and its Ray processes) at a moment of one of four kinds, started again,
..., and finally run to the end. The kinds of moment, each found by watching the run from outside:

- ``ray-startup``: Ray's ``gcs_server`` has appeared in the driver's process group and no trial has
  started yet in this run; the kill comes after a random delay (cut short when the first trial starts).
- ``mid-trial``: a trial of this run is RUNNING in the Optuna study; then a random delay of up to 1.2
  trial lengths (so some kills come after a trial of this run finished), at a moment a trial runs.
- ``mlflow-write``: a trial of this run is RUNNING and MLflow's SQLite store is being written (its
  rollback journal ``mlflow.db-journal`` exists, or the database or its write-ahead log
  ``mlflow.db-wal`` just changed); the kill comes at the k-th such write seen (k random in 1..4).
- ``export``: every trial is finished in the study and the driver is writing the exported policy
  (its temporary file exists: the kill lands mid-write) or has just replaced it (the kill lands while
  the driver logs the parent run's last metrics and prints the result).

After each kill the study's finished trials are read (SQLite, read-only). After the final run:

1. the run exits 0 and its JSON says ``n_complete + n_pruned == --trials`` (the count is exact);
2. every trial finished before any kill is still there, unchanged (state, params, values, policy):
   never lost;
3. no finished trial ran twice: finished trials' policies are distinct, and MLflow holds exactly one
   FINISHED child run per finished trial;
4. no MLflow child run is left RUNNING; every KILLED child run belongs to a trial Optuna holds failed
   with "the search driver stopped"; the parent run is FINISHED;
5. the exported policy loads, and it is byte-identical to the export of an uninterrupted run of the
   same command (the reference) whenever the resumed study ran the same trials as the reference (same
   numbers, same params, none failed). A kill mid-trial makes that trial fail and a new trial (a new
   number, proposed by a sampler re-seeded with the number of trials so far) replace it, so the trial
   sequence — and the export — is then by design not the reference's; those episodes are counted
   "not comparable", not identical.

A kill is *survived* when check 2 holds for what it interrupted and its episode passes checks 1-5.
Prints per-kill lines, then ``kills survived: k/N`` and the export comparison.

Run (about 1 min per kill on 2 busy cores)::

    nice -n 10 python benchmarks/kill_driver.py --kills 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoaug.search.record_schema import (ERROR_ATTR, POLICY_ATTR, ROLE_SEARCH, ROLE_TAG, STATE_ATTR,
                                          TRIAL_TAG)
from autoaug.storage import EXPORTS_FOLDER, MLFLOW_FILE, OPTUNA_FILE

# The tests' task plug-ins (shapes-vqa at proxy size: the CLI has no task-size flag).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from store_harness import TASK_PLUGINS, TINY_TASK  # noqa: E402

# What the next driver records as the error of a trial its killed predecessor left running (record_schema
# imports nothing heavy: the watcher stays free of Ray and Lightning).
from autoaug.search.record_schema import STALE_REASON  # noqa: E402

PHASES = ("ray-startup", "mid-trial", "mlflow-write", "export")
POLL_S = 0.05


@dataclass
class Kill:
    episode: int
    phase: str
    seconds_after_start: float
    detail: str
    finished_before: dict = field(default_factory=dict)
    preserved: bool = False


def command(args, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "autoaug", "search", "--space", "vlm_default", "--task", TINY_TASK,
            "--name", args.name, "--trials", str(args.trials), "--max-epochs", str(args.max_epochs),
            "--scheduler", "none", "--sampler", "random", "--seed", str(args.seed), "--workdir", str(workdir),
            "--no-calibrate", "--no-confirm", "--no-baselines", "--json"]


def start(args, workdir: Path, plugin: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen(command(args, workdir), stdout=open(log.with_suffix(".out"), "w"),
                            stderr=open(log.with_suffix(".err"), "w"), env=env, start_new_session=True)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(entry), name))
    return members


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    deadline = time.monotonic() + 20
    while group_members(process.pid) and time.monotonic() < deadline:  # Ray's processes of the killed driver
        time.sleep(0.1)


def trials(workdir: Path, name: str) -> dict[int, dict]:
    """{number: {state, params, values, policy, error}} of the study, read-only ({} before it exists)."""
    database = workdir / OPTUNA_FILE
    if not database.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "select t.trial_id, t.number, t.state from trials t join studies s on s.study_id = t.study_id "
                "where s.study_name = ?", (name,)).fetchall()
            result = {}
            for trial_id, number, state in rows:
                params = dict(connection.execute("select param_name, param_value from trial_params where trial_id = ?",
                                                 (trial_id,)).fetchall())
                values = [row[0] for row in connection.execute(
                    "select value from trial_values where trial_id = ? order by objective", (trial_id,))]
                attrs = dict(connection.execute("select key, value_json from trial_user_attributes where trial_id = ?",
                                                (trial_id,)).fetchall())
                result[number] = {"state": state, "params": params, "values": values,
                                  "policy": attrs.get(POLICY_ATTR), STATE_ATTR: attrs.get(STATE_ATTR),
                                  "error": json.loads(attrs[ERROR_ATTR]) if ERROR_ATTR in attrs else None}
            return result
    except sqlite3.Error:  # tables not created yet, or a writer holds the lock for a moment
        return {}


def file_signature(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def finished(snapshot: dict) -> dict:
    return {number: trial for number, trial in snapshot.items() if trial["state"] in ("COMPLETE", "PRUNED")}


def wait_for_moment(process: subprocess.Popen, phase: str, workdir: Path, args, rng: random.Random,
                    estimates: dict, started: float) -> str | None:
    """Block until the moment of ``phase`` in this run and return what was seen (None: the run ended first)."""
    known = set(trials(workdir, args.name))
    export = workdir / EXPORTS_FOLDER / f"{args.name}-best.yaml"
    export_before = file_signature(export)
    temporaries_before = set(export.parent.glob(f".{export.name}.*.tmp"))  # a killed export's leftovers
    database = workdir / MLFLOW_FILE
    journal = database.with_name(f"{MLFLOW_FILE}-journal")
    # SQLite in WAL mode (storage/) writes to mlflow.db-wal; in rollback mode a journal exists mid-write
    store_files = (database, database.with_name(f"{MLFLOW_FILE}-wal"))
    delay_until = None
    writes_wanted, writes_seen, last_mtime = rng.randint(1, 4), 0, None
    while process.poll() is None:
        now = time.monotonic()
        if phase == "ray-startup":
            if delay_until is None and any("gcs_server" in name for _, name in group_members(process.pid)):
                delay_until = now + rng.uniform(0, estimates["ray_to_first_trial"])
            if delay_until is not None:
                started_trials = set(trials(workdir, args.name)) - known
                if now >= delay_until or started_trials:
                    return ("Ray up, no trial of this run started yet" if not started_trials
                            else "Ray up, the first trial of this run just asked")
        elif phase == "mid-trial":
            running = [n for n, t in trials(workdir, args.name).items() if t["state"] == "RUNNING" and n not in known]
            if delay_until is None and running:
                # up to 1.2 trial lengths: some kills come after a trial of this run has finished
                delay_until = now + rng.uniform(0, 1.2 * estimates["trial_seconds"])
            if delay_until is not None and now >= delay_until and running:  # a trial is running at the kill
                states = {n: t["state"] for n, t in trials(workdir, args.name).items() if n not in known}
                return f"trials of this run: {states}"
        elif phase == "mlflow-write":
            if delay_until is None:  # armed once a trial of this run is running
                if any(t["state"] == "RUNNING" and n not in known for n, t in trials(workdir, args.name).items()):
                    delay_until = now
                    last_mtime = [file_signature(path) for path in store_files]
            else:
                in_journal = journal.exists()
                mtime = [file_signature(path) for path in store_files]
                if in_journal or mtime != last_mtime:
                    writes_seen += 1
                    last_mtime = mtime
                    if writes_seen >= writes_wanted:
                        return (f"MLflow write #{writes_seen} of this run's trials "
                                f"({'journal open: mid-transaction' if in_journal else 'just committed'})")
                time.sleep(0.002)  # a write lasts milliseconds
                continue
        elif phase == "export":
            # armed once the study is complete; fires when the export is being written (its temporary
            # file exists) or has just been replaced (the driver is then logging the parent run's last
            # metrics and printing the result)
            if delay_until is None and len(finished(trials(workdir, args.name))) >= args.trials:
                delay_until = now
            if delay_until is not None:
                if set(export.parent.glob(f".{export.name}.*.tmp")) - temporaries_before:
                    return "export file being written (its temporary file exists)"
                if file_signature(export) != export_before:
                    return "export file just replaced; summary and parent-run records under way"
                time.sleep(0.002)
                continue
        time.sleep(POLL_S)
    return None


def run_to_end(args, workdir: Path, plugin: Path, log: Path) -> tuple[int, dict | None, float]:
    started = time.monotonic()
    process = start(args, workdir, plugin, log)
    try:
        process.wait(timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return -1, None, time.monotonic() - started
    lines = log.with_suffix(".out").read_text().strip().splitlines()
    result = json.loads(lines[-1]) if process.returncode == 0 and lines else None
    return process.returncode, result, time.monotonic() - started


def mlflow_runs(workdir: Path) -> list[dict]:
    with sqlite3.connect(f"file:{workdir / MLFLOW_FILE}?mode=ro", uri=True) as connection:
        rows = connection.execute("select run_uuid, status from runs").fetchall()
        tags = {}
        for run, key, value in connection.execute("select run_uuid, key, value from tags"):
            tags.setdefault(run, {})[key] = value
    return [{"id": run, "status": status, "tags": tags.get(run, {})} for run, status in rows]


def final_checks(args, workdir: Path, code: int, result: dict | None, kills: list[Kill],
                 reference: dict, stats: dict) -> tuple[list[str], str]:
    """Checks 1-5 of the module docstring: (problems, export verdict); ``stats`` gets the number of
    child runs closed KILLED over the episode."""
    problems = []
    if code != 0 or result is None:
        return [f"final run exited {code}"], "no export"
    if result["n_complete"] + result["n_pruned"] != args.trials:
        problems.append(f"count: n_complete + n_pruned = {result['n_complete'] + result['n_pruned']} != {args.trials}")
    study = trials(workdir, args.name)
    done = finished(study)
    if len(done) != args.trials:
        problems.append(f"count: {len(done)} finished trials in the study, expected {args.trials}")
    for kill in kills:
        kill.preserved = all(study.get(number) == trial for number, trial in kill.finished_before.items())
        if not kill.preserved:
            problems.append(f"kill at {kill.phase}: a trial finished before it changed or vanished")
    policies = [trial["policy"] for trial in done.values()]
    if len(set(policies)) != len(policies):
        problems.append("re-run: two finished trials hold the same policy")
    runs = mlflow_runs(workdir)
    parents = [run for run in runs if run["tags"].get(ROLE_TAG) == ROLE_SEARCH]
    children = [run for run in runs if run not in parents]
    if len(parents) != 1 or parents[0]["status"] != "FINISHED":
        problems.append(f"parent runs: {[(run['status']) for run in parents]}")
    if any(run["status"] == "RUNNING" for run in children):
        problems.append(f"{sum(run['status'] == 'RUNNING' for run in children)} child runs left RUNNING")
    finished_labels = sorted(run["tags"].get(TRIAL_TAG) for run in children if run["status"] == "FINISHED")
    if finished_labels != sorted(f"trial {number}" for number in done):
        problems.append(f"MLflow FINISHED child runs {finished_labels} != finished trials {sorted(done)}")
    stats["orphan_runs_killed"] = sum(run["status"] == "KILLED" for run in children)
    for run in children:
        if run["status"] == "KILLED":
            number = int(run["tags"].get(TRIAL_TAG, "trial -1").split()[-1])
            trial = study.get(number)
            if trial is None or trial["state"] != "FAIL" or trial["error"] != STALE_REASON:
                problems.append(f"KILLED run of trial {number} whose Optuna trial is {trial and trial['state']}")
    export = Path(result["best_policy_path"]) if result.get("best_policy_path") else None
    exports = workdir / EXPORTS_FOLDER
    leftovers = list(exports.glob(".*.tmp")) if exports.is_dir() else []
    if leftovers:
        problems.append(f"temporary export files left behind: {[path.name for path in leftovers]}")
    if export is None or not export.is_file():
        return problems + ["no exported policy"], "no export"
    try:
        from autoaug.policy import Policy

        Policy.load(export)
    except Exception as error:  # a truncated or corrupt file
        problems.append(f"exported policy does not load: {error}")
    same_trials = {n: (t["state"], t["params"]) for n, t in study.items()} == \
        {n: (t["state"], t["params"]) for n, t in reference["trials"].items()}
    if not same_trials:
        return problems, "not comparable"
    if export.read_bytes() != reference["export"]:
        problems.append("export differs from the reference although the same trials ran")
        return problems, "differs"
    return problems, "identical"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills to deliver in all (N)")
    parser.add_argument("--kills-per-episode", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the search's --seed")
    parser.add_argument("--rng-seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--name", default="killed")
    parser.add_argument("--folder", type=Path, default=None, help="where workdirs and logs go (default: a temp folder)")
    parser.add_argument("--run-timeout", type=float, default=900)
    args = parser.parse_args()
    rng = random.Random(args.rng_seed)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="kill_driver-"))
    folder.mkdir(parents=True, exist_ok=True)
    plugin = TASK_PLUGINS
    print(f"kill_driver: {args.kills} kills, --trials {args.trials} --max-epochs {args.max_epochs}, folder {folder}, "
          f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    print("command: " + " ".join(command(args, Path("WORKDIR"))), flush=True)

    # The reference: the same command, uninterrupted; its timings place the kill moments.
    workdir = folder / "reference"
    code, result, seconds = run_to_end(args, workdir, plugin, folder / "reference")
    if code != 0:
        print(f"the uninterrupted reference run failed (exit {code}); see {folder}/reference.err")
        return 1
    reference = {"trials": trials(workdir, args.name), "export": Path(result["best_policy_path"]).read_bytes()}
    search_seconds = result["stage_seconds"].get("search", seconds / 2)
    estimates = {"trial_seconds": max(1.0, search_seconds / args.trials * min(2, args.trials)),
                 "ray_to_first_trial": 8.0}
    print(f"reference: {seconds:.0f} s, search stage {search_seconds:.0f} s, best trial {result['best_trial']}", flush=True)

    kills: list[Kill] = []
    episode_results = []
    episode = 0
    while len(kills) < args.kills:
        episode += 1
        workdir = folder / f"episode{episode}"
        wanted = min(args.kills_per_episode, args.kills - len(kills))
        # the kinds of moment take turns over all kills (N/4 each), in a random order within the episode
        kinds = [PHASES[(len(kills) + episode + i) % len(PHASES)] for i in range(wanted)]
        # kills that need trials still to run first, the export last (a finished study has no trials to kill)
        order = {"mid-trial": 0, "mlflow-write": 0, "ray-startup": 1, "export": 2}
        plan = sorted(rng.sample(kinds, len(kinds)), key=order.get)
        episode_kills: list[Kill] = []
        for attempt, phase in enumerate(plan):
            log = folder / f"episode{episode}-run{attempt}"
            started = time.monotonic()
            process = start(args, workdir, plugin, log)
            seen = wait_for_moment(process, phase, workdir, args, rng, estimates, started)
            if seen is None:  # the run ended before the moment came: the study may already be complete
                print(f"  episode {episode}: {phase} moment never came (run exited {process.returncode}); kill not counted",
                      flush=True)
                continue
            kill_group(process)
            kill = Kill(episode, phase, time.monotonic() - started, seen, finished(trials(workdir, args.name)))
            episode_kills.append(kill)
            print(f"  episode {episode} kill {len(kills) + len(episode_kills)}: {phase} at {kill.seconds_after_start:.1f} s "
                  f"({seen}); {len(kill.finished_before)} trials finished so far", flush=True)
        code, result, seconds = run_to_end(args, workdir, plugin, folder / f"episode{episode}-final")
        stats: dict = {}
        problems, export = final_checks(args, workdir, code, result, episode_kills, reference, stats)
        survived = 0
        for kill in episode_kills:
            kill.preserved = kill.preserved and not problems
            survived += kill.preserved
        episode_results.append((episode, len(episode_kills), survived, export, problems, result))
        kills += episode_kills
        extra = "" if result is None else (f", {result['n_failed']} trials failed (killed mid-trial), "
                                           f"{stats.get('orphan_runs_killed', 0)} orphan MLflow runs closed KILLED")
        print(f"episode {episode}: final run exit {code} in {seconds:.0f} s{extra}; export {export}; "
              f"{'OK' if not problems else 'PROBLEMS: ' + '; '.join(problems)}", flush=True)

    by_phase = {phase: [kill for kill in kills if kill.phase == phase] for phase in PHASES}
    survived = sum(kill.preserved for kill in kills)
    comparable = [row for row in episode_results if row[3] in ("identical", "differs")]
    print("by moment: " + ", ".join(f"{phase} {sum(k.preserved for k in ks)}/{len(ks)}" for phase, ks in by_phase.items()))
    print(f"exported policy byte-identical to the uninterrupted run: {sum(row[3] == 'identical' for row in comparable)}"
          f"/{len(comparable)} comparable episodes ({len(episode_results) - len(comparable)} episodes not comparable: "
          "a trial killed mid-run was replaced by a new trial)")
    print(f"kills survived: {survived}/{len(kills)}")
    return 0 if survived == len(kills) else 1


if __name__ == "__main__":
    sys.exit(main())
