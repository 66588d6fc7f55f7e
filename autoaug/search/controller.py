"""`run_search`: one resumable policy search (DESIGN §7), what `autoaug search` runs.

One study name is one search. The Optuna study (in ``--storage``) is the search state: finished
trials live there, so running the same command again resumes — trials that were running when a
driver died (Optuna leaves them RUNNING: its heartbeat does not cover ask/tell) are marked failed
and replaced, MLflow child runs it left open are closed (KILLED, or FINISHED when Optuna already
held the trial finished), and the search stops at exactly ``trials`` finished search trials. A study
created with another space or task is refused, nothing overwritten; so is a study another live
driver is running (`autoaug.search.exclusive`). A failed trial (it raised, trained into NaN, ran out
of memory, or its worker died) is recorded failed with its reason in Optuna and MLflow, or retried
``--max-failures`` times first; a search whose searched trials all fail ends with that error.

Ray Tune runs the trials (`autoaug.search.trainable.proxy_trial`) with fractional resources; the
Optuna sampler proposes policies through Ray's `OptunaSearch` (define-by-run); ASHA stops weak trials
on clean validation accuracy; ``pbt`` runs Population Based Training over a ``pba_schedule`` space
instead (Ray refuses a searcher together with PBT). MLflow gets a parent run per search and a child
run per trial, written from the driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autoaug import __version__
from autoaug.errors import AutoaugInputError
from autoaug.policy import PRESETS, Policy
from autoaug.search.records import (BASELINE_ATTR, ERROR_ATTR, POLICY_ATTR, STATE_ATTR, MlflowRecorder,
                                    RecordingOptunaSearch, SearchProgress, error_reason)
from autoaug.search.space import PbaScheduleSpace, SearchSpace, load_space
from autoaug.search.calibration import DEFAULT_LEARNING_RATES, ImageSignalMissing, calibrate, refusal_message
from autoaug.search.confirmation import confirm
from autoaug.search.exclusive import study_lock
from autoaug.search.stages import METRIC, ROBUST_METRIC, SearchContext, fit_quietly, slot_count
from autoaug.search.trainable import BASELINE_KEY, TrialSettings
from autoaug.storage import Locations, optuna_storage, prepare_tracking, redact, resolve, tracking_client

SAMPLERS = ("tpe", "random", "cmaes", "nsga2", "grid")
SCHEDULERS = ("asha", "pbt", "none")
BASELINES = ("none", "conservative", "moderate", "aggressive", "trivial", "randaugment")


@dataclass
class SearchRequest:
    """What `autoaug search` was asked (validated by `validate`)."""

    space: str
    name: str
    task: Optional[str] = None
    data: Optional[str] = None
    trials: int = 24
    sampler: str = "tpe"
    scheduler: str = "asha"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: Optional[str] = None
    workdir: str = "autoaug-runs"
    storage: Optional[str] = None
    tracking_uri: Optional[str] = None
    seed: int = 0
    max_epochs: Optional[int] = None  # None: the training default; with calibration, the longest trial considered
    baselines: bool = True
    task_options: Optional[dict] = None
    data_seed: int = 0
    learning_rate: Optional[float] = None  # None: calibrated (or the training default without calibration)
    calibrate: bool = True
    learning_rates: tuple = DEFAULT_LEARNING_RATES
    force: bool = False
    confirm: bool = True
    confirm_top_k: int = 3
    confirm_seeds: int = 3
    reuse_workers: bool = True
    model: Optional[str] = None  # --model: None is the built-in tiny VLM (autoaug.trainers.hf_vlm)
    max_failures: int = 0  # --max-failures: retries of a trial that failed (worker lost, error) before it counts failed

    def validate(self) -> None:
        if (self.task is None) == (self.data is None):
            raise AutoaugInputError("give exactly one of --task NAME or --data PATH")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise AutoaugInputError(f"--trials: expected a positive integer, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise AutoaugInputError(f"--sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise AutoaugInputError(f"--scheduler: {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not 0 < self.cpus_per_trial <= 256 or (self.cpus_per_trial > 1 and self.cpus_per_trial != int(self.cpus_per_trial)):
            raise AutoaugInputError(f"--cpus-per-trial: expected a fraction in (0, 1] or a whole number, got {self.cpus_per_trial}")
        if not 0 <= self.gpus_per_trial <= 64:
            raise AutoaugInputError(f"--gpus-per-trial: expected a number >= 0, got {self.gpus_per_trial}")
        if self.max_epochs is None:
            from autoaug.trainers.train import DEFAULT_MAX_EPOCHS

            self.max_epochs = DEFAULT_MAX_EPOCHS
        if not isinstance(self.max_epochs, int) or self.max_epochs < 1:
            raise AutoaugInputError(f"--max-epochs: expected a positive integer, got {self.max_epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise AutoaugInputError(f"--learning-rate: expected a positive number, got {self.learning_rate}")
        if not self.learning_rates or not all(isinstance(rate, (int, float)) and rate > 0 for rate in self.learning_rates):
            raise AutoaugInputError(f"--learning-rates: expected positive numbers, got {list(self.learning_rates)}")
        if self.confirm and (self.confirm_top_k < 1 or self.confirm_seeds < 2):
            raise AutoaugInputError(f"--confirm-top-k / --confirm-seeds: expected >= 1 candidate and >= 2 seeds "
                                    f"(a standard error needs two), got {self.confirm_top_k} and {self.confirm_seeds}")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise AutoaugInputError(f"--max-failures: expected a non-negative integer, got {self.max_failures}")
        if self.data_seed < 0:
            raise AutoaugInputError(f"--data-seed: expected a non-negative integer, got {self.data_seed}")
        if not self.name or "/" in self.name:
            raise AutoaugInputError(f"--name: expected a study name without '/', got {self.name!r}")


def run_search(request: SearchRequest, console=None) -> dict[str, Any]:
    """Run (or resume) a search; returns the JSON result of DESIGN §11. When every searched trial
    failed, ``result["error"]`` is the one-line reason (the first trial's error) and nothing is
    exported; it is None otherwise.

    Stages, each resumable from the study: calibration (learning rate, trial length, image check),
    baselines, searched trials (or PBT), confirmation of the best candidates on fresh seeds, export."""
    request.validate()
    space = load_space(request.space)
    if request.scheduler == "pbt" and not isinstance(space.model, PbaScheduleSpace):
        raise AutoaugInputError(f"--scheduler pbt needs a pba_schedule space (e.g. --space pba_schedule), got {space.name} ({space.kind})")
    if isinstance(space.model, PbaScheduleSpace) and request.scheduler != "pbt":
        raise AutoaugInputError(f"--space {space.name} is a pba_schedule space: run it with --scheduler pbt")
    if request.sampler == "grid":
        space.grid()  # fails clearly unless it is a randaugment space
    _check_cmaes(request, space, console)
    locations = resolve(request.workdir, request.storage, request.tracking_uri)
    _check_address(request.address)  # before the study or the experiment exists: nothing half-written
    # The driver reads, tokenises and stacks the data once; workers get the result, never a path to
    # re-read (a relative path, or a file edited mid-search, cannot change what later trials train on).
    # Before any store is opened: bad data or a bad --model must leave the workdir untouched.
    prepared = _prepare(request)
    storage = optuna_storage(locations.optuna_url)
    # One live driver per study (`exclusive`): a second one is refused before it reads or changes
    # the study, so it can never mistake the first one's running trials for a dead driver's.
    with study_lock(locations.optuna_url, request.name):
        return _run_locked(request, space, locations, storage, prepared, console)


def _run_locked(request: SearchRequest, space: SearchSpace, locations: Locations, storage, prepared,
                console) -> dict[str, Any]:
    """`run_search` once this driver holds the study."""
    study = _open_study(storage, request, space, _task_identity(request))
    _check_data_fingerprint(study, request, prepared.fingerprint)
    cleaned = _fail_stale_trials(study)
    experiment_id = prepare_tracking(locations.tracking_uri, locations.artifact_root, f"autoaug-{request.name}")
    _start_ray(request.address, _runtime_env(request))

    # its calls retry with backoff while the tracking store is briefly unavailable (a restarting server)
    client = tracking_client(locations.tracking_uri)
    parent = _parent_run(client, experiment_id, request, space, locations)
    orphans = _close_orphan_runs(client, experiment_id, parent, study)
    started = time.perf_counter()
    from autoaug.trainers.train import DEFAULT_LEARNING_RATE

    settings = TrialSettings(
        search_space=space, seed=request.seed, max_epochs=request.max_epochs,
        learning_rate=request.learning_rate or DEFAULT_LEARNING_RATE,
        report_robust=request.sampler == "nsga2", checkpoint_every_epoch=request.scheduler == "pbt",
        threads=max(1, int(request.cpus_per_trial)), accelerator="gpu" if request.gpus_per_trial > 0 else "cpu",
    )
    context = SearchContext(request, study, space, settings, prepared, locations, client, experiment_id, parent, console)
    calibration = confirmation = None
    status = "FAILED"
    try:
        if request.calibrate:
            calibration = calibrate(context, tuple(request.learning_rates), request.max_epochs)
            if not calibration["uses_images"] and not request.force:
                raise ImageSignalMissing(refusal_message(calibration))
            context = context.with_settings(learning_rate=request.learning_rate or calibration["learning_rate"],
                                            max_epochs=calibration["trial_epochs"])
        settings = context.settings
        if request.baselines:
            _run_baselines(context)
        if request.scheduler == "pbt":
            from autoaug.search.pbt import run_pbt

            run_pbt(context)
        else:
            _run_searched_trials(context)
        failure = all_failed_message(study)
        # a two-objective search exports its Pareto front; a search without a finished trial has nothing to confirm
        if request.confirm and len(study.directions) == 1 and failure is None:
            confirmation = confirm(context, request.confirm_top_k, request.confirm_seeds)
        status = "FINISHED" if failure is None else "FAILED"
    finally:
        client.set_terminated(parent, status)
    result = summarize(study, request, locations, experiment_id, cleaned, export=failure is None)
    result["error"] = failure
    result["n_orphan_runs_marked_killed"] = orphans
    result["seconds"] = time.perf_counter() - started
    result["stage_seconds"] = {stage: round(seconds, 1) for stage, seconds in context.stage_seconds.items()}
    result["cost"] = context.accounting.summary(context.stage_seconds, slot_count(request), request.cpus_per_trial)
    result["calibration"] = calibration
    result["confirmation"] = _public_confirmation(confirmation)
    result["learning_rate"] = settings.learning_rate
    result["trial_epochs"] = settings.max_epochs
    client.log_metric(parent, "search_seconds", result["seconds"])
    if result["best_value"] is not None:
        client.log_metric(parent, "best_val_accuracy", result["best_value"])
    return result


def _public_confirmation(record: Optional[dict]) -> Optional[dict]:
    """The confirmation as the JSON result shows it (the winner's policy is in the exported file)."""
    if record is None:
        return None
    return {key: value for key, value in record.items() if key != "winner_policy"}


def _prepare(request: SearchRequest):
    from autoaug.trainers.train import prepare_task

    return prepare_task(request.task, request.data, request.data_seed, request.task_options, model=request.model)


# ---------------------------------------------------------------------- study and resume
def _check_data_fingerprint(study, request: SearchRequest, fingerprint: str) -> None:
    """Record the data's fingerprint on a new study; on resume, refuse data that changed since (a
    rewritten file at the same path, a plug-in that now makes other rows): trials trained on
    different data must not be ranked together."""
    source = f"{_task_identity(request)} (data seed {request.data_seed})"
    recorded = study.user_attrs.get("data_fingerprint")
    if recorded is None:
        study.set_user_attr("data_fingerprint", fingerprint)
        study.set_user_attr("data_source", source)
    elif recorded != fingerprint:
        raise AutoaugInputError(
            f"--name {request.name}: this study was searched on other data (recorded "
            f"{study.user_attrs.get('data_source', 'an earlier source')}, fingerprint {recorded[:12]}; now {source}, "
            f"fingerprint {fingerprint[:12]}); resume it with the same data or choose another --name (nothing was changed)")


def _task_identity(request: SearchRequest) -> str:
    if request.task:
        options = json.dumps(request.task_options or {}, sort_keys=True)
        return f"task:{request.task}:{options}"
    return f"data:{Path(request.data).resolve()}"


def _open_study(storage, request: SearchRequest, space: SearchSpace, identity: str):
    """Create the study, or load it and check it is the same search (space, task, objective)."""
    import optuna

    directions = ["maximize", "maximize"] if request.sampler == "nsga2" else ["maximize"]
    expected = {"space_hash": space.hash, "task": identity, "objectives": len(directions),
                "max_epochs": request.max_epochs, "data_seed": request.data_seed,
                **({"model": request.model} if request.model else {})}
    try:
        study = optuna.load_study(study_name=request.name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=request.name, storage=storage, directions=directions)
        for key, value in {**expected, "space_name": space.name, "space": space.canonical(),
                           "sampler": request.sampler, "scheduler": request.scheduler, "seed": request.seed,
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
            raise AutoaugInputError(
                f"--name {request.name}: this study exists with a different {what}; resume it with the same "
                "settings or choose another --name (nothing was changed)")
    return study


def _fail_stale_trials(study) -> int:
    """Mark trials left RUNNING by a driver that died as failed; returns how many."""
    from optuna.trial import TrialState

    stale = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, STATE_ATTR, "failed")
        study._storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, STALE_REASON)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)


