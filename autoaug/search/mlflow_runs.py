"""The search's MLflow runs that the driver opens and closes itself: the parent run (one per search,
reused on resume) and the clean-up of child runs a dead driver left open. Trial runs are written by
`records.MlflowRecorder`; calibration and confirmation log their own child runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Param
from optuna.trial import TrialState

from autoaug import __version__
from autoaug.search.record_schema import (ORPHAN_REASON, ERROR_TAG, PARENT_TAG, RESUMED_TAG, ROLE_SEARCH, ROLE_TAG, ROLE_TRIAL,
                                          STATE_ATTR, STATE_TAG, STUDY_TAG, TRIAL_TAG, runs_filter)
from autoaug.storage import redact



def close_orphan_runs(client, experiment_id: str, parent: str, study) -> int:
    """Close the child runs a dead driver left RUNNING (trials, calibration, confirmation); returns how
    many were marked KILLED. Only this driver runs the study (`exclusive`), so every child run still
    open when it starts was left by a driver that died. Tune tells Optuna that a trial ended before
    the MLflow run is closed: a run whose trial Optuna holds as finished is closed FINISHED with that
    trial's state (its metrics were all logged); every other orphan is KILLED, with the reason."""
    finished = {f"trial {trial.number}": trial for trial in study.get_trials(deepcopy=False)
                if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    orphans = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}' "
                                                                "and attributes.status = 'RUNNING'", max_results=5000)
    killed = 0
    for run in orphans:
        run_id, tags = run.info.run_id, run.data.tags
        trial = finished.get(tags.get(TRIAL_TAG)) if tags.get(ROLE_TAG) == ROLE_TRIAL else None
        if trial is not None:
            client.set_tag(run_id, STATE_TAG, trial.user_attrs.get(STATE_ATTR, "complete"))
            client.set_terminated(run_id, "FINISHED")
            continue
        client.set_tag(run_id, STATE_TAG, "killed")
        client.set_tag(run_id, ERROR_TAG, ORPHAN_REASON)
        client.set_terminated(run_id, "KILLED")
        killed += 1
    return killed


def parent_run(client, experiment_id: str, request, space, locations) -> str:
    """The search's parent MLflow run: reused on resume, created (with the space file) otherwise."""
    runs = client.search_runs([experiment_id], filter_string=runs_filter(ROLE_SEARCH, request.name),
                              max_results=1)
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, RESUMED_TAG, "true")
        return run_id
    run = client.create_run(experiment_id, run_name=f"search {request.name}",
                            tags={ROLE_TAG: ROLE_SEARCH, STUDY_TAG: request.name})
    run_id = run.info.run_id
    params = {"space": space.name, "space_hash": space.hash, "sampler": request.sampler,
              "scheduler": request.scheduler, "trials": request.trials, "seed": request.seed,
              "max_epochs": request.max_epochs, "task": request.task or "", "data": request.data or "",
              "cpus_per_trial": request.cpus_per_trial, "gpus_per_trial": request.gpus_per_trial,
              "optuna_storage": redact(locations.optuna_url), "package_version": __version__}
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    client.log_text(run_id, json.dumps(space.canonical(), indent=2, sort_keys=True), f"search_space/{space.name}.json")
    if Path(str(request.space)).is_file():
        client.log_artifact(run_id, str(request.space), "search_space")
    return run_id


def log_stage_run(context, role: str, record: dict, metrics=(), params=(), tags=None) -> str:
    """One finished MLflow child run of the search's parent for a stage that decides from many runs
    (race, confirmation): ``metrics`` and ``params`` (MLflow entities), the whole ``record`` as
    ``<role>.json``, and ``tags`` beside the parent, role and study ones. Returns the run id."""
    client = context.client
    run = client.create_run(context.experiment_id, run_name=role,
                            tags={PARENT_TAG: context.parent, ROLE_TAG: role, STUDY_TAG: context.request.name,
                                  **(tags or {})})
    run_id = run.info.run_id
    client.log_batch(run_id, metrics=list(metrics), params=list(params))
    client.log_text(run_id, json.dumps(record, indent=2, sort_keys=True), f"{role}.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id
