"""Study the built-in task's regime: does `none` overfit, does the image matter, does any policy help?

One *setting* is a task variant (``--task-option``), a model variant (``--model-option``), a learning
rate and a length. For it, every policy of ``--policies`` trains with the same seeds (paired: a seed
fixes the model initialisation and the data order, only the policy differs), in-process through
`run_training` (the code path of ``autoaug train``), and the script prints one markdown table:

- per policy: mean ± SD over seeds of clean test, clean val and train accuracy, the train − val gap,
  and seconds per run;
- per policy other than ``none``: the paired difference to ``none`` in clean test accuracy (mean of the
  per-seed differences ± its standard error, SD / sqrt(n)) and how many SEs that is;
- ``question-only``: `none` trained and evaluated with every image replaced by one grey image
  (`PreparedTask.without_images`): how far the model gets without looking.

A policy is a preset name, ``op:magnitude`` or ``op:magnitude:p`` (a one-entry policy, clean
fraction 0), or a path to a policy YAML. Runs go to ``--workers`` processes (default 2), each with
one torch thread, so timings are one-core timings.

    .venv/bin/python benchmarks/task_study.py --seeds 5 --epochs 30 \
        --policies none,question-only,pixel_horizontal_flip:1.0:0.5,moderate \
        --task-option train_size=600 --model-option patch_size=8 --model-option width=128
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

QUESTION_ONLY = "question-only"


# The option parsing and candidate grammar are proxy_task.py's (the benchmarks folder is not a package).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_task import _quiet, parse_options as _options, policy_of  # noqa: E402


_PREPARED: dict[str, Any] = {}


def run_one(job: dict) -> dict:
    """Train one (policy, seed) of a setting in this process (one torch thread)."""
    import torch

    _quiet()
    torch.set_num_threads(1)
    from autoaug.trainers.train import prepare_task, run_training

    key = json.dumps(job["task_options"], sort_keys=True) + str(job["data_seed"])
    if key not in _PREPARED:
        _PREPARED[key] = prepare_task("shapes-vqa", None, job["data_seed"], job["task_options"])
    prepared = _PREPARED[key]
    spec = job["policy"]
    if spec == QUESTION_ONLY:
        prepared, spec = prepared.without_images(), "none"
    cpu_started = time.process_time()
    result = run_training(prepared=prepared, policy=policy_of(spec), seed=job["seed"],
                          max_epochs=job["epochs"], learning_rate=job["learning_rate"],
                          batch_size=job["batch_size"], model_options=job["model_options"],
                          accelerator="cpu", data_seed=job["data_seed"])
    keep = ("test_accuracy", "val_accuracy", "train_accuracy", "robust_accuracy", "seconds",
            "seconds_per_epoch")
    return {"policy": job["policy"], "seed": job["seed"], "cpu_seconds": time.process_time() - cpu_started,
            **{k: result[k] for k in keep}}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(runs: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of the per-seed differences ``runs[s] - baseline[s]`` (shared seeds)."""
    seeds = sorted(runs.keys() & baseline.keys())
    differences = [runs[s] - baseline[s] for s in seeds]
    mean, sd = _mean_sd(differences)
    return mean, sd / math.sqrt(len(differences)) if differences else math.nan, len(differences)


def table(rows: list[dict], policies: list[str]) -> str:
    by_policy: dict[str, list[dict]] = {p: [r for r in rows if r["policy"] == p] for p in policies}
    baseline = {r["seed"]: r["test_accuracy"] for r in by_policy.get("none", [])}
    lines = ["| policy | test | val | train | train-val | robust | CPU s/run | Δtest vs none (paired SE) | SEs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for policy, runs in by_policy.items():
        if not runs:
            continue
        cells = [policy]
        for key in ("test_accuracy", "val_accuracy", "train_accuracy"):
            mean, sd = _mean_sd([r[key] for r in runs])
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        gap = statistics.fmean(r["train_accuracy"] - r["val_accuracy"] for r in runs)
        cells.append(f"{gap:+.3f}")
        cells.append(f"{statistics.fmean(r['robust_accuracy'] for r in runs):.3f}")
        cells.append(f"{statistics.fmean(r['cpu_seconds'] for r in runs):.1f}")
        if policy != "none" and baseline:
            mean, se, n = paired_difference({r["seed"]: r["test_accuracy"] for r in runs}, baseline)
            cells += [f"{mean:+.3f} ({se:.3f}, n={n})", f"{mean / se:+.1f}" if se > 0 else "-"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="none,question-only")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the training default")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jsonl", help="append every run's result to this file")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from autoaug.trainers import train as training

    defaults = {name: parameter.default for name, parameter in
                __import__("inspect").signature(training.run_training).parameters.items()}
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for spec in policies:
        if spec != QUESTION_ONLY:
            policy_of(spec)  # fail fast on a bad name
    setting = {
        "task_options": _options(args.task_option, "--task-option"),
        "model_options": _options(args.model_option, "--model-option"),
        "epochs": args.epochs or training.DEFAULT_MAX_EPOCHS,
        "learning_rate": args.learning_rate or defaults["learning_rate"],
        "batch_size": args.batch_size or defaults["batch_size"],
        "data_seed": args.data_seed,
    }
    jobs = [{**setting, "policy": policy, "seed": seed}
            for seed in range(args.first_seed, args.first_seed + args.seeds) for policy in policies]
    started = time.time()
    print(f"# task study {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}, "
          f"{args.workers} workers x 1 thread", flush=True)
    print(f"setting: {json.dumps(setting)}", flush=True)
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(f"  {row['policy']:<40} seed {row['seed']}: test {row['test_accuracy']:.3f} "
                  f"train {row['train_accuracy']:.3f} val {row['val_accuracy']:.3f} "
                  f"({row['seconds']:.1f} s wall, {row['cpu_seconds']:.1f} s CPU)", file=sys.stderr, flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as handle:
                    handle.write(json.dumps({**setting, **row}) + "\n")
    print(table(rows, policies))
    print(f"wall {time.time() - started:.0f} s, load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
