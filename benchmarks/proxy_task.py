"""Does augmentation matter on the built-in proxy task? Every preset, several seeds, one table.

Trains the tiny VLM on ``shapes-vqa`` once per (preset, seed) with `run_training` (the same code
path as ``autoaug train``; same epochs, learning rate and batch size for every preset) and reports,
per preset, mean ± sample standard deviation over the seeds of:

- clean test accuracy and robust accuracy (mean over the corruption suite of
  `autoaug.trainers.evaluation`), plus the ``image_missing`` accuracy alone (how much the image matters);
- the train–val gap (clean train accuracy minus clean val accuracy at the end of training);
- seconds per epoch (training + validation) and seconds per run (data, training, evaluation).

Then, for each preset, the difference to ``none`` in clean test accuracy with the standard error of a
difference of two means over independent seeds, ``sqrt(s1²/n1 + s2²/n2)``, and whether it exceeds
2 SE. The test split is only read here, never to choose anything.

    .venv/bin/python benchmarks/proxy_task.py                 # 6 presets x 5 seeds on the CPU
    .venv/bin/python benchmarks/proxy_task.py --seeds 2 --presets none,moderate --json out.json
    .venv/bin/python benchmarks/proxy_task.py --task-option train_size=1000

Progress goes to stderr; the markdown report to stdout. Timings are as measured on this machine:
the header prints the CPU count, torch's thread count and the load average before and after.
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
from typing import Any, Optional

PRESETS = ("none", "conservative", "moderate", "aggressive", "trivial", "randaugment")
EPOCH_LIMIT_S = 5.0
RUN_LIMIT_S = 60.0


def _parse_value(text: str) -> Any:
    """``k=v`` values: JSON where it parses (ints, floats, booleans, lists), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _task_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--task-option: expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = _parse_value(value.strip())
    return options


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _quiet_lightning() -> None:
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def difference_to_baseline(runs: list[float], baseline: list[float]) -> dict[str, float]:
    """Difference of mean clean test accuracy to the baseline's, its SE over independent seeds, and
    how many SEs it is."""
    mean, std = _mean_std(runs)
    base_mean, base_std = _mean_std(baseline)
    difference = mean - base_mean
    se = math.sqrt(std ** 2 / len(runs) + base_std ** 2 / len(baseline))
    return {"difference": difference, "se": se,
            "z": difference / se if se > 0 else (math.inf if difference > 0 else 0.0),
            "exceeds_2se": difference > 2 * se}


def summarise(preset: str, runs: list[dict]) -> dict[str, Any]:
    def stat(key: str) -> tuple[float, float]:
        return _mean_std([run[key] for run in runs])

    return {
        "preset": preset,
        "n": len(runs),
        "test_accuracy": stat("test_accuracy"),
        "val_accuracy": stat("val_accuracy"),
        "train_accuracy": stat("train_accuracy"),
        "robust_accuracy": stat("robust_accuracy"),
        "image_missing_accuracy": _mean_std([run["robust_breakdown"]["image_missing"] for run in runs]),
        "train_val_gap": stat("train_val_gap"),
        "seconds_per_epoch": stat("seconds_per_epoch"),
        "seconds": stat("seconds"),
        "max_seconds_per_epoch": max(run["seconds_per_epoch"] for run in runs),
        "max_seconds": max(run["seconds"] for run in runs),
    }


