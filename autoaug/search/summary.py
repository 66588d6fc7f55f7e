"""The JSON result of `autoaug search` (the CLI contract's keys): counts, the best trial, baselines,
where the records and the exported policy are. Reads the study; writes nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from optuna.trial import TrialState

from autoaug.search.study import baseline_outcomes, best_trial, searched_trials
from autoaug.search.record_schema import BASELINE_ATTR, STATE_ATTR
from autoaug.storage import redact


def summarize(study, request, locations, experiment_id: str, cleaned: int, exported: dict[str, Any]) -> dict[str, Any]:
    """The result; ``exported`` is what `export.export_search` wrote (``best_policy_path`` None when
    every searched trial failed: no best trial then)."""
    searched = searched_trials(study)
    states = [trial.user_attrs.get(STATE_ATTR) for trial in searched]
    best = best_trial(study) if exported.get("best_policy_path") else None
    baselines = {trial.user_attrs[BASELINE_ATTR]: (trial.values[0] if trial.values else None)
                 for trial in study.get_trials(deepcopy=False) if BASELINE_ATTR in trial.user_attrs}
    return {
        "study": request.name,
        "best_value": best.values[0] if best is not None else None,
        "best_trial": best.number if best is not None else None,
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
        **{key: value for key, value in exported.items() if key != "best_policy_path"},
    }


def public_confirmation(record: Optional[dict]) -> Optional[dict]:
    """The confirmation as the JSON result shows it (the winner's policy is in the exported file)."""
    if record is None:
        return None
    return {key: value for key, value in record.items() if key != "winner_policy"}
