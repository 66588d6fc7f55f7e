"""`run_search`: one resumable policy search, what `autoaug search` runs. The only place that wires
the layers of `autoaug.search` together (docs/ARCHITECTURE.md, "The search"):

- `request`: what was asked, validated; `samplers`: the sampler registry;
- `study`: the Optuna study (open or resume, stale trials, the best trial); `cluster`: Ray;
- `stages`: the context every stage shares and its one `Tuner` builder; the stages themselves:
  `calibration`, `baselines`, `screen`, `searched` (or `pbt`), `race`, `confirmation`;
- `mlflow_runs` (parent run, orphans) and `records` (trial runs, progress); `export`; `summary`.

One study name is one search. The Optuna study (in ``--storage``) is the search state: finished
trials live there, so running the same command again resumes — trials that were running when a
driver died (Optuna leaves them RUNNING: its heartbeat does not cover ask/tell) are marked failed
and replaced, MLflow child runs it left open are closed (KILLED, or FINISHED when Optuna already
held the trial finished), and the search stops at exactly ``trials`` finished search trials. A study
created with another space or task is refused, nothing overwritten; so is a study another live
driver is running (`autoaug.search.exclusive`). A failed trial (it raised, trained into NaN, ran out
of memory, or its worker died) is recorded failed with its reason in Optuna and MLflow, or retried
``--max-failures`` times first; a search whose searched trials all fail ends with that error.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from autoaug.errors import ParameterError
from autoaug.search.baselines import run_baselines
from autoaug.search.calibration import ImageSignalMissing, calibrate, refusal_message, reuse_recorded
from autoaug.search.cluster import check_address, resolve_gpus, runtime_env, slot_count, start_ray
from autoaug.search.confirmation import PRESETS_RANKED, confirm
from autoaug.search.exclusive import study_lock
from autoaug.search.export import export_search
from autoaug.search.mlflow_runs import close_orphan_runs, parent_run
from autoaug.search.race import parse_rounds, run_race
from autoaug.search.record_schema import CALIBRATION_ATTR, CONFIRM_SPLIT_ATTR, RESULT_TAG, SEARCH_SECONDS, experiment_name
from autoaug.search.request import SearchRequest
from autoaug.search.samplers import sampler_kind
from autoaug.search.screen import run_screen
from autoaug.search.searched import run_searched_trials
from autoaug.search.space import PbaScheduleSpace, SearchSpace, load_space
from autoaug.search.stages import SearchContext
from autoaug.search.study import (all_failed_message, best_trial, check_data_fingerprint, fail_stale_trials,
                                  open_search_study)
from autoaug.search.summary import public_confirmation, summarize
from autoaug.search.trainable import TrialSettings
from autoaug.storage import Locations, optuna_storage, prepare_tracking, resolve, tracking_client
from autoaug.trainers.train import DEFAULT_LEARNING_RATE, prepare_task

__all__ = ["SearchRequest", "run_search"]


def run_search(request: SearchRequest, console=None) -> dict[str, Any]:
    """Run (or resume) a search; returns the JSON result of the CLI contract (docs/ARCHITECTURE.md).
    When every searched trial failed, ``result["error"]`` is the one-line reason (the first trial's
    error) and nothing is exported; it is None otherwise.

    Stages, each resumable from the study: calibration (learning rate, trial length, image check),
    baselines, searched trials (or PBT), confirmation of the best candidates on fresh seeds, export."""
    request.validate()
    space = load_space(request.space)
    _check_space_fits(request, space, console)
    workdir_existed = Path(request.workdir).exists()
    locations = resolve(request.workdir, request.storage, request.tracking_uri)
    try:
        check_address(request.address)  # before the study or the experiment exists: nothing half-written
        # The driver reads, tokenises and stacks the data once; workers get the result, never a path to
        # re-read (a relative path, or a file edited mid-search, cannot change what later trials train on).
        # Before any store is opened: bad data or a bad --model must leave the workdir untouched.
        prepared = prepare_task(request.task, request.data, request.data_seed, request.task_options, model=request.model)
        if request.confirm and request.confirm_holdout and request.objectives == 1:
            # the verdict is made on examples that chose nothing: calibration, trials and their ranking
            # validate on the rest (same data seed, same carve: a resumed search confirms on the same part)
            prepared = prepared.with_confirm_split(request.confirm_fraction, seed=request.data_seed)
        storage = optuna_storage(locations.optuna_url)
    except BaseException:
        if not workdir_existed:  # a refused search leaves no empty --workdir behind
            _remove_if_empty(locations.workdir)
        raise
    # One live driver per study (`exclusive`): a second one is refused before it reads or changes
    # the study, so it can never mistake the first one's running trials for a dead driver's.
    with study_lock(locations.optuna_url, request.name):
        return _run_locked(request, space, locations, storage, prepared, console)


def _calibration_rates(request: SearchRequest) -> tuple[float, ...]:
    """The rates calibration tries. ``--learning-rate`` fixes the rate: calibration runs only it (trial
    length, image check), so the trials, the record and `train --from-search` all use the rate the
    trials ran at."""
    return (request.learning_rate,) if request.learning_rate else tuple(request.learning_rates)


def _check_confirm_split(study, prepared) -> Optional[dict]:
    """The held-out confirm part (fraction, seed, sizes), recorded on the study when it is first carved;
    a resume that would carve another part (a changed --confirm-fraction or holdout setting) is
    refused: the finished runs on one part cannot be judged with runs on another."""
    record = prepared.confirm_record
    current = None if record is None else {key: record[key] for key in ("fraction", "seed", "val", "confirm")}
    recorded = study.user_attrs.get(CONFIRM_SPLIT_ATTR, "unset")
    if recorded == "unset":
        study.set_user_attr(CONFIRM_SPLIT_ATTR, current)
    elif recorded != current:
        def describe(split):
            return "no held-out part" if split is None else f"a held-out part of {split['fraction']:g} ({split['confirm']} examples)"
        raise ParameterError("name", f"{study.study_name}: this search confirms on {describe(recorded)}, the command asks "
                                f"for {describe(current)}; run it as it started (--confirm-fraction / --confirm-holdout) "
                                "or under a new --name")
    return current


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty folder: anything written there stays
    except OSError:
        pass


def export_and_summarize(study, request: SearchRequest, locations: Locations, experiment_id: str, cleaned: int,
                         failure: Optional[str]) -> dict[str, Any]:
    """A finished search's export and its JSON result (`summarize`), from one `best_trial`: it scans
    every trial (a Pareto front with two objectives), and the study does not change between the two."""
    best = best_trial(study)
    exported = export_search(study, request.name, locations.exports_dir, export=failure is None, best=best)
    return summarize(study, request, locations, experiment_id, cleaned, exported, best=best)


def _check_space_fits(request: SearchRequest, space: SearchSpace, console) -> None:
    """The scheduler and sampler accept this space (before anything is written)."""
    if request.scheduler == "pbt" and not isinstance(space.model, PbaScheduleSpace):
        raise ParameterError("scheduler", f"pbt needs a pba_schedule space (e.g. --space pba_schedule), got {space.name} ({space.kind})")
    if isinstance(space.model, PbaScheduleSpace) and request.scheduler != "pbt":
        raise ParameterError("space", f"{space.name} is a pba_schedule space: run it with --scheduler pbt")
    sampler_kind(request.sampler).check(space, console)


def _run_locked(request: SearchRequest, space: SearchSpace, locations: Locations, storage, prepared,
                console) -> dict[str, Any]:
    """`run_search` once this driver holds the study."""
    study = open_search_study(storage, request, space, request.objectives)
    check_data_fingerprint(study, request, prepared.fingerprint)
    confirm_split = _check_confirm_split(study, prepared)
    if request.calibrate:  # a resume with other calibration settings is refused before Ray and MLflow start
        reuse_recorded(study.user_attrs.get(CALIBRATION_ATTR), _calibration_rates(request), request.max_epochs,
                       len(study.get_trials(deepcopy=False)), request.name)
    cleaned = fail_stale_trials(study)
    experiment_id = prepare_tracking(locations.tracking_uri, locations.artifact_root, experiment_name(request.name))
    start_ray(request.address, runtime_env(request), prepared)  # a local Ray's object store fits the data
    resolve_gpus(request, console)  # --gpus-per-trial not given: 1 per trial when the cluster has GPUs

    # its calls retry with backoff while the tracking store is briefly unavailable (a restarting server)
    client = tracking_client(locations.tracking_uri)
    parent = parent_run(client, experiment_id, request, space, locations)
    orphans = close_orphan_runs(client, experiment_id, parent, study)
    started = time.perf_counter()
    settings = TrialSettings(
        search_space=space, seed=request.seed, max_epochs=request.max_epochs,
        learning_rate=request.learning_rate or DEFAULT_LEARNING_RATE,
        report_robust=request.objectives > 1, checkpoint_every_epoch=request.scheduler == "pbt",
        threads=max(1, int(request.cpus_per_trial)), accelerator="gpu" if request.gpus_per_trial > 0 else "cpu",
    )
    context = SearchContext(request, study, storage, space, settings, prepared, locations, client, experiment_id,
                            parent, console)
    calibration = confirmation = screen = race = None
    status = "FAILED"
    try:
        if request.calibrate:
            calibration = calibrate(context, _calibration_rates(request), request.max_epochs)
            if not calibration["uses_images"] and not request.force:
                raise ImageSignalMissing(refusal_message(calibration))
            context = context.with_settings(learning_rate=request.learning_rate or calibration["learning_rate"],
                                            max_epochs=calibration["trial_epochs"])
        if request.baselines:
            run_baselines(context)
        if request.screen and request.scheduler != "pbt":
            screen, narrowed = run_screen(context)
            # the sampler searches combinations of the ops the screen kept (same parameter names, same study)
            context = replace(context, space=narrowed).with_settings(search_space=narrowed)
        if request.scheduler == "pbt":
            from autoaug.search.pbt import run_pbt

            run_pbt(context)
        else:
            run_searched_trials(context)
        failure = all_failed_message(study)
        # a two-objective search exports its Pareto front; a search without a finished trial has nothing to confirm
        if request.confirm and request.objectives == 1 and failure is None:
            # presets compete with the trials for the top-k places on their selection score (no extra runs);
            # the race re-ranks the best of them on more seeds, the confirmation tests its order
            race = run_race(context, parse_rounds(request.race), presets=PRESETS_RANKED)
            confirmation = confirm(context, request.confirm_top_k, request.confirm_seeds, presets=PRESETS_RANKED,
                                   race=race)
        status = "FINISHED" if failure is None else "FAILED"
    finally:
        client.set_terminated(parent, status)
    result = export_and_summarize(study, request, locations, experiment_id, cleaned, failure)
    result["error"] = failure
    result["n_orphan_runs_marked_killed"] = orphans
    result["seconds"] = time.perf_counter() - started
    result["stage_seconds"] = {stage: round(seconds, 1) for stage, seconds in context.stage_seconds.items()}
    result["cost"] = context.accounting.summary(context.stage_seconds, slot_count(request), request.cpus_per_trial)
    result["calibration"] = calibration
    result["confirmation"] = public_confirmation(confirmation)
    result["confirm_split"] = confirm_split
    result["screen"] = screen
    result["race"] = race
    result["learning_rate"] = context.settings.learning_rate
    result["trial_epochs"] = context.settings.max_epochs
    client.log_metric(parent, SEARCH_SECONDS, result["seconds"])
    if result["best_value"] is not None:  # named for what it is: selection's maximum, not the answer
        client.log_metric(parent, "best_single_seed_val_accuracy", result["best_value"])
    answer = result.get("result")
    if answer is not None:  # the search's answer on the parent run: the exported policy and its measured score
        client.set_tag(parent, RESULT_TAG, answer["policy"])
        if answer.get("value") is not None:
            client.log_metric(parent, "result_val_accuracy", answer["value"])
    return result
