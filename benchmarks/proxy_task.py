"""Does augmentation matter on the built-in proxy task? Every candidate policy, paired seeds, one table.

Trains the tiny VLM on ``shapes-vqa`` once per (candidate, seed) with `run_training` (the code path of
``autoaug train``: the built-in defaults for epochs, learning rate, batch size and model unless
overridden) and reports per candidate, over the seeds:

- mean ± SD of clean test, clean val and train accuracy, the train − val gap, robust accuracy (mean
  over the corruption suite of `autoaug.trainers.evaluation`), and CPU seconds per run (training
  alone, and with the final evaluation);
- the **paired** difference to ``none``: every candidate trains with the same seeds, and a seed fixes
  the model initialisation and the data order (only the policy differs), so the per-seed differences
  ``candidate[s] − none[s]`` are what is averaged: mean ± SE (SD of the differences / sqrt(n)), for
  clean test and for robust accuracy;
- ``question-only``: ``none`` trained and evaluated with every image replaced by one grey image
  (`PreparedTask.without_images`): what the questions alone give.

Then the regime checks of issue 10: ``none`` overfits (train − val ≥ 0.20), question-only at least
0.10 below ``none``, SD of ``none``'s test accuracy ≤ 0.015, one default ``none`` run trains in ≤ 15 CPU
seconds, and some candidate beats ``none`` by more than 2 paired SE. The test split is only read
here, never to choose anything.

A candidate is a preset name, a policy YAML path, or ``op:magnitude[:p]`` (a one-entry policy with
no clean share). Runs go to ``--workers`` processes with one torch thread each (CPU seconds are
one-core seconds).

    .venv/bin/python benchmarks/proxy_task.py                       # all presets + question-only, 5 seeds
    .venv/bin/python benchmarks/proxy_task.py --candidates none,moderate,multimodal_horizontal_flip:0.5 --seeds 3
    .venv/bin/python benchmarks/proxy_task.py --task-option train_size=1000 --json out.json

Progress goes to stderr; the markdown report to stdout, with date, CPU count and load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

PRESETS = ("none", "conservative", "moderate", "aggressive", "trivial", "randaugment")
QUESTION_ONLY = "question-only"
GAP_MIN = 0.20            # none's train - val gap at the default length
IMAGE_MARGIN_MIN = 0.10   # none's test accuracy minus question-only's
SD_MAX = 0.015            # SD over seeds of none's test accuracy
TRAIN_CPU_MAX_S = 15.0    # one default none run's training, one core


def parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, parsed as `autoaug --task-option` parses them; a bad pair ends the benchmark."""
    from autoaug.cli import parse_options as parse
    from autoaug.errors import AutoaugInputError

    try:
        return parse(pairs, flag)
    except AutoaugInputError as error:
        raise SystemExit(str(error)) from None


def policy_of(spec: str):
    """A `Policy` from a preset name, a YAML path, or ``op:magnitude[:p]`` (one entry, no clean share)."""
    from autoaug.policy import Policy

    if ":" not in spec:
        return Policy.load(spec)
    op, *numbers = spec.split(":")
    magnitude = float(numbers[0])
    probability = float(numbers[1]) if len(numbers) > 1 else 1.0
    return Policy.from_dict({"schema_version": 1, "name": spec, "clean_fraction": 0.0,
                             "entries": [{"op": op, "p": probability, "magnitude": magnitude}]})


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(runs: dict[int, float], baseline: dict[int, float]) -> dict[str, float]:
    """Mean and SE of the per-seed differences ``runs[s] - baseline[s]`` over the seeds both have."""
    seeds = sorted(runs.keys() & baseline.keys())
    differences = [runs[s] - baseline[s] for s in seeds]
    mean, sd = mean_sd(differences)
    se = sd / math.sqrt(len(differences))
    return {"difference": mean, "se": se, "n": len(differences),
            "z": mean / se if se > 0 else (math.inf if mean > 0 else 0.0), "exceeds_2se": mean > 2 * se}


