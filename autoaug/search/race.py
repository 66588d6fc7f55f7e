"""The selection race: more seeds for the best candidates before one of them is confirmed.

The search ranks its trials by one training run each (the search seed) on the selection examples. The
top of that ranking is the maximum of dozens of noisy numbers: with a paired seed-to-seed SD of about
0.018 on the built-in task, a trial that is really no better than ``none`` outranks a real +0.02 gain
most of the time, and the confirmation — one candidate tested on fresh seeds, so its alpha is not split —
then judges the wrong policy. The race spends a few runs to fix the ranking before the confirmation:

- round ``(keep, seeds)``: the ``keep`` best candidates so far (searched trials, screened single ops and
  presets, ranked together by the search's value: `confirmation.choose_candidates`) and ``none`` train on
  ``seeds`` more race seeds (never used by the search or the confirmation), on the selection examples;
- after each round the contenders are re-ranked by their mean paired difference to ``none`` over every
  seed they have, the search's own seed included (its trial and the ``none`` baseline share it); later
  rounds keep fewer candidates (successive halving across seeds: a candidate is stopped across seeds,
  never across epochs, so a slow-starting regulariser is judged at full length);
- the confirmation then tests the race's order (its top-k) on the held-out confirm part.

The race never decides a verdict: it only orders candidates, on the selection examples, so the
confirmation's false-"improves" rate is untouched. Default rounds ``6x1,3x2`` (15 runs) from
`benchmarks/search_surrogate.py`: the pipeline's power to export a planted +0.02 trial rises from
0.26 to 0.46 with 12 trials and from 0.16 to 0.33 with 30, at an unchanged false-"improves" rate.
The race's runs are kept on the study as they end (a resumed search re-runs only the missing ones).
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Optional

from autoaug.errors import ParameterError
from autoaug.search.confirmation import NONE, PRESETS_RANKED, Candidate, choose_candidates
from autoaug.search.mlflow_runs import log_stage_run
from autoaug.search.record_schema import RACE_ATTR, RACE_RUNS_ATTR, ROLE_RACE
from autoaug.search.stages import RunOutcome, SearchContext, run_specs
from autoaug.search.study import baseline_outcomes
from autoaug.search.trainable import RunSpec
from autoaug.trainers.prepared import VALIDATION_SPLIT

RACE_SEED_BASE = 20_000  # apart from the search's seeds (0, 1, ...) and the confirmation's (10_000 + ...)
DEFAULT_ROUNDS = "6x1,3x2"
OFF = "off"
_ROUND = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")

Rounds = tuple[tuple[int, int], ...]


def parse_rounds(text: str, field: str = "race") -> Rounds:
    """``"6x1,3x2"`` → ((6, 1), (3, 2)): keep the 6 best for 1 seed, then the 3 best for 2 more;
    ``"off"`` → () (no race). Each round keeps at least 2 candidates, at most as many as the round before,
    and runs at least 1 seed."""
    if text.strip().lower() == OFF:
        return ()
    rounds = []
    for part in text.split(","):
        match = _ROUND.match(part)
        if not match:
            raise ParameterError(field, f"expected rounds KEEPxSEEDS separated by commas (e.g. {DEFAULT_ROUNDS}) or "
                                        f"'{OFF}', got {text!r}")
        keep, seeds = int(match.group(1)), int(match.group(2))
        if keep < 2 or seeds < 1:
            raise ParameterError(field, f"each round keeps >= 2 candidates for >= 1 seed, got {part.strip()!r}")
        if rounds and keep > rounds[-1][0]:
            raise ParameterError(field, f"a round keeps at most as many candidates as the round before, got {text!r}")
        rounds.append((keep, seeds))
    return tuple(rounds)


def race_seeds(search_seed: int, count: int) -> list[int]:
    return [RACE_SEED_BASE + 100 * search_seed + index for index in range(count)]


def rerank(contenders: list[str], gains: dict[str, list[float]]) -> list[str]:
    """``contenders`` by mean paired gain over ``none``, highest first; a contender without a single
    finished pair goes last; ties keep the incoming order (the search's ranking)."""
    def key(name: str):
        own = gains.get(name) or []
        return (0 if own else 1, -statistics.fmean(own) if own else 0.0, contenders.index(name))
    return sorted(contenders, key=key)


def _label(candidate: Candidate, seed: int) -> str:
    return f"race {candidate.name} seed={seed}"


def run_race(context: SearchContext, rounds: Rounds, presets: str = PRESETS_RANKED) -> Optional[dict[str, Any]]:
    """Run what is missing of the race and return its record (also stored on the study), whose
    ``order`` lists every raced candidate, best first; None when there is nothing to race (fewer than
    two candidates, or no rounds)."""
    if not rounds:
        return None
    study = context.study
    candidates = choose_candidates(study, rounds[0][0], presets)
    none = next(candidate for candidate in candidates if candidate.kind == "none")
    contenders = {candidate.name: candidate for candidate in candidates if candidate.kind != "none"}
    if len(contenders) < 2:
        return None
    none_own = baseline_outcomes(study).get(NONE, {})
    # the search's own seed: each trial and the none baseline trained with it (common random numbers)
    gains = {name: ([candidate.search_value - none_own["value"]]
                    if none_own.get("state") == "complete" and candidate.search_value is not None else [])
             for name, candidate in contenders.items()}
    finished: dict[str, float] = dict(study.user_attrs.get(RACE_RUNS_ATTR) or {})

    def keep_run(outcome: RunOutcome) -> None:  # saved as each run ends: a killed driver loses no finished run
        if outcome.final is not None:
            finished[outcome.spec.label] = outcome.final
            study.set_user_attr(RACE_RUNS_ATTR, finished)

    seeds = race_seeds(context.request.seed, sum(count for _, count in rounds))
    order = list(contenders)
    rounds_record, failed, used = [], {}, 0
    for keep, count in rounds:
        racing = order[:keep]
        round_seeds = seeds[used:used + count]
        used += count
        specs = [RunSpec(role="race", label=_label(candidate, seed), policy=candidate.policy, seed=seed,
                         validate_on=VALIDATION_SPLIT, validate_each_epoch=False)
                 for candidate in [*(contenders[name] for name in racing), none] for seed in round_seeds
                 if _label(candidate, seed) not in finished]
        outcomes = run_specs(context, "race", specs, on_finished=keep_run)
        failed.update({label: outcome.error for label, outcome in outcomes.items() if outcome.state != "complete"})
        for seed in round_seeds:
            reference = finished.get(_label(none, seed))
            if reference is None:
                continue  # none's run failed: this seed pairs nothing
            for name in racing:
                value = finished.get(_label(contenders[name], seed))
                if value is not None:
                    gains[name].append(value - reference)
        order = rerank(racing, gains) + order[keep:]
        rounds_record.append({"keep": keep, "seeds": round_seeds, "racing": racing})
    record = {
        "split": VALIDATION_SPLIT, "rounds": rounds_record, "order": order,
        "candidates": [{"name": name, "kind": contenders[name].kind, "trial": contenders[name].trial,
                        "search_value": contenders[name].search_value, "gains": [round(g, 6) for g in gains[name]],
                        "mean_gain": round(statistics.fmean(gains[name]), 6) if gains[name] else None,
                        "n": len(gains[name])} for name in order],
        "runs": sum(len(round_["racing"]) + 1 for round_ in rounds_record for _ in round_["seeds"]),
        "failed_runs": failed, "seconds": round(context.stage_seconds.get("race", 0.0), 1),
    }
    study.set_user_attr(RACE_ATTR, record)
    _log(context, record)
    return record


def _log(context: SearchContext, record: dict) -> None:
    """One MLflow child run: each candidate's mean paired gain over none and its seeds."""
    from mlflow.entities import Metric

    metrics = [Metric(f"{row['name'].replace(' ', '_')}.{key}", float(row[key]), 0, 0)
               for row in record["candidates"] for key in ("mean_gain", "n") if row[key] is not None]
    log_stage_run(context, ROLE_RACE, record, metrics)
