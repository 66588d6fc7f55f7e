"""The study of one search: open or resume it (refusing another search's study), clean up after a
dead driver, and read the outcome (searched trials, baselines, the best trial, the Pareto front).

The Optuna study is the search's state: everything here reads or writes it, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import TrialState

from autoaug import __version__
from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.search.record_schema import (BASELINE_ATTR, DATA_FINGERPRINT_ATTR, DATA_SOURCE_ATTR, ERROR_ATTR,
                                          MAX_EPOCHS_ATTR, OBJECTIVES_ATTR, SAMPLER_ATTR, SCHEDULER_ATTR, SEED_ATTR,
                                          SPACE_HASH_ATTR, SPACE_NAME_ATTR, STALE_REASON, STATE_ATTR, TASK_ATTR)


def check_data_fingerprint(study, request, fingerprint: str) -> None:
    """Record the data's fingerprint on a new study; on resume, refuse data that changed since (a
    rewritten file at the same path, a plug-in that now makes other rows): trials trained on
    different data must not be ranked together."""
    source = f"{task_identity(request)} (data seed {request.data_seed})"
    recorded = study.user_attrs.get(DATA_FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(DATA_FINGERPRINT_ATTR, fingerprint)
        study.set_user_attr(DATA_SOURCE_ATTR, source)
    elif recorded != fingerprint:
        raise ParameterError(
            "name", f"{request.name}: this study was searched on other data (recorded "
            f"{study.user_attrs.get(DATA_SOURCE_ATTR, 'an earlier source')}, fingerprint {recorded[:12]}; now {source}, "
            f"fingerprint {fingerprint[:12]}); resume it with the same data or choose another --name (nothing was changed)")


def task_identity(request) -> str:
    """What the study records as its task: the plug-in with its options, or the resolved data path."""
    if request.task:
        options = json.dumps(request.task_options or {}, sort_keys=True)
        return f"task:{request.task}:{options}"
    return f"data:{Path(request.data).resolve()}"


def open_search_study(storage, request, space, objectives: int):
    """Create the study, or load it and check it is the same search (space, task, objective, length)."""
    directions = ["maximize"] * objectives
    identity = task_identity(request)
    expected = {SPACE_HASH_ATTR: space.hash, TASK_ATTR: identity, OBJECTIVES_ATTR: len(directions),
                MAX_EPOCHS_ATTR: request.max_epochs, "data_seed": request.data_seed,
                **({"model": request.model} if request.model else {})}
    try:
        study = optuna.load_study(study_name=request.name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=request.name, storage=storage, directions=directions)
        for key, value in {**expected, SPACE_NAME_ATTR: space.name, "space": space.canonical(),
                           SAMPLER_ATTR: request.sampler, SCHEDULER_ATTR: request.scheduler, SEED_ATTR: request.seed,
                           "package_version": __version__}.items():
            study.set_user_attr(key, value)
        return study
    recorded = {key: study.user_attrs.get(key) for key in expected}
    for key, value in expected.items():
        if recorded[key] != value:
            what = {"space_hash": f"search space (recorded {study.user_attrs.get('space_name')}, hash "
                                  f"{str(recorded[key])[:12]}; now {space.name}, hash {space.hash[:12]})",
                    "task": f"task/data (recorded {recorded[key]}; now {value})",
                    "objectives": "objective (nsga2 has two objectives, other samplers one)",
                    "max_epochs": f"--max-epochs (recorded {recorded[key]}; now {value})",
                    "data_seed": f"--data-seed (recorded {recorded[key]}; now {value})"}[key]
            raise ParameterError(
                "name", f"{request.name}: this study exists with a different {what}; resume it with the same "
                "settings or choose another --name (nothing was changed)")
    return study


def fail_stale_trials(study) -> int:
    """Mark trials left RUNNING by a driver that died as failed; returns how many.

    Only this driver runs the study (`exclusive`), so every RUNNING trial it finds was left by a dead
    one. Optuna has no public way to change a finished-or-abandoned trial's user attributes from
    outside its `Trial` object, so the study's storage is written directly (``Study._storage``,
    ``FrozenTrial._trial_id``); tests/test_search_stages.py::test_private_optuna_routes_of_the_study_still_exist
    fails if either goes away."""
    stale = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, STATE_ATTR, "failed")
        study._storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, STALE_REASON)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)




def all_failed_message(study) -> Optional[str]:
    """None while some searched trial finished; else the one line a search whose searched trials all
    failed ends with (it has nothing to rank or export): how many failed and the first trial's error,
    the one to fix first. The CLI prints it and exits 1."""
    searched = searched_trials(study)
    if not searched or any(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in searched):
        return None
    failed = sorted((trial for trial in searched if trial.state == TrialState.FAIL), key=lambda trial: trial.number)
    # a driver stopped mid-trial says nothing about the trials themselves: name a trial's own error first
    own = [trial for trial in failed if trial.user_attrs.get(ERROR_ATTR) != STALE_REASON] or failed
    first = own[0] if own else None
    reason = (first.user_attrs.get(ERROR_ATTR) or "no error recorded") if first else "no trial finished"
    where = f"trial {first.number}" if first else "the search"
    return (f"search {study.study_name}: all {len(searched)} searched trials failed, nothing to export; "
            f"first error ({where}): {' '.join(str(reason).split())}")


def searched_trials(study) -> list:
    return [trial for trial in study.get_trials(deepcopy=False) if BASELINE_ATTR not in trial.user_attrs]


def finished_count(study) -> int:
    return sum(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in searched_trials(study))


def baseline_outcomes(study) -> dict[str, dict]:
    """``{preset: {"state", "value", "reason"}}`` of the study's baselines (the latest try of each)."""
    outcomes: dict[str, dict] = {}
    for trial in study.get_trials(deepcopy=False):
        if BASELINE_ATTR in trial.user_attrs:
            outcomes[trial.user_attrs[BASELINE_ATTR]] = {
                "state": trial.user_attrs.get(STATE_ATTR, "failed"),
                "value": trial.values[0] if trial.values else None,
                "reason": trial.user_attrs.get(ERROR_ATTR)}
    return outcomes