# ---------------------------------------------------------------------- one run (in a worker process)
_PREPARED: dict[str, Any] = {}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_one(job: dict) -> dict:
    """Train one (candidate, seed) in this process with one torch thread; the task is prepared once
    per process and setting."""
    import lightning as L
    import torch

    _quiet()
    torch.set_num_threads(1)
    from autoaug.trainers.train import prepare_task, run_training

    class FitClock(L.Callback):
        """CPU seconds of ``trainer.fit`` alone (what a search trial costs)."""

        def on_fit_start(self, trainer, module):
            self.started = time.process_time()

        def on_fit_end(self, trainer, module):
            self.seconds = time.process_time() - self.started

    key = json.dumps([job["task"], job["task_options"], job["data_seed"]], sort_keys=True)
    if key not in _PREPARED:
        _PREPARED[key] = prepare_task(job["task"], None, job["data_seed"], job["task_options"])
    prepared, spec = _PREPARED[key], job["candidate"]
    if spec == QUESTION_ONLY:
        prepared, spec = prepared.without_images(), "none"
    overrides = {name: job[name] for name in ("max_epochs", "learning_rate", "batch_size") if job[name]}
    clock = FitClock()
    started = time.process_time()
    result = run_training(prepared=prepared, policy=policy_of(spec), seed=job["seed"], accelerator="cpu",
                          data_seed=job["data_seed"], model_options=job["model_options"] or None,
                          callbacks=[clock], **overrides)
    keep = ("test_accuracy", "val_accuracy", "train_accuracy", "train_val_gap", "robust_accuracy", "epochs",
            "learning_rate", "sizes")
    return {"candidate": job["candidate"], "seed": job["seed"], "cpu_seconds": time.process_time() - started,
            "train_cpu_seconds": clock.seconds, **{k: result[k] for k in keep}}


# ---------------------------------------------------------------------- report
def summarise(runs: list[dict]) -> dict[str, Any]:
    return {"n": len(runs)} | {key: mean_sd([run[key] for run in runs]) for key in (
        "test_accuracy", "val_accuracy", "train_accuracy", "train_val_gap", "robust_accuracy",
        "train_cpu_seconds", "cpu_seconds")}


def checks_of(summaries: dict, differences: dict) -> list[dict]:
    checks = []
    none = summaries.get("none")
    if none:
        gap = none["train_val_gap"][0]
        checks.append({"what": f"none overfits: train - val gap {gap:.3f} >= {GAP_MIN}", "ok": gap >= GAP_MIN})
        sd, seeds = none["test_accuracy"][1], none["n"]
        checks.append({"what": f"SD over {seeds} seeds of none's test accuracy {sd:.4f} <= {SD_MAX} (needs >= 3 seeds)",
                       "ok": seeds >= 3 and sd <= SD_MAX})
        seconds = none["train_cpu_seconds"][0]
        checks.append({"what": f"one none run trains in {seconds:.1f} CPU s <= {TRAIN_CPU_MAX_S:.0f} (one core)",
                       "ok": seconds <= TRAIN_CPU_MAX_S})
    if none and QUESTION_ONLY in summaries:
        margin = none["test_accuracy"][0] - summaries[QUESTION_ONLY]["test_accuracy"][0]
        checks.append({"what": f"the image matters: none - question-only = {margin:+.3f} >= {IMAGE_MARGIN_MIN}",
                       "ok": margin >= IMAGE_MARGIN_MIN})
    policies = {c: d for c, d in differences.items() if c != QUESTION_ONLY}
    if policies:
        winners = [c for c, d in policies.items() if d["test"]["exceeds_2se"]]
        checks.append({"what": "a candidate beats none on clean test by > 2 paired SE: " + (", ".join(
            f"{c} ({policies[c]['test']['difference']:+.3f}, {policies[c]['test']['z']:.1f} SE)" for c in winners)
            or "none does"), "ok": bool(winners)})
    return checks