STALE_REASON = "the search driver stopped while this trial ran"
ORPHAN_REASON = "the search driver stopped while this run was open"


def _close_orphan_runs(client, experiment_id: str, parent: str, study) -> int:
    """Close the child runs a dead driver left RUNNING (trials, calibration, confirmation); returns how
    many were marked KILLED. Only this driver runs the study (`exclusive`), so every child run still
    open when it starts was left by a driver that died. Tune tells Optuna that a trial ended before
    the MLflow run is closed: a run whose trial Optuna holds as finished is closed FINISHED with that
    trial's state (its metrics were all logged); every other orphan is KILLED, with the reason."""
    from optuna.trial import TrialState

    finished = {f"trial {trial.number}": trial for trial in study.get_trials(deepcopy=False)
                if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    orphans = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' "
                                                                "and attributes.status = 'RUNNING'", max_results=5000)
    killed = 0
    for run in orphans:
        run_id, tags = run.info.run_id, run.data.tags
        trial = finished.get(tags.get("autoaug_trial")) if tags.get("autoaug_role") == "trial" else None
        if trial is not None:
            client.set_tag(run_id, "autoaug_state", trial.user_attrs.get(STATE_ATTR, "complete"))
            client.set_terminated(run_id, "FINISHED")
            continue
        client.set_tag(run_id, "autoaug_state", "killed")
        client.set_tag(run_id, "autoaug_error", ORPHAN_REASON)
        client.set_terminated(run_id, "KILLED")
        killed += 1
    return killed


