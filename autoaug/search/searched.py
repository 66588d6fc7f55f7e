"""The searched trials: the sampler proposes policies through Ray's `OptunaSearch` (define-by-run),
Ray Tune runs them as proxy trials, and ASHA stops weak ones on clean validation accuracy.

A run of the stage goes until the sampler's budget is finished (`SamplerKind.budget` / `finished`):
a resumed search runs only the rest, and a round in which nothing finished ends the stage (failing
trials would fail again).
"""

from __future__ import annotations

from typing import Optional

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from autoaug.search.record_schema import CALIBRATION_ATTR, METRIC, ROBUST_METRIC
from autoaug.search.records import MlflowRecorder, RecordingOptunaSearch, SearchProgress
from autoaug.search.samplers import make_sampler, sampler_kind
from autoaug.search.stages import SearchContext
from autoaug.search.study import finished_count

REDUCTION_FACTOR = 3
MAX_ROUNDS = 3  # rounds of the stage: later rounds replace trials that failed in earlier ones


def scheduler(request, epochs: int, calibration: Optional[dict], objectives: int):
    """ASHA's rungs start where ``none`` stopped improving in calibration (``plateau_epoch``), never
    earlier: regularised policies learn more slowly at first, and a rung before the plateau would cut
    exactly the trials that win later. Without calibration the first rung is at half the length."""
    # ASHA ranks on one metric; a two-objective (nsga2) trial cut on clean accuracy alone would enter
    # the Pareto population with early values, so two-objective searches run every trial to the end.
    if request.scheduler == "none" or rungs(epochs, calibration) == () or objectives > 1:
        return FIFOScheduler()
    # time_attr "epoch": trials report only at the rungs and the end (`TrialSettings.report_epochs`)
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=epochs,
                         grace_period=_grace(epochs, calibration), reduction_factor=REDUCTION_FACTOR)


def _grace(epochs: int, calibration: Optional[dict]) -> int:
    return calibration["plateau_epoch"] if calibration else max(1, epochs // 2)


def rungs(epochs: int, calibration: Optional[dict]) -> tuple[int, ...]:
    """The epochs at which ASHA compares trials (grace × 3^k below the trial length)."""
    grace, points = _grace(epochs, calibration), []
    while grace < epochs:
        points.append(grace)
        grace *= REDUCTION_FACTOR
    return tuple(points)


def run_searched_trials(context: SearchContext) -> None:
    request, study, space = context.request, context.study, context.space
    kind = sampler_kind(request.sampler)
    epochs = context.settings.max_epochs
    calibration = study.user_attrs.get(CALIBRATION_ATTR)
    total = kind.budget(space, request.trials)
    if request.scheduler == "none" or kind.objectives > 1:  # no scheduler decides mid-trial
        context = context.with_settings(report_epochs=())
    elif request.scheduler == "asha":
        context = context.with_settings(report_epochs=rungs(epochs, calibration))
    metric, mode = ([METRIC, ROBUST_METRIC], ["max", "max"]) if kind.objectives > 1 else (METRIC, "max")
    policy_of = context.settings.policy_for  # the same rule the worker and the baselines use
    for _ in range(MAX_ROUNDS):
        remaining = total - kind.finished(study, space)
        if remaining <= 0:
            return
        before = finished_count(study)
        # seeded by the search seed plus the trials already in the study: a resumed search does not
        # propose its first points again
        searcher = RecordingOptunaSearch(
            space=space.suggest, metric=metric, mode=mode,
            sampler=make_sampler(request.sampler, space, request.seed + len(study.trials), request.trials),
            study_name=request.name, storage=context.storage, policy_of=policy_of, max_epochs=epochs,
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
        context.fit("search", callbacks=[recorder] + ([progress] if progress else []),
                    tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                                scheduler=scheduler(request, epochs, calibration, kind.objectives)))
        if finished_count(study) == before:  # nothing finished: failing trials would fail again
            return
