"""A worker node lost at a random moment of a search, N times: how many searches still end with exactly
--trials finished trials and nothing lost.

One Ray head (no CPU for trials) stays up; for each of N searches a worker node (one CPU, the
*victim*) joins and a search joins the cluster with ``--address``, so its first trials run on the
victim. Once a trial has started there, a second worker node (the *survivor*) starts joining — trials
must move to a node that joins mid-search — and after a delay drawn uniformly from [0, --kill-window] s
every process of the victim is killed (SIGKILL: a lost machine), during or after its trials. A search
counts as **clean** when it exits 0, its JSON says exactly --trials finished (complete + stopped
early) trials, no MLflow trial run is left RUNNING, every trial that had finished before the kill is
still finished afterwards (nothing lost), every trial that was running on the victim is recorded
failed (or retried, with its retry on its run), and every failed trial's reason names the lost node.

    .venv/bin/python benchmarks/cluster_faults.py --searches 10          # the issue's figure (N >= 10)
    .venv/bin/python benchmarks/cluster_faults.py --searches 2 --trials 3  # a quick check that it works

Prints one line per search and a closing JSON line. Uses tests/ray_harness.py (real `ray start`
processes under a private temp folder and free ports; every process it starts is killed at the end).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_harness import LocalCluster, trial_runs  # noqa: E402


def one_search(cluster: LocalCluster, index: int, args, rng: random.Random, folder: Path) -> dict:
    """One search with its worker node killed at a random moment; what it ended with."""
    from autoaug.search.cluster import NODE_LOST
    from autoaug.search.record_schema import NODE_ID_TAG
    from autoaug.search.record_schema import ERROR_TAG, RETRIES_TAG, STATE_TAG

    before = cluster.node_ids()
    victim = cluster.add_worker(num_cpus=1)
    (victim_node,) = cluster.node_ids() - before
    workdir, name = folder / f"search{index}", f"faults{index}"
    command = [sys.executable, "-m", "autoaug", "search", "--space", "vlm_default", "--name", name,
               "--task", "shapes-vqa", "--task-option", f"train_size={args.train_size}", "--task-option", "val_size=32",
               "--task-option", "test_size=32", "--trials", str(args.trials), "--max-epochs", str(args.max_epochs),
               "--address", cluster.address, "--workdir", str(workdir), "--seed", str(index), "--json",
               "--no-calibrate", "--no-confirm", "--no-baselines", "--no-screen", "--scheduler", "none"]
    started = time.time()
    search = subprocess.Popen(command, env=cluster.env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    delay = rng.uniform(0, args.kill_window)
    survivor = None
    while search.poll() is None and time.time() - started < args.timeout:
        if any(run.data.tags.get(NODE_ID_TAG) == victim_node for run in trial_runs(workdir, name)):
            survivor = cluster.add_worker(num_cpus=1, wait=False)
            time.sleep(delay)
            break
        time.sleep(0.3)
    at_kill = trial_runs(workdir, name)
    finished_before = {run.info.run_id for run in at_kill if run.info.status == "FINISHED"}
    # the trials running on the victim when it dies (their runs name it: `TrialPlacement`)
    hit = {run.info.run_id for run in at_kill if run.info.status == "RUNNING" and run.data.tags.get(NODE_ID_TAG) == victim_node}
    killed_mid_search = search.poll() is None
    victim.kill()
    killed_at = time.time() - started
    try:
        out, err = search.communicate(timeout=max(1, args.timeout - (time.time() - started)))
    except subprocess.TimeoutExpired:
        search.kill()
        out, err = search.communicate()
    if survivor is not None:  # the next search starts again from the head alone
        survivor.kill()
        cluster.nodes.remove(survivor)
    cluster.nodes.remove(victim)
    runs = trial_runs(workdir, name)
    try:
        summary = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {}
    finished = summary.get("n_complete", 0) + summary.get("n_pruned", 0)
    failed = [run for run in runs if run.data.tags.get(STATE_TAG) == "failed"]
    record = {
        "search": index, "exit": search.returncode, "kill_delay_s": round(delay, 1), "killed_at_s": round(killed_at, 1),
        "killed_mid_search": killed_mid_search, "finished_trials": finished, "failed_trials": len(failed),
        "running_runs_left": sum(run.info.status == "RUNNING" for run in runs),
        "trials_hit": len(hit),  # running on the victim when it was killed: each must end failed (or retried)
        "hit_trials_ended": sorted(f"{run.data.tags.get(STATE_TAG)} on {run.data.tags.get(NODE_ID_TAG, '')[:8]}"
                                   for run in runs if run.info.run_id in hit),
        "finished_before_kill_lost": len(finished_before - {run.info.run_id for run in runs if run.info.status == "FINISHED"}),
        "failed_reasons_name_node": all(NODE_LOST in (run.data.tags.get(ERROR_TAG) or "") and victim_node[:12]
                                        in run.data.tags.get(ERROR_TAG, "") for run in failed),
        "seconds": round(time.time() - started, 1),
    }
    hit_ok = all(run.data.tags.get(STATE_TAG) == "failed" or (run.data.tags.get(NODE_ID_TAG) != victim_node
                                                                and int(run.data.tags.get(RETRIES_TAG, 0)) > 0)
                 for run in runs if run.info.run_id in hit)
    record["hit_trials_recorded"] = hit_ok
    record["clean"] = (record["exit"] == 0 and finished == args.trials and record["running_runs_left"] == 0 and hit_ok
                       and record["finished_before_kill_lost"] == 0 and record["failed_reasons_name_node"])
    if not record["clean"]:
        record["stderr_tail"] = err[-800:]
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=10, help="N searches, each with its worker node killed once")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=256, help="shapes-vqa training examples (trial length)")
    parser.add_argument("--kill-window", type=float, default=8.0,
                        help="the kill comes uniformly in [0, this] s after a trial first starts on the worker node")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one search may take")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    cluster = LocalCluster()
    records = []
    try:
        cluster.start_head(num_cpus=0)
        with tempfile.TemporaryDirectory(prefix="cluster_faults") as folder:
            for index in range(args.searches):
                record = one_search(cluster, index, args, rng, Path(folder))
                records.append(record)
                print(json.dumps(record), flush=True)
    finally:
        cluster.stop()
    clean = sum(record["clean"] for record in records)
    print(json.dumps({"searches": len(records), "clean": clean, "killed_mid_search": sum(r["killed_mid_search"] for r in records),
                      "trials": args.trials, "summary": f"{clean}/{len(records)} searches ended with exactly "
                                                        f"{args.trials} finished trials and nothing lost"}))
    return 0 if clean == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