def all_failed_message(study) -> Optional[str]:
    """None while some searched trial finished; else the one line a search whose searched trials all
    failed ends with (it has nothing to rank or export): how many failed and the first trial's error,
    the one to fix first. The CLI prints it and exits 1."""
    from optuna.trial import TrialState

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
    from optuna.trial import TrialState

    return sum(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in searched_trials(study))


class PolicyOf:
    """A trial config's policy (a picklable callable for the searcher and the recorder)."""

    def __init__(self, settings: TrialSettings, space: SearchSpace) -> None:
        self.settings = settings
        self.space = space

    def __call__(self, config: dict) -> Policy:
        return self.settings.policy_for(config, self.space)


# ---------------------------------------------------------------------- Ray
def _runtime_env(request: SearchRequest) -> Optional[dict]:
    """Make a ``--task module:function`` plug-in importable by the cluster's workers.

    Ray workers of a cluster started elsewhere do not see the driver's ``sys.path``; the plug-in's
    folder goes on their ``PYTHONPATH`` (same-machine clusters; a multi-node cluster needs the module
    installed on every node, or shipped with Ray's ``py_modules``).
    """
    if not request.task or ":" not in request.task:
        return None
    import importlib

    module = importlib.import_module(request.task.split(":", 1)[0])
    file = Path(module.__file__).resolve()
    # the folder that holds the top-level package (or the single-file module)
    folder = file.parents[module.__name__.count(".") + (file.name == "__init__.py")]
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def _check_address(address: Optional[str]) -> None:
    """Fail fast on an unreachable ``--address`` (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise AutoaugInputError(f"--address {address}: expected HOST:PORT of a Ray head (ray start --head)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise AutoaugInputError(f"--address {address}: no Ray head answers there ({error.strerror or error})") from None


def _start_ray(address: Optional[str], runtime_env: Optional[dict]) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's own per-trial result files (JSON, CSV, TensorBoard) are never read: resume reads the Optuna
    # study and the records are MLflow's, so the bookkeeping is cut to the experiment state.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                                  logging_level="error")
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if address:
        kwargs["address"] = address
    else:
        kwargs["object_store_memory"] = 256 * 1024 * 1024  # small machines and CI
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"--address {address}" if address else "local Ray"
        raise AutoaugInputError(f"{where}: cannot start or reach Ray ({str(error).splitlines()[0][:300]})") from None


def _sampler(request: SearchRequest, space: SearchSpace, offset: int):
    """The Optuna sampler (`autoaug.search.samplers`); seeded by the search seed plus the trials already
    in the study, so a resumed search does not propose its first points again."""
    from autoaug.search.samplers import make_sampler

    return make_sampler(request.sampler, space, request.seed + offset, request.trials)


def _check_cmaes(request: SearchRequest, space: SearchSpace, console) -> None:
    """CMA-ES models only numeric parameters every trial has: refuse a space with none, say which
    parameters it models (and that TPE draws the rest) otherwise."""
    if request.sampler != "cmaes":
        return
    from autoaug.search.samplers import cmaes_coverage

    modelled, others = cmaes_coverage(space)
    if not modelled:
        raise AutoaugInputError(
            f"--sampler cmaes: {space.name} has no numeric parameter in every trial, so CMA-ES would model nothing; "
            "use --sampler tpe (or grid for a randaugment space)")
    if console is not None:
        console.print(f"cmaes: CMA-ES models {', '.join(modelled)}; the {len(others)} categorical or conditional "
                      "parameters (op choice, p, magnitude, schedule) are drawn by TPE", highlight=False)


def _scheduler(request: SearchRequest, epochs: int, calibration: Optional[dict]):
    """ASHA's rungs start where ``none`` stopped improving in calibration (``plateau_epoch``), never
    earlier: regularised policies learn more slowly at first, and a rung before the plateau would cut
    exactly the trials that win later. Without calibration the first rung is at half the length."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # ASHA ranks on one metric; a two-objective (nsga2) trial cut on clean accuracy alone would enter
    # the Pareto population with early values, so two-objective searches run every trial to the end.
    if request.scheduler == "none" or rungs(epochs, calibration) == () or request.sampler == "nsga2":
        return FIFOScheduler()
    # time_attr "epoch": trials report only at the rungs and the end (`TrialSettings.report_epochs`)
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=epochs,
                         grace_period=_grace(epochs, calibration), reduction_factor=REDUCTION_FACTOR)


