"""Fuzz every input boundary with many generated cases and count those that break the property.

The strategies and checks are the suite's (tests/test_fuzz.py, `BOUNDARIES`): policy YAML/JSON,
search-space YAML, Parquet and WebDataset data behind ``--data``, and CLI command lines. The property:
every input either works, or is refused with an `AutoaugInputError` (CLI: exit 2) in one line naming
the file and field (or column and row), with no traceback and no partial output file.

Unlike the suite, which stops at the first failure and shrinks it, this run counts: every case is
tried, a failure is recorded (grouped by its message) and the run goes on.

    nice -n 10 .venv/bin/python benchmarks/fuzz.py --examples 10000            # all boundaries
    .venv/bin/python benchmarks/fuzz.py --examples 500 --boundary parquet --seed 3

``--examples`` is the total, shared evenly by the boundaries run. Prints one line per boundary
(cases tried, accepted, refused, failed, seconds), the total, then each distinct failure once with
an example case. Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

TESTS = Path(__file__).resolve().parents[1] / "tests" / "test_fuzz.py"


def load_boundaries() -> dict:
    """The suite's `BOUNDARIES` registry (strategy and check per boundary), imported from its file."""
    spec = importlib.util.spec_from_file_location("autoaug_fuzz_boundaries", TESTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module.BOUNDARIES


def _signature(error: BaseException) -> str:
    """A failure's group: its type and message with paths and numbers blanked."""
    text = str(error).splitlines()[0] if str(error).strip() else ""
    text = re.sub(r"/tmp/[^\s:'\"]*", "<tmp>", text)
    text = re.sub(r"0x[0-9a-fA-F]+|\\x[0-9a-fA-F]{2}|\d+", "N", text)
    return f"{type(error).__name__}: {text[:160]}"


def fuzz_boundary(strategy, check, examples: int, seed_value: int) -> tuple[Counter, dict[str, tuple[int, str]]]:
    """Run ``check`` over ``examples`` generated cases; outcome counts and failures by signature."""
    counts: Counter = Counter()
    failures: dict[str, tuple[int, str]] = {}

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case) -> None:
        counts["tried"] += 1
        try:
            counts[check(case)] += 1
        except Exception as error:  # noqa: BLE001 - any exception is a broken property, counted
            counts["failed"] += 1
            key = _signature(error)
            seen, example = failures.get(key, (0, repr(case)[:600]))
            failures[key] = (seen + 1, example)

    run()
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="cases in all, shared by the boundaries")
    parser.add_argument("--boundary", action="append", help="only these boundaries (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed tries the same cases)")
    args = parser.parse_args(argv)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    boundaries = load_boundaries()
    chosen = args.boundary or list(boundaries)
    unknown = [name for name in chosen if name not in boundaries]
    if unknown:
        parser.error(f"--boundary: unknown {', '.join(unknown)}; allowed: {', '.join(boundaries)}")
    per_boundary = -(-args.examples // len(chosen))
    print(f"fuzzing {', '.join(chosen)}: {per_boundary} cases each, seed {args.seed}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'boundary':<12}{'tried':>8}{'accepted':>10}{'refused':>10}{'failed':>8}{'seconds':>10}")
    total: Counter = Counter()
    all_failures: dict[str, tuple[int, str]] = {}
    for name in chosen:
        strategy, check = boundaries[name]
        start = time.perf_counter()
        counts, failures = fuzz_boundary(strategy, check, per_boundary, args.seed)
        seconds = time.perf_counter() - start
        total.update(counts)
        for key, (count, example) in failures.items():
            seen, kept = all_failures.get(f"[{name}] {key}", (0, example))
            all_failures[f"[{name}] {key}"] = (seen + count, kept)
        print(f"{name:<12}{counts['tried']:>8}{counts['accepted']:>10}{counts['refused']:>10}"
              f"{counts['failed']:>8}{seconds:>10.1f}", flush=True)
    print(f"{'total':<12}{total['tried']:>8}{total['accepted']:>10}{total['refused']:>10}{total['failed']:>8}")
    print(f"property failed for {total['failed']} of {total['tried']} cases "
          f"(load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    for key, (count, example) in sorted(all_failures.items(), key=lambda item: -item[1][0]):
        print(f"\n{count} x {key}\n    e.g. {example}")
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
