"""The baselines: every preset (`autoaug.policy.PRESETS`, ``none`` included) runs as a trial of the
same machinery, at the same length, and enters the study as a complete or failed trial with the
preset's name. The searched trials are ranked against them, and confirmation compares with ``none``.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune

from autoaug.policy import PRESETS
from autoaug.search.record_schema import (BASELINE_ATTR, ERROR_ATTR, METRIC, POLICY_ATTR, RELIANCE_ATTR, ROBUST_METRIC,
                                          STATE_ATTR)
from autoaug.search.records import MlflowRecorder, SearchProgress, error_reason, modality_reliance_of
from autoaug.search.stages import SearchContext
from autoaug.search.trainable import BASELINE_KEY, TrialSettings

BASELINES = PRESETS  # every preset is a baseline: the search is ranked against all of them


def run_baselines(context: SearchContext) -> None:
    """Run each preset not yet in the study as a trial of the same machinery, then add it to the study."""
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
        record_baselines(study, [trial.config[BASELINE_KEY]], results, settings)
        if progress:
            progress.record(trial, state)

    context = context.with_settings(report_epochs=())  # baselines run full length: one report at the end
    recorder = MlflowRecorder(context.client, context.experiment_id, context.parent, request.name,
                              label_of=lambda trial: f"baseline {trial.config[BASELINE_KEY]}",
                              policy_of=settings.policy_for, max_epochs=settings.max_epochs, on_finished=finished)
    context.fit("baselines", param_space={BASELINE_KEY: tune.grid_search(todo)},
                tune_config=tune.TuneConfig(metric=METRIC, mode="max"),
                callbacks=[recorder] + ([progress] if progress else []))
    record_baselines(study, [name for name in todo if name not in results], results, settings)  # never ran


NEVER_RUN = "never run: Ray Tune ended without starting or finishing this baseline"


def record_baselines(study, todo: list[str], results: dict[str, Any], settings: TrialSettings) -> None:
    """Add every requested baseline to the study: complete with its value, or failed with the reason
    (its error, no metric reported, or never run) — none may vanish from the result."""
    objectives = len(study.directions)
    for name in todo:
        trial, state = results.get(name, (None, "failed"))
        last = (trial.last_result or {}) if trial is not None else {}
        values = [last.get(METRIC), last.get(ROBUST_METRIC)][:objectives]
        complete = state != "failed" and all(isinstance(v, (int, float)) for v in values)
        attrs = {BASELINE_ATTR: name, STATE_ATTR: state if complete else "failed",
                 POLICY_ATTR: settings.policy_for({BASELINE_KEY: name}).to_dict()}
        reliance = modality_reliance_of(last)
        if reliance:  # as searched trials record it (`RecordingOptunaSearch`)
            attrs[RELIANCE_ATTR] = reliance
        if not complete:
            attrs[ERROR_ATTR] = NEVER_RUN if trial is None else \
                error_reason(trial) if state == "failed" else f"reported no {METRIC}"
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if complete else TrialState.FAIL, values=values if complete else None,
            user_attrs=attrs))
