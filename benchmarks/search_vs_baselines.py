"""Does searching pay? The default search, then its confirmed export against every baseline on fresh seeds.

1. The README's main search (`autoaug search --space vlm_default --task shapes-vqa`: calibration,
   baselines, trials, confirmation) with ``--trials`` trials. Reports wall time per stage, the share
   of slot time outside training epochs (from the trials' own timestamps: the search's ``cost``),
   the calibration and the confirmation's verdict.
2. The confirmed export, ``none`` and every preset are retrained with ``--seeds`` seeds that neither
   the search nor its confirmation used (1, 2, ...), at the calibrated learning rate and length, on
   the same data; clean test, robust (in-space corruptions) and — when the evaluation suite has them
   — held-out-corruption accuracy. Every candidate gets the same seeds, so each difference to
   ``none`` (and to the best baseline) is paired by seed: mean ± SE of the per-seed differences; a
   gain counts only beyond 2 SE. The test split is read here only.
3. With ``--nsga2-trials N``: a two-objective (clean vs robust validation) NSGA-II search of N
   trials, whose Pareto front is printed below the table.

    .venv/bin/python benchmarks/search_vs_baselines.py [--trials 12] [--seeds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy_task import paired_difference, run_one  # noqa: E402  (the benchmarks folder is not a package)

PRESETS = ("conservative", "moderate", "aggressive", "trivial", "randaugment")
METRICS = ("test_accuracy", "robust_accuracy", "heldout_robust_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nsga2-trials", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--trial", type=int, action="append", default=[],
                        help="also retrain this trial of the study (repeatable): what selection ranked, beside the export")
    parser.add_argument("--name", default="bench", help="study name: an existing study in --workdir is resumed "
                        "(nothing re-run), e.g. the README main command's, so it is measured as the user ran it")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    import ray

    from autoaug.search.controller import SearchRequest, run_search

    workdir = args.workdir or tempfile.mkdtemp(prefix="autoaug-bench-search-")
    load_before, started = os.getloadavg(), time.perf_counter()
    result = run_search(SearchRequest(space="vlm_default", name=args.name, task="shapes-vqa", trials=args.trials,
                                      workdir=workdir))
    wall = time.perf_counter() - started
    front = None
    if args.nsga2_trials:
        nsga = run_search(SearchRequest(space="vlm_default", name="bench-nsga2", task="shapes-vqa", sampler="nsga2",
                                        trials=args.nsga2_trials, workdir=workdir, confirm=False, baselines=False))
        front = nsga.get("pareto_front")
    ray.shutdown()

    calibration, confirmation = result["calibration"], result["confirmation"]
    candidates = {"searched (confirmed export)": result["best_policy_path"], "none": "none",
                  **{preset: preset for preset in PRESETS}, **_trial_policies(args.trial, args.name, workdir)}
    seeds = list(range(1, args.seeds + 1))
    base = {"task": "shapes-vqa", "task_options": {}, "data_seed": 0, "model_options": {}, "batch_size": None,
            "learning_rate": calibration["learning_rate"], "max_epochs": calibration["trial_epochs"]}
    jobs = [{**base, "candidate": path, "seed": seed, "label": label}
            for label, path in candidates.items() for seed in seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run_one, jobs))
    by_label = {label: {job["seed"]: run for job, run in zip(jobs, runs) if job["label"] == label} for label in candidates}

    def values(label: str, metric: str) -> dict[int, float]:
        return {seed: run[metric] for seed, run in by_label[label].items() if metric in run}

    metrics = [metric for metric in METRICS if values("none", metric)]
    best_baseline = max(PRESETS, key=lambda name: statistics.fmean(values(name, "test_accuracy").values()))

    print(f"# Search vs baselines ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load {load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after)\n")
    print(f"`{' '.join(sys.argv)}`\n")
    if result["stage_seconds"]:
        print(f"- search: {args.trials} trials, wall {wall:.0f} s ({wall / 60:.1f} min; target <= 15 min: "
              f"{'PASS' if wall <= 900 else 'MISS'}); stages {result['stage_seconds']}")
    else:  # a finished study resumed: nothing ran here, its time is the main command's own
        print(f"- search: study {args.name} of {workdir} resumed, already finished (time it where it ran)")
    for stage, row in result["cost"]["stages"].items():
        print(f"  - {stage}: {row['trials']} runs, outside epochs {100 * row['outside_epochs_fraction']:.1f} % of slot time, "
              f"cores busy {100 * row['cores_busy_fraction']:.1f} %")
    print(f"- calibration: lr {calibration['learning_rate']:g}, regime epoch {calibration.get('regime_epoch')} "
          f"({calibration.get('regime')}), trials of "
          f"{calibration['trial_epochs']} epochs; val none {calibration['none_val_accuracy']:.4f} vs question-only "
          f"{calibration['question_only_val_accuracy'] or float('nan'):.4f}")
    if result.get("screen"):
        print(f"- screen: survivors {', '.join(result['screen']['survivors'])}")
    print(f"- confirmation: winner {confirmation['winner']}, verdict {confirmation['verdict']}")
    for row in confirmation["candidates"]:
        print(f"  - {row['name']}: val {row['mean']:.4f} ± {row['se']:.4f}, vs none {row['diff_vs_none']:+.4f} ± "
              f"{row['diff_se']:.4f}, corrected p {row.get('p_adjusted')}")
    print(f"\n## Retrained on seeds {seeds} (test split read only here), paired by seed\n")
    header = " | ".join(f"{m} mean | {m} vs none ± SE" for m in metrics)
    print(f"| policy | {header} |\n|---|" + "---|" * (2 * len(metrics)))
    for label in candidates:
        cells = []
        for metric in metrics:
            own = values(label, metric)
            cells.append(f"{statistics.fmean(own.values()):.4f}")
            if label == "none":
                cells.append("—")
            else:
                diff = paired_difference(own, values("none", metric))
                cells.append(f"{diff['difference']:+.4f} ± {diff['se']:.4f}{' *' if diff['exceeds_2se'] else ''}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n`*`: beyond 2 paired SE.")
    searched = values("searched (confirmed export)", "test_accuracy")
    for other in ("none", best_baseline):
        diff = paired_difference(searched, values(other, "test_accuracy"))
        print(f"- searched vs {other} (clean test): {diff['difference']:+.4f} ± {diff['se']:.4f} "
              f"({'beyond' if diff['exceeds_2se'] else 'within'} 2 SE; below by more than 2 SE: "
              f"{'yes' if diff['difference'] < -2 * diff['se'] else 'no'})")
    if front is not None:
        print(f"\n## NSGA-II front ({args.nsga2_trials} trials, validation)\n\n{json.dumps(front, indent=1)}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"search": result, "wall_s": wall, "runs": runs, "jobs": jobs,
                                                    "nsga2_front": front}, indent=2, default=str))


def _trial_policies(numbers: list[int], name: str, workdir: str) -> dict[str, str]:
    """``{"trial N (<ops>)": policy file}`` for trials of the study, written beside it (``--trial``)."""
    from autoaug.policy import Policy
    from autoaug.search.export import export_policy, open_study

    study = open_study(name, workdir)
    files = {}
    for number in numbers:
        path = export_policy(study, number, Path(workdir) / f"bench-trial-{number}.yaml")
        ops = "+".join(entry.op for entry in Policy.load(path).config.entries) or "none"
        files[f"trial {number} ({ops})"] = str(path)
    return files


if __name__ == "__main__":
    main()