def render(summaries: dict, differences: dict, header: dict) -> str:
    def ms(pair, digits: int = 3) -> str:
        return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"

    def diff(d) -> str:
        return f"{d['difference']:+.3f} ± {d['se']:.3f} ({d['z']:+.1f} SE)" if d else ""

    lines = [
        "## Proxy task: candidate policies on shapes-vqa, paired seeds",
        "",
        f"{header['date']}; task `{header['task']}` options {json.dumps(header['task_options'])}, sizes "
        f"{header['sizes']}; model options {json.dumps(header['model_options'])}; {header['epochs']} epochs, "
        f"learning rate {header['learning_rate']}; seeds {header['seed_list']} (paired); {header['workers']} "
        f"worker(s) x 1 torch thread on {header['cpu_count']} CPUs; load average before {header['load_before']}, "
        f"after {header['load_after']}.",
        "",
        "| candidate | test acc | val acc | train acc | train - val | robust acc | train CPU s | run CPU s "
        "| Δ test vs none (paired) | Δ robust vs none (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for candidate, summary in summaries.items():
        paired = differences.get(candidate, {})
        lines.append(
            f"| {candidate} | {ms(summary['test_accuracy'])} | {ms(summary['val_accuracy'])} | "
            f"{ms(summary['train_accuracy'])} | {summary['train_val_gap'][0]:+.3f} | "
            f"{ms(summary['robust_accuracy'])} | {summary['train_cpu_seconds'][0]:.1f} | "
            f"{summary['cpu_seconds'][0]:.1f} | {diff(paired.get('test'))} | {diff(paired.get('robust'))} |")
    lines += ["", "Checks:", ""]
    lines += [f"- {'PASS' if check['ok'] else 'FAIL'}: {check['what']}" for check in header["checks"]]
    lines += ["", f"Total wall time: {header['wall_seconds']:.0f} s ({header['wall_seconds'] / 60:.1f} min)."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join((*PRESETS, QUESTION_ONLY)),
                        help="comma-separated presets, policy files, op:magnitude[:p] or question-only "
                             "(default: every preset and question-only)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per candidate, the same for all (default 5)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: run_training's default")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: run_training's default")
    parser.add_argument("--batch-size", type=int, default=None, help="default: run_training's default")
    parser.add_argument("--task", default="shapes-vqa")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the task generator, e.g. train_size=600 (repeatable)")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a TinyVLMConfig field, e.g. width=128 (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs, one torch thread each (default 2)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every run and the summary here")
    args = parser.parse_args(argv)

    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if "none" not in candidates:
        candidates.insert(0, "none")  # the baseline every difference is paired with
    for candidate in candidates:
        if candidate != QUESTION_ONLY:
            try:
                policy_of(candidate)
            except Exception as error:  # one clear line, not a traceback
                parser.error(f"--candidates: {candidate!r} is not a preset, policy file or op:magnitude[:p] ({error})")
    if args.seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be >= 1")
    job_base = {"task": args.task, "task_options": parse_options(args.task_option, "--task-option"),
                "model_options": parse_options(args.model_option, "--model-option"),
                "max_epochs": args.max_epochs, "learning_rate": args.learning_rate,
                "batch_size": args.batch_size, "data_seed": args.data_seed}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    # seed-major: machine noise spreads over candidates instead of hitting one
    jobs = [{**job_base, "candidate": candidate, "seed": seed} for seed in seeds for candidate in candidates]
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {candidate: [] for candidate in candidates}
    with ProcessPoolExecutor(args.workers) as pool:
        for done, run in enumerate(pool.map(run_one, jobs), 1):
            runs[run["candidate"]].append(run)
            print(f"[{done}/{len(jobs)}] {run['candidate']:>32} seed {run['seed']}: test {run['test_accuracy']:.3f} "
                  f"val {run['val_accuracy']:.3f} train {run['train_accuracy']:.3f} robust "
                  f"{run['robust_accuracy']:.3f} | train {run['train_cpu_seconds']:.1f} CPU s, load "
                  f"{os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started

    summaries = {candidate: summarise(candidate_runs) for candidate, candidate_runs in runs.items()}
    baseline = {key: {run["seed"]: run[key] for run in runs["none"]} for key in ("test_accuracy", "robust_accuracy")}
    differences = {
        candidate: {"test": paired_difference({r["seed"]: r["test_accuracy"] for r in candidate_runs},
                                              baseline["test_accuracy"]),
                    "robust": paired_difference({r["seed"]: r["robust_accuracy"] for r in candidate_runs},
                                                baseline["robust_accuracy"])}
        for candidate, candidate_runs in runs.items() if candidate != "none"
    }
    first = runs["none"][0]
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "task": args.task,
        "task_options": job_base["task_options"], "model_options": job_base["model_options"],
        "sizes": first["sizes"], "epochs": first["epochs"], "learning_rate": first["learning_rate"],
        "seed_list": seeds, "workers": args.workers, "cpu_count": os.cpu_count(),
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": wall, "checks": checks_of(summaries, differences),
    }
    print(render(summaries, differences, header))
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"header": header, "summaries": summaries, "differences": differences, "runs": runs},
                      handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
