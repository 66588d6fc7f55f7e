"""Confirmation: is the search's best policy really better than no augmentation?

A search picks its best trial from one seed each on the validation split — the maximum of many noisy
numbers, biased upwards. Before anything is exported the top-k searched policies, ``none`` and the best
preset (when the baselines ran) are retrained with S fresh seeds (never used by the search) at the
calibrated learning rate and length. When the search held out a confirm part of validation
(`PreparedTask.with_confirm_split`), these runs validate on it — examples selection never saw — else on
``val``; the test split stays untouched either way. Seeds pair the comparison: with the same seed
every candidate starts from the same initialisation and sees the same data order, so the per-seed
difference to ``none`` cancels most of the run-to-run noise.

The decision is `autoaug.search.verdict.decide`: a one-sided paired t-test per candidate (SD floored
at √2/n), Holm over every candidate, a minimum effect, winner = highest mean among the gains;
``"improves"``, ``"no-gain"`` (``none`` is exported) or ``"inconclusive"`` when runs the decision needs
failed (``none`` is exported, no claim is made; a resume re-runs the failed runs).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional

from autoaug.policy import Policy
from autoaug.search.record_schema import (METRIC, BASELINE_ATTR, CONFIRMATION_ATTR, CONFIRMATION_RUNS_ATTR, PARENT_TAG,
                                          POLICY_ATTR, ROLE_CONFIRMATION, ROLE_TAG, STATE_ATTR, STUDY_TAG, VERDICT_TAG,
                                          WINNER_TAG)
from autoaug.search.stages import RunOutcome, SearchContext, run_specs
from autoaug.search.trainable import RunSpec
from autoaug.search.verdict import IMPROVES, Rule, decide, sd_floor
from autoaug.trainers.prepared import CONFIRM_SPLIT, VALIDATION_SPLIT

CONFIRM_SEED_BASE = 10_000  # far from the seeds users and the search pick (0, 1, 2, ...)
NONE = "none"


@dataclass(frozen=True)
class Candidate:
    name: str  # "trial 12", "none", "preset moderate"
    kind: str  # searched / none / preset
    policy: dict
    trial: Optional[int] = None
    search_value: Optional[float] = None


def confirmation_seeds(search_seed: int, count: int) -> list[int]:
    return [CONFIRM_SEED_BASE + 100 * search_seed + index for index in range(count)]


def choose_candidates(study, top_k: int) -> list[Candidate]:
    """Top-k full-length searched trials (distinct policies), ``none``, and the best preset baseline."""
    from optuna.trial import TrialState

    trials = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE]
    searched = sorted((trial for trial in trials if BASELINE_ATTR not in trial.user_attrs
                       and trial.user_attrs.get(STATE_ATTR) == "complete" and POLICY_ATTR in trial.user_attrs),
                      key=lambda trial: (-trial.values[0], trial.number))
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for trial in searched:
        policy = _unseeded(trial.user_attrs[POLICY_ATTR])
        key = _policy_key(policy)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Candidate(f"trial {trial.number}", "searched", policy, trial.number, trial.values[0]))
        if len(chosen) == top_k:
            break
    chosen.append(Candidate(NONE, "none", Policy.load("none").to_dict()))
    presets = [trial for trial in trials if trial.user_attrs.get(BASELINE_ATTR) not in (None, NONE)]
    if presets:
        best = max(presets, key=lambda trial: (trial.values[0], -trial.number))
        name = best.user_attrs[BASELINE_ATTR]
        chosen.append(Candidate(f"preset {name}", "preset", _unseeded(best.user_attrs.get(POLICY_ATTR) or Policy.load(name).to_dict()),
                                best.number, best.values[0]))
    return chosen


def _unseeded(policy: dict) -> dict:
    """A trial's policy without the search's seed: each confirmation run seeds it with its own seed."""
    return {key: value for key, value in policy.items() if key != "seed"}


def _policy_key(policy: dict) -> str:
    stripped = {key: value for key, value in policy.items() if key not in ("name", "provenance", "seed", "description")}
    return json.dumps(stripped, sort_keys=True)


def judge(candidates: list[Candidate], values: dict[str, dict[int, float]], seeds: list[int], n_eval: int,
          rule: Rule = Rule(), split: str = VALIDATION_SPLIT) -> dict[str, Any]:
    """The confirmation's record (pure): per-candidate mean ± SE, paired difference to ``none`` ± SE, its
    one-sided p-value and adjusted p-value, then the winner and verdict of `verdict.decide`.
    ``n_eval``: examples of the split the runs validated on (``split``)."""
    names = [candidate.name for candidate in candidates]
    ordered = {name: values.get(name, {}) for name in [NONE, *[name for name in names if name != NONE]]}
    verdict = decide(ordered, NONE, seeds, n_eval, rule)
    results = {result.name: result for result in verdict.candidates}
    baseline = values.get(NONE, {})
    rows = []
    for candidate in candidates:
        own = values.get(candidate.name, {})
        scores = [own[seed] for seed in seeds if seed in own]
        paired = [own[seed] - baseline[seed] for seed in seeds if seed in own and seed in baseline]
        result = results.get(candidate.name)
        row = {
            "name": candidate.name, "kind": candidate.kind, "trial": candidate.trial,
            "search_value": candidate.search_value, "seeds": [seed for seed in seeds if seed in own],
            "values": [round(v, 6) for v in scores], "n": len(scores),
            "mean": _mean(scores), "se": _se(scores),
            "diff_vs_none": _mean(paired) if candidate.name != NONE else 0.0,
            "diff_se": (None if result is None or result.test.se is None else round(result.test.se, 6))
            if candidate.name != NONE else 0.0,
            "p_value": None if result is None else _round_p(result.test.p),
            "p_adjusted": None if result is None else _round_p(result.p_adjusted),
            "beats_none": bool(result is not None and result.gain and result.missing == 0),
        }
        if len(scores) < len(seeds):
            row["note"] = f"{len(scores)} of {len(seeds)} runs finished"
        if result is not None and result.in_contention:
            row["note"] += "; the finished runs do not rule it out, so the verdict waits for it"
        rows.append(row)
    winner = next(row for row in rows if row["name"] == (verdict.winner or NONE))
    policy = next(candidate.policy for candidate in candidates if candidate.name == winner["name"])
    return {
        "metric": METRIC, "split": split, "n_eval": n_eval, "seeds": list(seeds), "candidates": rows,
        "winner": winner["name"], "winner_trial": winner["trial"] if winner["kind"] != "none" else None,
        "winner_policy": policy, "verdict": verdict.verdict, "verdict_reason": verdict.reason,
        "rule": rule.text(), "alpha": rule.alpha, "min_effect": rule.min_effect, "correction": rule.procedure,
        "sd_floor": round(sd_floor(n_eval), 6),
    }


def _round_p(value: float) -> float:
    return float(f"{value:.4g}")


def _mean(values: list[float]) -> Optional[float]:
    return round(statistics.fmean(values), 6) if values else None


def _se(values: list[float]) -> Optional[float]:
    return round(statistics.stdev(values) / math.sqrt(len(values)), 6) if len(values) > 1 else None


def _label(candidate: Candidate, seed: int, split: str = VALIDATION_SPLIT) -> str:
    # the split is in the label: a finished run on val is never reused as a run on the confirm part
    return f"confirm {candidate.name} seed={seed}" + ("" if split == VALIDATION_SPLIT else f" on {split}")


def confirm(context: SearchContext, top_k: int, seed_count: int, rule: Rule = Rule()) -> dict[str, Any]:
    """Run what is missing of the confirmation and judge it; the record is stored on the study.

    The runs validate on the confirm part when the search carved one (`PreparedTask.with_confirm_split`),
    else on ``val``."""
    study = context.study
    split = CONFIRM_SPLIT if CONFIRM_SPLIT in context.prepared.splits else VALIDATION_SPLIT
    candidates = choose_candidates(study, top_k)
    seeds = confirmation_seeds(context.request.seed, seed_count)
    recorded = study.user_attrs.get(CONFIRMATION_ATTR)
    if recorded and [row["name"] for row in recorded["candidates"]] == [c.name for c in candidates] \
            and recorded["seeds"] == seeds and recorded.get("split", VALIDATION_SPLIT) == split \
            and recorded.get("rule") == rule.text() and recorded["verdict"] != "inconclusive":
        return recorded
    finished: dict[str, float] = dict(study.user_attrs.get(CONFIRMATION_RUNS_ATTR) or {})

    def keep(outcome: RunOutcome) -> None:  # saved as each run ends: a killed driver loses no finished run
        if outcome.final is not None:
            finished[outcome.spec.label] = outcome.final
            study.set_user_attr(CONFIRMATION_RUNS_ATTR, finished)

    specs = [RunSpec(role="confirmation", label=_label(candidate, seed, split), policy=candidate.policy, seed=seed,
                     validate_on=split)
             for candidate in candidates for seed in seeds if _label(candidate, seed, split) not in finished]
    outcomes = run_specs(context, "confirmation", specs, on_finished=keep)
    values = {candidate.name: {seed: finished[_label(candidate, seed, split)] for seed in seeds
                               if _label(candidate, seed, split) in finished}
              for candidate in candidates}
    record = judge(candidates, values, seeds, len(context.prepared.splits[split]), rule, split)
    record["epochs"] = context.settings.max_epochs
    record["learning_rate"] = context.settings.learning_rate
    record["failed_runs"] = {label: outcome.error for label, outcome in outcomes.items() if outcome.state != "complete"}
    record["seconds"] = round(context.stage_seconds.get("confirmation", 0.0), 1)
    study.set_user_attr(CONFIRMATION_ATTR, record)
    _log(context, record)
    return record


def _log(context: SearchContext, record: dict) -> None:
    from mlflow.entities import Metric, Param

    client = context.client
    run = client.create_run(context.experiment_id, run_name="confirmation",
                            tags={PARENT_TAG: context.parent, ROLE_TAG: ROLE_CONFIRMATION, STUDY_TAG: context.request.name,
                                  VERDICT_TAG: record["verdict"], WINNER_TAG: record["winner"]})
    run_id = run.info.run_id
    metrics = []
    for row in record["candidates"]:
        key = row["name"].replace(" ", "_")
        for name in ("mean", "se", "diff_vs_none", "diff_se", "p_value", "p_adjusted"):
            if row[name] is not None:
                metrics.append(Metric(f"{key}.{name}", float(row[name]), 0, 0))
    params = [Param("seeds", ",".join(map(str, record["seeds"]))), Param("winner", record["winner"]),
              Param("verdict", record["verdict"]), Param("epochs", str(record["epochs"])),
              Param("learning_rate", str(record["learning_rate"])), Param("split", record["split"]),
              Param("min_effect", str(record["min_effect"])), Param("alpha", str(record["alpha"])),
              Param("correction", record["correction"])]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_text(run_id, json.dumps(record, indent=2, sort_keys=True), "confirmation.json")
    client.set_terminated(run_id, "FINISHED")
    client.set_tag(context.parent, VERDICT_TAG, record["verdict"])