REDUCTION_FACTOR = 3


def _grace(epochs: int, calibration: Optional[dict]) -> int:
    return calibration["plateau_epoch"] if calibration else max(1, epochs // 2)


def rungs(epochs: int, calibration: Optional[dict]) -> tuple[int, ...]:
    """The epochs at which ASHA compares trials (grace × 3^k below the trial length)."""
    grace, points = _grace(epochs, calibration), []
    while grace < epochs:
        points.append(grace)
        grace *= REDUCTION_FACTOR
    return tuple(points)


def _run_searched_trials(context: SearchContext) -> None:
    from ray import tune

    request, study, space, settings = context.request, context.study, context.space, context.settings
    epochs = settings.max_epochs
    total = request.trials
    if request.sampler == "grid":
        grid = space.grid()
        size = 1
        for values in grid.values():
            size *= len(values)
        total = min(total, size)
    # A grid search counts distinct grid points finished (Optuna's grid sampler counts a failed point as
    # visited and would fill the budget with repeats): failed points are queued again each round.
    done = (lambda: grid_coverage(study, space)) if request.sampler == "grid" else (lambda: finished_count(study))
    attempts = 0
    while True:
        remaining = total - done()
        if remaining <= 0 or attempts >= 3:
            return
        attempts += 1
        before = finished_count(study)
        metric = [METRIC, ROBUST_METRIC] if request.sampler == "nsga2" else METRIC
        mode = ["max", "max"] if request.sampler == "nsga2" else "max"

        if request.scheduler == "none" or request.sampler == "nsga2":  # no scheduler decides mid-trial
            context = context.with_settings(report_epochs=())
        elif request.scheduler == "asha":
            context = context.with_settings(report_epochs=rungs(epochs, study.user_attrs.get("calibration")))
        settings = context.settings
        policy_of = PolicyOf(settings, space)
        searcher = RecordingOptunaSearch(
            space=space.suggest, metric=metric, mode=mode, sampler=_sampler(request, space, len(study.trials)),
            study_name=request.name, storage=study._storage, policy_of=policy_of, max_epochs=epochs,
        )
        label_of = lambda trial: f"trial {searcher.optuna_number(trial.trial_id)}"  # noqa: E731
        progress = SearchProgress(context.console, remaining, METRIC, f"search {request.name}",
                                  label_of=label_of) if context.console else None
        recorder = MlflowRecorder(
            context.client, context.experiment_id, context.parent, request.name,
            label_of=label_of, policy_of=policy_of,
            max_epochs=epochs, on_finished=progress.record if progress else None, log_config_params=True,
        )
        searcher.error_of = recorder.error_of  # the error text reaches Optuna too, not only MLflow
        recorder.on_retry = searcher.record_retry
        callbacks = [recorder] + ([progress] if progress else [])
        tuner = context.tuner("search", callbacks=callbacks, tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(request, epochs, study.user_attrs.get("calibration")),
            num_samples=remaining))
        started = time.perf_counter()
        fit_quietly(tuner)
        context.stage_seconds["search"] = context.stage_seconds.get("search", 0.0) + time.perf_counter() - started
        if finished_count(study) == before:  # nothing finished: failing trials would fail again
            return


