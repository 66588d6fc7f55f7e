"""The searched trials: the sampler proposes policies through Ray's `OptunaSearch` (define-by-run),
Ray Tune runs them as proxy trials, and ASHA stops weak ones on clean validation accuracy.

A run of the stage goes until the sampler's budget is finished (`SamplerKind.budget` / `finished`):
a resumed search runs only the rest, and a round in which nothing finished ends the stage (failing
trials would fail again).

Early stopping, and why the rung is late: augmentation is a regulariser, and a regularised policy
learns more slowly at first — under the cosine learning rate it is behind ``none`` for most of the
trial and catches up once the learning rate has decayed (on the built-in task the one op that helps,
``pixel_translate``, was below ``none`` at 2/3 of the trial, where the old rung sat and cut it). A
ranking taken before the learning rate has decayed ranks regularisers by their slow start. So ASHA
has one rung, at `LATE_RUNG_FRACTION` of the trial (and never before the calibrated plateau), where
the cosine learning rate is 5 % of its peak and what remains of the trial changes little; trials
stopped there reach Optuna as PRUNED (`records.RecordingOptunaSearch`), so the sampler ranks them
below every complete trial and they never compete for the export.

Parallel proposals: at most `max_concurrent` searched trials run at once, the slots the cluster has
capped by what the sampler can propose without results (`SamplerKind.concurrency`; TPE: its random
startup trials). With more slots than that, later proposals wait for results instead of being drawn
blind — on a large cluster the default search would otherwise be random search.
"""

from __future__ import annotations

import math
from typing import Optional

from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from autoaug.search.cluster import slot_count
from autoaug.search.record_schema import CALIBRATION_ATTR, METRIC, ROBUST_METRIC, SCREEN_ATTR
from autoaug.search.records import MlflowRecorder, RecordingOptunaSearch, SearchProgress
from autoaug.search.samplers import make_sampler, sampler_kind
from autoaug.search.stages import SearchContext
from autoaug.search.study import finished_count

REDUCTION_FACTOR = 3  # ASHA keeps the top third at its rung
# The rung's place as a fraction of the trial: at 0.85 the cosine learning rate is
# 0.5 (1 + cos 0.85 pi) = 5 % of its peak, so the rest of the trial reorders little, while a
# regulariser has had the high-learning-rate phase to catch up (see the module docstring).
LATE_RUNG_FRACTION = 0.85
MAX_ROUNDS = 3  # rounds of the stage: later rounds replace trials that failed in earlier ones


def scheduler(request, epochs: int, calibration: Optional[dict], objectives: int):
    """ASHA with its single late rung (`rungs`); FIFO (every trial runs to the end) when the trial is
    too short for a rung before its end, with ``--scheduler none``, or for two objectives."""
    # ASHA ranks on one metric; a two-objective (nsga2) trial cut on clean accuracy alone would enter
    # the Pareto population with early values, so two-objective searches run every trial to the end.
    if request.scheduler == "none" or rungs(epochs, calibration) == () or objectives > 1:
        return FIFOScheduler()
    # time_attr "epoch": trials report only at the rungs and the end (`TrialSettings.report_epochs`)
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=epochs,
                         grace_period=_grace(epochs, calibration), reduction_factor=REDUCTION_FACTOR)


def _grace(epochs: int, calibration: Optional[dict]) -> int:
    """The first (and only) rung: ``ceil(LATE_RUNG_FRACTION × epochs)``, or the calibrated plateau if
    that is later (no rung before ``none`` itself stops improving; a calibration that recorded no
    plateau sets no such bound)."""
    plateau = (calibration or {}).get("plateau_epoch") or 0
    return max(math.ceil(LATE_RUNG_FRACTION * epochs), plateau)


def rungs(epochs: int, calibration: Optional[dict]) -> tuple[int, ...]:
    """The epochs at which ASHA compares trials (grace × 3^k below the trial length): one epoch, at
    85 % of the trial or later (`_grace`), or none for trials shorter than 7 epochs, whose 85 % point
    is their last epoch — no early stopping then."""
    grace, points = _grace(epochs, calibration), []
    while grace < epochs:
        points.append(grace)
        grace *= REDUCTION_FACTOR
    return tuple(points)


