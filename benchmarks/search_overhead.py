"""How much of a search's slot time goes to training, with warm reused workers and without.

Runs the same search twice, side by side in one invocation — once as `autoaug search` runs it
(`--reuse-workers`: each slot's worker process, its imports and the prepared task stay from trial to
trial) and once with `--no-reuse-workers` (a fresh process per trial) — and prints, per stage and
for each run:

- wall time and trials per minute;
- the share of slot time (wall × slots) spent outside training epochs, from timestamps taken inside
  each trial (`TrialClock`: start-up until the first epoch, then each epoch's training + validation);
- how busy the cores given to trials were: the trials' own process CPU time over wall × slots × CPUs
  per slot.

Targets (the search-speed issue): outside epochs ≤ 10 % of slot time, cores busy ≥ 85 %, and at
least 2× the trials per minute of the run without reuse.

    .venv/bin/python benchmarks/search_overhead.py                       # default search, both modes
    .venv/bin/python benchmarks/search_overhead.py --trials 12 --stages search --json out.json

``--stages search`` runs only the searched trials (no calibration, baselines or confirmation) at a
fixed length, which isolates per-trial start-up; the default runs every stage as the README's main
command does. Progress goes to stderr, the markdown report to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(reuse: bool, args, workdir: Path) -> dict:
    from autoaug.search.controller import SearchRequest, run_search

    only_trials = args.stages == "search"
    request = SearchRequest(
        space=args.space, name=f"overhead-{'reuse' if reuse else 'fresh'}", task="shapes-vqa", trials=args.trials,
        workdir=str(workdir), seed=args.seed, max_epochs=args.max_epochs, reuse_workers=reuse,
        calibrate=not only_trials, confirm=not only_trials, baselines=not only_trials,
        scheduler="none" if only_trials else "asha", cpus_per_trial=args.cpus_per_trial,
    )
    started = time.perf_counter()
    result = run_search(request)
    result["benchmark_wall_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--space", default="vlm_default")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--stages", choices=("all", "search"), default="all")
    parser.add_argument("--order", choices=("reuse-first", "fresh-first"), default="fresh-first")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import ray

    load_before = os.getloadavg()
    results = {}
    order = (False, True) if args.order == "fresh-first" else (True, False)
    with tempfile.TemporaryDirectory() as folder:
        for reuse in order:
            label = "reuse" if reuse else "fresh"
            print(f"[{time.strftime('%H:%M:%S')}] search with {label} workers ...", file=sys.stderr, flush=True)
            results[label] = run(reuse, args, Path(folder) / label)
            ray.shutdown()  # each mode starts its own Ray: neither inherits the other's warm workers
    load_after = os.getloadavg()

    print(f"# Search overhead ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after)\n")
    print(f"`{' '.join(sys.argv)}` — {args.trials} trials of {args.space}, stages: {args.stages}\n")
    print("| workers | stage | wall s | trials | trials/min | outside epochs | cores busy | start-up s (sum) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, result in results.items():
        for stage, row in result["cost"]["stages"].items():
            print(f"| {label} | {stage} | {row['wall_seconds']:.1f} | {row['trials']} | {row['trials_per_minute']:.2f} | "
                  f"{100 * row['outside_epochs_fraction']:.1f} % | {100 * row['cores_busy_fraction']:.1f} % | "
                  f"{row['startup_seconds']:.1f} |")
    print()
    fresh, reuse = results["fresh"]["cost"]["stages"], results["reuse"]["cost"]["stages"]
    for stage in reuse:
        if stage in fresh and fresh[stage]["trials_per_minute"]:
            ratio = reuse[stage]["trials_per_minute"] / fresh[stage]["trials_per_minute"]
            print(f"- {stage}: reuse gives {ratio:.2f}x the trials per minute of fresh workers (target >= 2x: "
                  f"{'PASS' if ratio >= 2 else 'MISS'}); outside epochs {100 * reuse[stage]['outside_epochs_fraction']:.1f} % "
                  f"(target <= 10 %: {'PASS' if reuse[stage]['outside_epochs_fraction'] <= 0.10 else 'MISS'}); "
                  f"cores busy {100 * reuse[stage]['cores_busy_fraction']:.1f} % (target >= 85 %: "
                  f"{'PASS' if reuse[stage]['cores_busy_fraction'] >= 0.85 else 'MISS'})")
    for label, result in results.items():
        print(f"- {label}: whole search {result['benchmark_wall_seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "load": [load_before, load_after],
                                         "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