def grid_coverage(study, space: SearchSpace) -> int:
    """How many grid points have a finished searched trial; queues again (once) each point whose
    trials all failed, e.g. those a stopped driver left behind."""
    import itertools

    from optuna.trial import TrialState

    grid = space.grid()
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]

    def key(params: dict) -> tuple:
        return tuple(params.get(name) for name in names)

    trials = searched_trials(study)
    covered = {key(trial.params) for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    waiting = {key(trial.system_attrs.get("fixed_params", {})) for trial in trials if trial.state == TrialState.WAITING}
    failed = {key(trial.params) for trial in trials if trial.state == TrialState.FAIL}
    for point in points:
        if key(point) in failed and key(point) not in covered | waiting:
            study.enqueue_trial(point)
    return len(covered & {key(point) for point in points})


def _run_baselines(context: SearchContext) -> None:
    """Run each preset not yet in the study as a trial of the same machinery, then add it to the study."""
    from optuna.trial import TrialState
    from ray import tune

    request, study, settings = context.request, context.study, context.settings
    done = {trial.user_attrs[BASELINE_ATTR] for trial in study.get_trials(deepcopy=False)
            if BASELINE_ATTR in trial.user_attrs and trial.state == TrialState.COMPLETE}
    todo = [name for name in BASELINES if name not in done]
    if not todo:
        return
    results: dict[str, Any] = {}

    def remember(trial, state: str) -> None:
        results[trial.config[BASELINE_KEY]] = (trial, state)

    progress = SearchProgress(context.console, len(todo), METRIC, f"baselines {request.name}",
                              label_of=lambda trial: f"baseline {trial.config[BASELINE_KEY]}") if context.console else None

    def finished(trial, state: str) -> None:
        remember(trial, state)
        # into the study at once: a driver killed later in the stage keeps this baseline (resume skips it)
        _record_baselines(study, [trial.config[BASELINE_KEY]], results, settings)
        if progress:
            progress.record(trial, state)

    context = context.with_settings(report_epochs=())  # baselines run full length: one report at the end
    recorder = MlflowRecorder(context.client, context.experiment_id, context.parent, request.name,
                              label_of=lambda trial: f"baseline {trial.config[BASELINE_KEY]}",
                              policy_of=settings.policy_for, max_epochs=settings.max_epochs, on_finished=finished)
    tuner = context.tuner("baselines", param_space={BASELINE_KEY: tune.grid_search(todo)},
                          tune_config=tune.TuneConfig(metric=METRIC, mode="max"),
                          callbacks=[recorder] + ([progress] if progress else []))
    started = time.perf_counter()
    fit_quietly(tuner)
    context.stage_seconds["baselines"] = context.stage_seconds.get("baselines", 0.0) + time.perf_counter() - started
    _record_baselines(study, [name for name in todo if name not in results], results, settings)  # never ran


NEVER_RUN = "never run: Ray Tune ended without starting or finishing this baseline"


def _record_baselines(study, todo: list[str], results: dict[str, Any], settings: TrialSettings) -> None:
    """Add every requested baseline to the study: complete with its value, or failed with the reason
    (its error, no metric reported, or never run) — none may vanish from the result."""
    import optuna
    from optuna.trial import TrialState

    objectives = len(study.directions)
    for name in todo:
        trial, state = results.get(name, (None, "failed"))
        last = (trial.last_result or {}) if trial is not None else {}
        values = [last.get(METRIC), last.get(ROBUST_METRIC)][:objectives]
        complete = state != "failed" and all(isinstance(v, (int, float)) for v in values)
        attrs = {BASELINE_ATTR: name, STATE_ATTR: state if complete else "failed",
                 POLICY_ATTR: settings.policy_for({BASELINE_KEY: name}).to_dict()}
        if not complete:
            attrs[ERROR_ATTR] = NEVER_RUN if trial is None else \
                error_reason(trial) if state == "failed" else f"reported no {METRIC}"
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if complete else TrialState.FAIL, values=values if complete else None,
            user_attrs=attrs))


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