def best_trial(study, number: Optional[int] = None):
    """The trial to export: ``number`` if given (must be complete), else the best full-length trial,
    searched or baseline (nsga2: `pareto_choice` of the searched trials' `pareto_front`)."""
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        matching = [trial for trial in trials if trial.number == number]
        if not matching:
            raise AutoaugInputError(f"--trial {number}: study {study.study_name} has no such trial (0..{len(trials) - 1})")
        if matching[0].state != TrialState.COMPLETE:
            raise AutoaugInputError(f"--trial {number}: trial is {matching[0].state.name.lower()}, only complete trials export")
        return matching[0]
    # Only trials that ran the full length compete (a trial stopped early by ASHA never wins on the value
    # of the epoch it was stopped at); baselines compete with the searched trials at the same budget.
    candidates = [trial for trial in trials if trial.state == TrialState.COMPLETE
                  and trial.user_attrs.get(STATE_ATTR, "complete") == "complete"]
    if not candidates:
        return None
    if len(study.directions) > 1:
        return pareto_choice(pareto_front(study))
    return max(candidates, key=lambda trial: (trial.values[0], -trial.number))


ROBUST_TOLERANCE = 0.02  # accuracy points a two-objective export may give up on robustness for clean accuracy


def pareto_front(study) -> list:
    """The Pareto front of (clean, robust) validation accuracy over searched, full-length trials;
    baselines are compared with it but never on it. Ordered by clean accuracy, best first."""
    trials = [trial for trial in searched_trials(study) if trial.state == TrialState.COMPLETE
              and trial.user_attrs.get(STATE_ATTR, "complete") == "complete" and trial.values]

    def dominates(a, b) -> bool:
        return all(x >= y for x, y in zip(a.values, b.values)) and any(x > y for x, y in zip(a.values, b.values))

    front = [trial for trial in trials if not any(dominates(other, trial) for other in trials)]
    return sorted(front, key=lambda trial: (-trial.values[0], -trial.values[1], trial.number))


def pareto_choice(front: list):
    """The export of a two-objective search: among front trials whose robust accuracy is within
    ``ROBUST_TOLERANCE`` of the front's best robust accuracy, the one with the best clean accuracy."""
    if not front:
        return None
    most_robust = max(trial.values[1] for trial in front)
    eligible = [trial for trial in front if trial.values[1] >= most_robust - ROBUST_TOLERANCE]
    return max(eligible, key=lambda trial: (trial.values[0], trial.values[1], -trial.number))