def max_concurrent(sampler: str, trials: int, slots: int) -> int:
    """How many searched trials run at once: the cluster's ``slots``, capped by what sampler
    ``sampler`` can propose for a budget of ``trials`` before it needs results (`SamplerKind.concurrency`)."""
    limit = sampler_kind(sampler).concurrency
    return max(1, min(slots, limit(trials))) if limit else max(1, slots)


def searcher_for(context: SearchContext, slots: int) -> tuple[ConcurrencyLimiter, RecordingOptunaSearch]:
    """The searcher Tune drives (our Optuna searcher behind a `ConcurrencyLimiter` of
    `max_concurrent`), and the Optuna searcher itself (for trial numbers and records)."""
    request, study, space = context.request, context.study, context.space
    kind = sampler_kind(request.sampler)
    metric, mode = ([METRIC, ROBUST_METRIC], ["max", "max"]) if kind.objectives > 1 else (METRIC, "max")
    # seeded by the search seed plus the trials already in the study: a resumed search does not
    # propose its first points again
    searcher = RecordingOptunaSearch(
        space=space.suggest, metric=metric, mode=mode,
        sampler=make_sampler(request.sampler, space, request.seed + len(study.trials), request.trials),
        study_name=request.name, storage=context.storage, policy_of=context.settings.policy_for,
        max_epochs=context.settings.max_epochs,
    )
    limited = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent(request.sampler, request.trials, slots))
    return limited, searcher


def run_searched_trials(context: SearchContext) -> None:
    """The sampler's trials until its budget (``--trials``) is finished; trials of the screen
    (`autoaug.search.screen`) live in the same study but are on top of the budget."""
    request, study, space = context.request, context.study, context.space
    kind = sampler_kind(request.sampler)
    screened = _screen_finished(study)
    run_trials(context, "search", lambda: kind.budget(space, request.trials) - (kind.finished(study, space) - screened))


def _screen_finished(study) -> int:
    return sum(1 for trial in study.get_trials(deepcopy=False)
               if SCREEN_ATTR in trial.user_attrs and trial.state in (TrialState.COMPLETE, TrialState.PRUNED))


def run_trials(context: SearchContext, stage: str, remaining_of, full_length: bool = False) -> None:
    """Run searched trials of the study through Ray Tune until ``remaining_of()`` is 0: the sampler
    proposes them, or Optuna hands out trials enqueued with fixed parameters first (the screen).
    ``full_length``: no scheduler decides mid-trial (every trial runs the calibrated length)."""
    request, study = context.request, context.study
    kind = sampler_kind(request.sampler)
    epochs = context.settings.max_epochs
    calibration = study.user_attrs.get(CALIBRATION_ATTR)
    if full_length or request.scheduler == "none" or kind.objectives > 1:  # no scheduler decides mid-trial
        context = context.with_settings(report_epochs=())
        trial_scheduler = FIFOScheduler()
    else:
        if request.scheduler == "asha":
            context = context.with_settings(report_epochs=rungs(epochs, calibration))
        trial_scheduler = scheduler(request, epochs, calibration, kind.objectives)
    policy_of = context.settings.policy_for  # the same rule the worker and the baselines use
    for _ in range(MAX_ROUNDS):
        remaining = remaining_of()
        if remaining <= 0:
            return
        before = finished_count(study)
        limited, searcher = searcher_for(context, slot_count(request))
        label_of = lambda trial: f"trial {searcher.optuna_number(trial.trial_id)}"  # noqa: E731
        progress = SearchProgress(context.console, remaining, METRIC, f"{stage} {request.name}",
                                  label_of=label_of) if context.console else None
        recorder = MlflowRecorder(
            context.client, context.experiment_id, context.parent, request.name,
            label_of=label_of, policy_of=policy_of,
            max_epochs=epochs, on_finished=progress.record if progress else None, log_config_params=True,
        )
        searcher.error_of = recorder.error_of  # the error text reaches Optuna too, not only MLflow
        recorder.on_retry = searcher.record_retry
        context.fit(stage, callbacks=[recorder] + ([progress] if progress else []),
                    tune_config=tune.TuneConfig(search_alg=limited, num_samples=remaining, scheduler=trial_scheduler))
        if finished_count(study) == before:  # nothing finished: failing trials would fail again
            return