def _parent_run(client, experiment_id: str, request: SearchRequest, space: SearchSpace, locations: Locations) -> str:
    """The search's parent MLflow run: reused on resume, created (with the space file) otherwise."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.autoaug_role = 'search' and tags.autoaug_study = '{request.name}'",
                              max_results=1)
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "autoaug_resumed", "true")
        return run_id
    run = client.create_run(experiment_id, run_name=f"search {request.name}",
                            tags={"autoaug_role": "search", "autoaug_study": request.name})
    run_id = run.info.run_id
    from mlflow.entities import Param

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


# ---------------------------------------------------------------------- result
def best_trial(study, number: Optional[int] = None):
    """The trial to export: ``number`` if given (must be complete), else the best full-length trial,
    searched or baseline (nsga2: `pareto_choice` of the searched trials' `pareto_front`)."""
    from optuna.trial import TrialState

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
    from optuna.trial import TrialState

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


def summarize(study, request: SearchRequest, locations: Locations, experiment_id: str, cleaned: int = 0,
              export: bool = True) -> dict[str, Any]:
    """The JSON result; ``export=False`` (every searched trial failed): no best trial, nothing exported."""
    from autoaug.search.export import export_best

    from optuna.trial import TrialState

    searched = searched_trials(study)
    states = [trial.user_attrs.get(STATE_ATTR) for trial in searched]
    best = best_trial(study) if export else None
    best_path = locations.exports_dir / f"{request.name}-best.yaml"
    # a driver killed while exporting leaves its temporary file (export._write); this driver holds the
    # study (`exclusive`), so any temporary of this export is such a leftover
    for leftover in best_path.parent.glob(f".{best_path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    if best is not None:
        locations.exports_dir.mkdir(parents=True, exist_ok=True)
        export_best(study, best_path)  # the confirmed winner when the search confirmed, else `best`
    else:
        best_path = None
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
        "best_policy_path": str(best_path) if best_path else None,
        "mlflow_experiment_id": experiment_id,
        "tracking_uri": redact(locations.tracking_uri),
        "optuna_storage": redact(locations.optuna_url),
        "workdir": str(locations.workdir),
        "sampler": request.sampler,
        "scheduler": request.scheduler,
        "baselines": baselines,
        "baseline_outcomes": baseline_outcomes(study),
        **(_front_result(study, request, locations) if len(study.directions) > 1 and export else {}),
    }


def _front_result(study, request: SearchRequest, locations: Locations) -> dict[str, Any]:
    """A two-objective search exports its Pareto front as a set (one policy file per front trial)
    and names the rule that chose ``best_trial`` from it."""
    from autoaug.search.export import export_policy

    folder = locations.exports_dir / f"{request.name}-pareto"
    front = []
    for trial in pareto_front(study):
        folder.mkdir(parents=True, exist_ok=True)
        path = export_policy(study, trial.number, folder / f"trial{trial.number}.yaml")
        front.append({"trial": trial.number, METRIC: trial.values[0], ROBUST_METRIC: trial.values[1],
                      "policy_path": str(path)})
    return {"pareto_front": front,
            "export_rule": f"best {METRIC} among front trials whose {ROBUST_METRIC} is within "
                           f"{ROBUST_TOLERANCE} of the front's best"}
