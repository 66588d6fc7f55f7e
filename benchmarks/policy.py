"""Overhead of the policy machinery over applying the same ops directly.

A 4-entry token-stage policy (selection, schedules, clean-fraction draw, per-entry coin flips and
param recording all on) against calling the same four ops one after another with one generator, on
the ops benchmark's batch (B=64, 196 patch tokens of width 768, 64 text tokens). Both sides do the
same tensor work: the policy's clean fraction is 0 and its p is 1, so every sample is augmented on
both sides. Measurements are interleaved so machine noise hits both equally; medians are reported.

    .venv/bin/python benchmarks/policy.py [--repeats 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from autoaug import Policy, ops
from autoaug.synthetic import example_batch

ENTRIES = [
    ("vision_token_dropout", 0.5, "warmup_peak_cooldown"),
    ("text_token_dropout", 0.5, "cosine"),
    ("vision_random_mask", 0.5, "linear"),
    ("text_mask", 0.5, "constant"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_path", default=None, help="also write raw numbers here")
    args = parser.parse_args()

    batch = example_batch(batch_size=64, grid=14, patch_dim=768, text_len=64, device=args.device)
    policy = Policy.from_dict({
        "seed": 0, "clean_fraction": 0.0,
        "entries": [{"op": name, "p": 1.0, "magnitude": 1.0, "schedule": schedule} for name, _, schedule in ENTRIES],
    })
    policy.record = True
    direct_ops = [ops.get(name) for name, _, _ in ENTRIES]
    total_steps, step = 1000, 500
    # The direct side uses the magnitudes the schedules give at this step, so the work is identical.
    magnitudes = [entry.schedule(step / total_steps) * entry.magnitude for entry in policy.config.entries]

    def sync() -> None:
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()

    def run_direct() -> None:
        generator = torch.Generator().manual_seed(0)
        out = batch
        for op, magnitude in zip(direct_ops, magnitudes):
            out = op(out, magnitude, generator)

    def run_policy() -> None:
        policy.applied.clear()
        policy(batch, step=step, total_steps=total_steps)

    timings: dict[str, list[float]] = {"direct": [], "policy": []}
    for _ in range(3):
        run_direct(), run_policy()
    for _ in range(args.repeats):
        for name, function in (("direct", run_direct), ("policy", run_policy)):
            sync()
            start = time.perf_counter()
            function()
            sync()
            timings[name].append(time.perf_counter() - start)

    direct, with_policy = (statistics.median(timings[name]) for name in ("direct", "policy"))
    overhead = with_policy / direct - 1.0
    print("| 4-entry token-stage policy | ms |\n|---|---|")
    print(f"| ops applied directly | {direct * 1e3:.2f} |")
    print(f"| through Policy (selection, schedules, clean fraction, param recording) | {with_policy * 1e3:.2f} |")
    print(f"\noverhead: {overhead * 100:+.1f} % (target <= 10 %: {'PASS' if overhead <= 0.10 else 'MISS'}); "
          f"median of {args.repeats} interleaved runs on {args.device}, torch threads {torch.get_num_threads()}")
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"direct_s": timings["direct"], "policy_s": timings["policy"], "overhead": overhead}, handle)


if __name__ == "__main__":
    main()
