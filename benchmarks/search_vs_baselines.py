"""Does searching pay? The default search against every baseline on shapes-vqa, then a fair retrain.

1. `autoaug search --space vlm_default --task shapes-vqa --baselines` with the default budget
   (same machinery for the baselines: they are trials of the same study). Reports the search's wall
   time and how much of it was spent outside training epochs (Ray start-up and scheduling, trial
   process start-up, Optuna, MLflow): ``overhead = 1 - sum(epoch seconds of all trials) /
   (wall seconds x concurrent trial slots)``.
2. The best searched policy, the best preset (by validation accuracy in the search — never test) and
   ``none`` are retrained with ``--seeds`` seeds at the default training length; clean test and
   robust accuracy are reported as mean ± std, and each difference with its standard error
   ``sqrt(s1²/n1 + s2²/n2)``.

    .venv/bin/python benchmarks/search_vs_baselines.py [--trials 24] [--seeds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time

from autoaug.search.controller import BASELINES, SearchRequest, run_search
from autoaug.storage import resolve


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def epoch_seconds(tracking_uri: str, experiment_id: str) -> float:
    """Sum of every trial's per-epoch training+validation time, read back from MLflow."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([experiment_id], filter_string="tags.autoaug_role = 'trial'", max_results=10_000)
    return sum(metric.value for run in runs for metric in client.get_metric_history(run.info.run_id, "time_this_iter_s"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs per search trial (default: the CLI's)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    from autoaug.cli import SEARCH_EPOCHS
    from autoaug.trainers.train import run_training

    workdir = args.workdir or tempfile.mkdtemp(prefix="autoaug-bench-search-")
    request = SearchRequest(space="vlm_default", name="bench", task="shapes-vqa", trials=args.trials,
                            max_epochs=args.max_epochs or SEARCH_EPOCHS, cpus_per_trial=args.cpus_per_trial,
                            workdir=workdir, baselines=True)
    started = time.perf_counter()
    result = run_search(request)
    wall = time.perf_counter() - started
    slots = max(1, int((os.cpu_count() or 1) / args.cpus_per_trial))
    busy = epoch_seconds(resolve(workdir).tracking_uri, result["mlflow_experiment_id"])
    overhead = 1.0 - busy / (wall * slots)

    baselines = {name: value for name, value in result["baselines"].items() if value is not None}
    best_preset = max((name for name in baselines if name != "none"), key=baselines.get)
    candidates = {"searched": result["best_policy_path"], best_preset: best_preset, "none": "none"}
    rows: dict[str, dict[str, list[float]]] = {}
    for label, policy in candidates.items():
        rows[label] = {"test": [], "robust": [], "seconds": []}
        for seed in range(args.seeds):
            run = run_training(task="shapes-vqa", policy=policy, seed=seed, accelerator="cpu")
            rows[label]["test"].append(run["test_accuracy"])
            rows[label]["robust"].append(run["robust_accuracy"])
            rows[label]["seconds"].append(run["seconds"])

    print(f"## search: {args.trials} trials of vlm_default + {len(BASELINES)} baselines, "
          f"{request.max_epochs} epochs per trial, {slots} concurrent slots")
    print(f"- wall time {wall:.0f} s ({wall / 60:.1f} min; target <= 15 min: {'PASS' if wall <= 900 else 'MISS'})")
    print(f"- complete {result['n_complete']}, stopped early {result['n_pruned']}, failed {result['n_failed']}; "
          f"best searched val accuracy {result['best_value']:.4f} (trial {result['best_trial']})")
    print("- baselines' val accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(baselines.items())))
    print(f"- time outside training epochs: {overhead * 100:.1f} % of wall x slots "
          f"(target <= 15 %: {'PASS' if overhead <= 0.15 else 'MISS'})")
    print(f"\n## retrained with {args.seeds} seeds (test split used only here)\n")
    print("| policy | test accuracy | robust accuracy | s/run |\n|---|---|---|---|")
    for label, values in rows.items():
        test, robust = mean_std(values["test"]), mean_std(values["robust"])
        print(f"| {label} | {test[0]:.4f} ± {test[1]:.4f} | {robust[0]:.4f} ± {robust[1]:.4f} | "
              f"{statistics.fmean(values['seconds']):.1f} |")
    searched = rows["searched"]["test"]
    for label in ("none", best_preset):
        other = rows[label]["test"]
        difference = statistics.fmean(searched) - statistics.fmean(other)
        error = math.sqrt(mean_std(searched)[1] ** 2 / len(searched) + mean_std(other)[1] ** 2 / len(other))
        verdict = "beats" if difference > 2 * error else "does not beat"
        print(f"- searched vs {label}: {difference:+.4f} (SE {error:.4f}): {verdict} it beyond 2 SE")
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"search": result, "wall_s": wall, "epoch_s": busy, "overhead": overhead, "slots": slots,
                       "retrain": rows, "best_preset": best_preset}, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