def render(summaries: dict[str, dict], differences: dict[str, dict], header: dict) -> str:
    lines = [
        "## Proxy task: augmentation presets on shapes-vqa",
        "",
        f"task `{header['task']}` (options {json.dumps(header['task_options'])}), sizes "
        f"{header['sizes']}, {header['max_epochs']} epochs, {header['seeds']} seeds "
        f"({', '.join(map(str, header['seed_list']))}), accelerator {header['accelerator']}; "
        f"{header['cpu_count']} CPUs visible, torch threads {header['torch_threads']}, "
        f"load average before {header['load_before']}, after {header['load_after']}.",
        "",
        "| preset | test acc | robust acc | image-missing acc | train acc | val acc | train–val gap | s/epoch | s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(pair: tuple[float, float], digits: int = 3) -> str:
        return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"

    for preset, summary in summaries.items():
        lines.append(
            f"| {preset} | {ms(summary['test_accuracy'])} | {ms(summary['robust_accuracy'])} | "
            f"{ms(summary['image_missing_accuracy'])} | {ms(summary['train_accuracy'])} | "
            f"{ms(summary['val_accuracy'])} | {ms(summary['train_val_gap'])} | "
            f"{ms(summary['seconds_per_epoch'], 2)} | {ms(summary['seconds'], 1)} |")
    if differences:
        lines += [
            "",
            "Clean test accuracy minus `none` (SE of a difference of two means over independent seeds,",
            "sqrt(s1²/n1 + s2²/n2)):",
            "",
            "| preset | difference | SE | difference / SE | > 2 SE |",
            "|---|---|---|---|---|",
        ]
        for preset, diff in differences.items():
            lines.append(f"| {preset} | {diff['difference']:+.3f} | {diff['se']:.3f} | {diff['z']:+.1f} | "
                         f"{'yes' if diff['exceeds_2se'] else 'no'} |")
    checks = header["checks"]
    lines += ["", "Checks:", ""]
    for check in checks:
        lines.append(f"- {'PASS' if check['ok'] else 'FAIL'}: {check['what']}")
    lines += ["", f"Total wall time: {header['wall_seconds']:.0f} s ({header['wall_seconds'] / 60:.1f} min)."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per preset (0..N-1; default 5)")
    parser.add_argument("--presets", default="all",
                        help=f"comma-separated presets or 'all' ({', '.join(PRESETS)})")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epochs per run (default: run_training's DEFAULT_MAX_EPOCHS)")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--task", default="shapes-vqa", help="task name (default shapes-vqa)")
    parser.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the task generator, e.g. train_size=600 (repeatable)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every run and the summary here")
    args = parser.parse_args(argv)

    presets = list(PRESETS) if args.presets == "all" else [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS and not os.path.exists(p)]
    if unknown:
        parser.error(f"--presets: unknown {unknown}; presets are {', '.join(PRESETS)} (or policy files)")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    task_options = _task_options(args.task_option)

    _quiet_lightning()
    import torch

    from autoaug.trainers.train import DEFAULT_MAX_EPOCHS, run_training

    if args.threads:
        torch.set_num_threads(args.threads)
    max_epochs = args.max_epochs or DEFAULT_MAX_EPOCHS
    seeds = list(range(args.seeds))
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {preset: [] for preset in presets}
    sizes: dict = {}
    total = len(presets) * len(seeds)
    done = 0
    for seed in seeds:  # seed-major: machine noise spreads over presets instead of hitting one
        for preset in presets:
            result = run_training(task=args.task, policy=preset, seed=seed, max_epochs=max_epochs,
                                  accelerator=args.accelerator, task_options=task_options or None)
            result.pop("split", None)
            sizes = result.get("sizes", sizes)
            runs[preset].append(result)
            done += 1
            print(f"[{done}/{total}] {preset:>12} seed {seed}: test {result['test_accuracy']:.3f} "
                  f"val {result['val_accuracy']:.3f} train {result['train_accuracy']:.3f} "
                  f"robust {result['robust_accuracy']:.3f} | {result['seconds_per_epoch']:.2f} s/epoch, "
                  f"{result['seconds']:.1f} s, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    load_after = [round(x, 2) for x in os.getloadavg()]

    summaries = {preset: summarise(preset, preset_runs) for preset, preset_runs in runs.items()}
    differences: dict[str, dict] = {}
    if "none" in runs:
        baseline = [run["test_accuracy"] for run in runs["none"]]
        for preset in presets:
            if preset != "none":
                differences[preset] = difference_to_baseline([run["test_accuracy"] for run in runs[preset]],
                                                             baseline)
    checks = []
    if "none" in summaries:
        none = summaries["none"]
        checks.append({"what": f"none overfits: train–val gap {none['train_val_gap'][0]:.3f} "
                               f"(train {none['train_accuracy'][0]:.3f}, val {none['val_accuracy'][0]:.3f}) > 0.15",
                       "ok": none["train_val_gap"][0] > 0.15})
        checks.append({"what": f"the image matters for none: image-missing accuracy "
                               f"{none['image_missing_accuracy'][0]:.3f} vs clean test {none['test_accuracy'][0]:.3f}",
                       "ok": none["test_accuracy"][0] - none["image_missing_accuracy"][0] > 0.1})
    if differences:
        winners = [p for p, d in differences.items() if d["exceeds_2se"]]
        checks.append({"what": "a preset beats none on clean test accuracy by > 2 SE: "
                               + (", ".join(f"{p} ({differences[p]['difference']:+.3f}, "
                                            f"{differences[p]['z']:.1f} SE)" for p in winners) or "none does"),
                       "ok": bool(winners)})
    slowest_epoch = max(s["max_seconds_per_epoch"] for s in summaries.values())
    checks.append({"what": f"one epoch <= {EPOCH_LIMIT_S:.0f} s: slowest mean epoch of any run {slowest_epoch:.2f} s",
                   "ok": slowest_epoch <= EPOCH_LIMIT_S})
    default_run = summaries.get("none", next(iter(summaries.values())))
    checks.append({"what": f"one default trial <= {RUN_LIMIT_S:.0f} s: {default_run['preset']} runs take "
                           f"{default_run['seconds'][0]:.1f} s on average (slowest run of any preset "
                           f"{max(s['max_seconds'] for s in summaries.values()):.1f} s)",
                   "ok": max(s["max_seconds"] for s in summaries.values()) <= RUN_LIMIT_S})
    header = {
        "task": args.task, "task_options": task_options, "sizes": sizes, "max_epochs": max_epochs,
        "seeds": len(seeds), "seed_list": seeds, "accelerator": args.accelerator,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_before": load_before, "load_after": load_after, "wall_seconds": wall, "checks": checks,
    }
    print(render(summaries, differences, header))
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({"header": header, "summaries": summaries, "differences": differences, "runs": runs},
                      handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
