"""Do proxy trials rank policies the way full training does?

A search scores each policy with one proxy trial: one seed (the search's), the calibrated length,
validation accuracy. What a user cares about is the policy's test accuracy after full training,
averaged over seeds. For each candidate policy (presets, single ops, and optionally searched
policies given as YAML files) this script trains

- the proxy trial: seed ``--search-seed``, ``--proxy-epochs`` epochs (default: the full length), the
  validation accuracy at the end — what the search would have recorded;
- the full runs: ``--seeds`` other seeds at the full length, mean clean test accuracy;

and reports the Spearman rank correlation between the two columns (target ≥ 0.7), with the table.
Runs go to ``--workers`` processes with one torch thread each (`proxy_task.run_one`).

    .venv/bin/python benchmarks/proxy_fidelity.py                       # 12 candidates, 5 seeds
    .venv/bin/python benchmarks/proxy_fidelity.py --candidates none,moderate,search.yaml --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy_task import run_one  # noqa: E402  (the benchmarks folder is not a package)

DEFAULT_CANDIDATES = (
    "none", "conservative", "moderate", "aggressive", "trivial", "randaugment",
    "multimodal_horizontal_flip:1.0:0.5", "pixel_translate:0.5", "vision_block_shuffle:0.5",
    "vision_random_mask:0.3", "token_mixup:0.5", "text_token_dropout:0.5",
)


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1 = smallest."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    position = 0
    while position < len(order):
        tied = position
        while tied + 1 < len(order) and values[order[tied + 1]] == values[order[position]]:
            tied += 1
        for index in order[position:tied + 1]:
            result[index] = (position + tied) / 2 + 1
        position = tied + 1
    return result


def spearman(first: list[float], second: list[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks."""
    a, b = ranks(first), ranks(second)
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    spread = (sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b)) ** 0.5
    return covariance / spread if spread else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--proxy-epochs", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    base = {"task": "shapes-vqa", "task_options": {}, "data_seed": 0, "model_options": {},
            "learning_rate": args.learning_rate, "batch_size": None}
    full_seeds = [args.search_seed + 1 + i for i in range(args.seeds)]
    jobs = [{**base, "candidate": c, "seed": args.search_seed, "max_epochs": args.proxy_epochs or args.max_epochs,
             "role": "proxy"} for c in candidates]
    jobs += [{**base, "candidate": c, "seed": s, "max_epochs": args.max_epochs, "role": "full"}
             for c in candidates for s in full_seeds]
    load_before, started = os.getloadavg(), time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_one, jobs))
    for job, result in zip(jobs, results):
        result["role"] = job["role"]
    proxy = {r["candidate"]: r["val_accuracy"] for r in results if r["role"] == "proxy"}
    full = {c: statistics.fmean(r["test_accuracy"] for r in results if r["role"] == "full" and r["candidate"] == c)
            for c in candidates}
    rho = spearman([proxy[c] for c in candidates], [full[c] for c in candidates])
    print(f"# Proxy fidelity ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load "
          f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after, {time.perf_counter() - started:.0f} s)\n")
    print(f"`{' '.join(sys.argv)}`\n")
    print(f"| policy | proxy: val, seed {args.search_seed} | full: test, mean of {args.seeds} seeds |")
    print("|---|---|---|")
    for c in sorted(candidates, key=lambda c: -full[c]):
        print(f"| {c} | {proxy[c]:.4f} | {full[c]:.4f} |")
    print(f"\nSpearman rank correlation, proxy vs full: {rho:.3f} over {len(candidates)} policies "
          f"(target >= 0.7: {'PASS' if rho >= 0.7 else 'MISS'})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results,
                                         "spearman": rho}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
