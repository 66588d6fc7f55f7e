"""The JSON result of `autoaug search` (the CLI contract's keys): counts, the best trial, baselines,
where the records and the exported policy are. Reads the study; writes nothing.

Two different numbers, kept apart on purpose:

- ``best_value`` / ``best_trial``: the highest single-seed validation accuracy among full-length
  trials — what the search *selected on*, the maximum of many noisy numbers and so biased upwards.
  Kept for the contract; never the search's answer when a confirmation ran.
- ``result``: what the search *concluded* and exported — the confirmation's winner (possibly
  ``none``), its mean over the confirmation seeds and the verdict; without a confirmation, the best
  trial with its single-seed value (and ``verdict`` null: nothing was confirmed).
"""

from __future__ import annotations

from typing import Any, Optional

from optuna.trial import TrialState

from autoaug.search.study import baseline_outcomes, searched_trials
from autoaug.search.record_schema import BASELINE_ATTR, CONFIRMATION_ATTR, METRIC, RELIANCE_ATTR, STATE_ATTR
from autoaug.storage import redact


def summarize(study, request, locations, experiment_id: str, cleaned: int, exported: dict[str, Any], *,
              best) -> dict[str, Any]:
    """The result; ``exported`` is what `export.export_search` wrote (``best_policy_path`` None when
    every searched trial failed: no best trial then). ``best`` is `autoaug.search.study.best_trial` of
    the study, the same trial the export was given (computed once per search)."""
    searched = searched_trials(study)
    states = [trial.user_attrs.get(STATE_ATTR) for trial in searched]
    best = best if exported.get("best_policy_path") else None
    baselines = {trial.user_attrs[BASELINE_ATTR]: (trial.values[0] if trial.values else None)
                 for trial in study.get_trials(deepcopy=False) if BASELINE_ATTR in trial.user_attrs}
    return {
        "study": request.name,
        "result": search_result(study, best, exported.get("best_policy_path")),
        "best_value": best.values[0] if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_value_note": BEST_VALUE_NOTE,
        "n_complete": sum(trial.state == TrialState.COMPLETE and state != "pruned" for trial, state in zip(searched, states)),
        "n_pruned": sum(state == "pruned" or trial.state == TrialState.PRUNED for trial, state in zip(searched, states)),
        "n_failed": sum(trial.state == TrialState.FAIL for trial in searched),
        "n_stale_marked_failed": cleaned,
        "best_policy_path": exported.get("best_policy_path"),
        "mlflow_experiment_id": experiment_id,
        "tracking_uri": redact(locations.tracking_uri),
        "optuna_storage": redact(locations.optuna_url),
        "workdir": str(locations.workdir),
        "sampler": request.sampler,
        "scheduler": request.scheduler,
        "baselines": baselines,
        "baseline_outcomes": baseline_outcomes(study),
        # how much each finished model leans on each modality (val accuracy with images grey / question
        # words masked, beside its clean val accuracy): a policy that makes the model ignore one shows here
        "modality_reliance": {name: {"val_accuracy": trial.values[0], **trial.user_attrs[RELIANCE_ATTR]}
                              for name, trial in _named_trials(study).items()
                              if trial.user_attrs.get(RELIANCE_ATTR) and trial.values},
        **{key: value for key, value in exported.items() if key != "best_policy_path"},
    }


def candidate_name(trial) -> str:
    """A trial by the name the confirmation uses: "none", "preset moderate", "trial 7"."""
    baseline = trial.user_attrs.get(BASELINE_ATTR)
    return f"trial {trial.number}" if baseline is None else baseline if baseline == "none" else f"preset {baseline}"


def _named_trials(study) -> dict[str, Any]:
    """Finished trials by `candidate_name`."""
    return {candidate_name(trial): trial for trial in study.get_trials(deepcopy=False)
            if trial.state == TrialState.COMPLETE}


BEST_VALUE_NOTE = ("best_value is the highest single-seed val_accuracy among full-length trials (selection, biased "
                   "upwards), not the search's result; see result")


def search_result(study, best, policy_path: Optional[str]) -> Optional[dict[str, Any]]:
    """What the search exported and why: the policy (``"none"``, ``"trial 7"``, ``"preset moderate"``),
    its trial number, the value it is judged by and how that value was measured, and the verdict.

    With a confirmation on the study it is the confirmation's winner — the same record `export_best`
    exports — whatever trial had the best single-seed value; without one, the best trial on its one
    search seed. None when nothing was exported (every searched trial failed)."""
    if policy_path is None:
        return None
    record = study.user_attrs.get(CONFIRMATION_ATTR)
    if record is not None:
        winner = next(row for row in record["candidates"] if row["name"] == record["winner"])
        return {
            "policy": record["winner"], "trial": record.get("winner_trial"), "verdict": record["verdict"],
            "verdict_reason": record.get("verdict_reason"),
            "metric": METRIC, "value": winner["mean"], "se": winner["se"],
            "diff_vs_none": winner["diff_vs_none"], "diff_se": winner["diff_se"],
            "p_adjusted": winner.get("p_adjusted"),
            "measured_on": f"mean over {len(record['seeds'])} confirmation seeds the search never used "
                           f"({record.get('split', 'val')} split)",
            "policy_path": policy_path,
        }
    return {
        "policy": candidate_name(best), "trial": best.number, "verdict": None, "verdict_reason": None, "metric": METRIC,
        "value": best.values[0], "se": None, "diff_vs_none": None, "diff_se": None, "p_adjusted": None,
        "measured_on": "one search seed (not confirmed: the best of many noisy values, biased upwards)",
        "policy_path": policy_path,
    }


def public_confirmation(record: Optional[dict]) -> Optional[dict]:
    """The confirmation as the JSON result shows it (the winner's policy is in the exported file)."""
    if record is None:
        return None
    return {key: value for key, value in record.items() if key != "winner_policy"}
