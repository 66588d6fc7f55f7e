"""What every stage of a search shares: one context object, one `Tuner` builder, and a runner for
explicit runs (calibration, confirmation) through the same Ray Tune machinery as the trials.

Every stage runs on Ray Tune with the same warm workers: ``reuse_actors`` keeps each slot's process
(and its imports) from trial to trial, and the prepared task goes to the object store once per stage
(`tune.with_parameters`), so a stage of many short runs pays start-up once per slot.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from ray.tune import Callback

from autoaug.search.cluster import ray_storage_path, trial_placement
from autoaug.search.record_schema import METRIC
from autoaug.search.trainable import EXAMPLES_KEY, RunSpec, TrialSettings, epochs_of, proxy_trial


@dataclass
class SearchContext:
    """One search's shared state, handed to every stage (calibration, baselines, trials, confirmation)."""

    request: Any
    study: Any
    storage: Any  # the Optuna storage the study lives in (Ray's searcher opens the same study through it)
    space: Any
    settings: TrialSettings
    prepared: Any
    locations: Any
    client: Any
    experiment_id: str
    parent: str
    console: Any = None
    stage_seconds: dict = field(default_factory=dict)
    accounting: "TimeAccounting" = field(default_factory=lambda: TimeAccounting())

    def with_settings(self, **changes) -> "SearchContext":
        return replace(self, settings=replace(self.settings, **changes))

    def resources(self) -> dict:
        resources = {"cpu": self.request.cpus_per_trial}
        if self.request.gpus_per_trial:
            resources["gpu"] = self.request.gpus_per_trial
        return resources

    def trainable(self):
        from ray import tune

        return tune.with_resources(
            tune.with_parameters(proxy_trial, settings=self.settings, task=self.prepared), self.resources())

    def tuner(self, stage: str, *, tune_config, callbacks, param_space: Optional[dict] = None,
              checkpoint_config=None):
        """The `Tuner` of one stage: warm workers unless ``--no-reuse-workers``, Ray's own result
        loggers off (the driver records what resume and MLflow need); a failed trial (an error, or
        its worker process lost) is retried from its start ``--max-failures`` times on a fresh
        worker, then recorded failed, and the stage goes on (``fail_fast`` off)."""
        from ray import tune

        tune_config = replace(tune_config, reuse_actors=self.request.reuse_workers)
        self.accounting.stage = stage
        # cluster: each trial's node on its MLflow run, a lost node named, another autoaug stops the search
        placement = trial_placement(self.client, callbacks)
        run_config = tune.RunConfig(
            name=f"{self.request.name}-{stage}-{int(time.time())}",
            storage_path=ray_storage_path(self.request, self.locations, checkpoints=checkpoint_config is not None),
            callbacks=[placement.before_recorder(), *callbacks, placement, self.accounting], verbose=0,
            checkpoint_config=checkpoint_config,
            failure_config=tune.FailureConfig(max_failures=self.request.max_failures, fail_fast=False))
        return tune.Tuner(self.trainable(), param_space=param_space, tune_config=tune_config, run_config=run_config)

    def fit(self, stage: str, **tuner_options):
        """Build the stage's `Tuner` (`tuner`), run it (`fit_quietly`) and add its wall time to
        ``stage_seconds[stage]``: the trials' accounting and the stage's seconds share one name, so
        the search's ``cost`` sets the one against the other. Returns Tune's results."""
        tuner = self.tuner(stage, **tuner_options)
        started = time.perf_counter()
        try:
            return fit_quietly(tuner)
        finally:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started


class TimeAccounting(Callback):
    """Where the slots' time went, per stage, from what the trials measured inside themselves
    (`TrialClock`): epochs, start-up and CPU seconds, summed over trials. With the stage's wall time
    and the number of slots this gives the share of slot time outside training epochs and how busy
    the cores given to trials were (`summary`; the search's JSON ``cost``)."""

    def __init__(self) -> None:
        self.stage = ""
        self.trials: dict[tuple[str, str], dict[str, float]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        record = self.trials.setdefault((self.stage, trial.trial_id), {"epoch_seconds": 0.0, "startup_seconds": 0.0,
                                                                       "cpu_seconds": 0.0, "epochs": 0})
        for epoch in epochs_of(result):
            record["epoch_seconds"] += float(epoch.get("epoch_seconds", 0.0))
            record["epochs"] += 1
            if record["epochs"] == 1:
                record["startup_seconds"] = float(epoch.get("startup_seconds", 0.0))
            record["cpu_seconds"] = max(record["cpu_seconds"], float(epoch.get("cpu_seconds", 0.0)))

    def summary(self, stage_seconds: dict[str, float], slots: int, cpus_per_slot: float) -> dict[str, Any]:
        stages = {}
        for stage, wall in stage_seconds.items():
            records = [record for (name, _), record in self.trials.items() if name == stage]
            epochs = sum(record["epoch_seconds"] for record in records)
            capacity = wall * slots
            stages[stage] = {
                "wall_seconds": round(wall, 2), "trials": len(records),
                "trials_per_minute": round(60 * len(records) / wall, 3) if wall else None,
                "epoch_seconds": round(epochs, 2),
                "startup_seconds": round(sum(record["startup_seconds"] for record in records), 2),
                "cpu_seconds": round(sum(record["cpu_seconds"] for record in records), 2),
                "outside_epochs_fraction": round(1 - epochs / capacity, 4) if capacity else None,
                "cores_busy_fraction": round(sum(record["cpu_seconds"] for record in records)
                                             / (capacity * cpus_per_slot), 4) if capacity else None,
            }
        return {"slots": slots, "cpus_per_slot": cpus_per_slot, "stages": stages}


TUNE_ERROR_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")


def fit_quietly(tuner):
    """`Tuner.fit` with anything Tune prints sent to stderr (`start_ray` turns its console output off):
    stdout carries the JSON result. Tune's log of each failed trial (a full traceback) is held back: the
    reason is one progress line, the whole error is the trial's MLflow artifact ``error.txt``.

    Ctrl-C (SIGINT) raises KeyboardInterrupt out of the fit, so the search stops (the CLI: "aborted",
    exit 130) and the same command resumes it. Tune's own SIGINT handler is off: it ends the fit as if
    it had finished, and a stage then read the runs it cut as failed (measured: Ctrl-C during the
    confirmation gave "17 of 17 none runs failed", verdict inconclusive, export `none`, exit 0)."""
    import logging

    loggers = [logging.getLogger(name) for name in TUNE_ERROR_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    handler = os.environ.get(TUNE_SIGINT_ENV)
    os.environ[TUNE_SIGINT_ENV] = "1"  # read by Tune when the fit starts
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return tuner.fit()
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if handler is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = handler


TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


@dataclass
class RunOutcome:
    """One explicit run as the driver saw it: every reported result, and how it ended. ``examples``:
    the final report's per-example correctness (`RunSpec.report_examples`; encoded by
    `autoaug.trainers.evaluation.encode_correct`), None when the run did not report it."""

    spec: RunSpec
    results: list[dict] = field(default_factory=list)
    state: str = "running"
    error: Optional[str] = None
    examples: Optional[str] = None

    def curve(self, metric: str = METRIC) -> list[float]:
        return [float(result[metric]) for result in self.results if metric in result]

    @property
    def final(self) -> Optional[float]:
        curve = self.curve()
        return curve[-1] if curve and self.state == "complete" else None

    @property
    def final_examples(self) -> Optional[str]:
        """``examples`` of a completed run (None otherwise, like `final`)."""
        return self.examples if self.state == "complete" else None


class CollectRuns(Callback):
    """Collects each explicit run's results in the driver (no MLflow run per calibration or
    confirmation run: the stage logs one child run with everything)."""

    def __init__(self, on_finished: Optional[Callable[[RunOutcome], None]] = None) -> None:
        self.outcomes: dict[str, RunOutcome] = {}
        self.on_finished = on_finished

    def _outcome(self, trial) -> RunOutcome:
        spec = RunSpec.of(trial.config)
        return self.outcomes.setdefault(spec.label, RunOutcome(spec))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        outcome = self._outcome(trial)
        outcome.results.extend(epochs_of(result))
        if result.get(EXAMPLES_KEY) is not None:
            outcome.examples = result[EXAMPLES_KEY]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        outcome = self._outcome(trial)
        outcome.state = "complete"
        if self.on_finished:
            self.on_finished(outcome)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        outcome = self._outcome(trial)
        outcome.state = "failed"
        outcome.error = _error_line(trial)
        if self.on_finished:
            self.on_finished(outcome)


def run_specs(context: SearchContext, stage: str, specs: list[RunSpec],
              on_finished: Optional[Callable[[RunOutcome], None]] = None) -> dict[str, RunOutcome]:
    """Run explicit runs (one Tune trial each, as many at once as the slots allow); by label."""
    from ray import tune

    if not specs:
        return {}
    progress = _progress(context, stage, len(specs))
    collect = CollectRuns(on_finished)
    context = context.with_settings(report_epochs=())  # nothing decides mid-run: one report at the end
    context.fit(stage, param_space={"_run": tune.grid_search([spec.as_config()["_run"] for spec in specs])},
                tune_config=tune.TuneConfig(), callbacks=[collect] + ([progress] if progress else []))
    for spec in specs:  # a run Tune never started is a failure with a reason, not a silent gap
        collect.outcomes.setdefault(spec.label, RunOutcome(spec, state="failed", error="never ran"))
    return collect.outcomes


class _RunProgress(Callback):
    """The stage's runs on the search's progress line (calibration and confirmation are minutes long)."""

    def __init__(self, progress) -> None:
        self.progress = progress

    def setup(self, **info) -> None:
        self.progress.setup(**info)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.progress.on_trial_start(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.progress.record(trial, "complete")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.progress.record(trial, "failed")

    def on_experiment_end(self, trials, **info) -> None:
        self.progress.close()


def _progress(context: SearchContext, stage: str, total: int) -> Optional[_RunProgress]:
    if context.console is None:
        return None
    from autoaug.search.records import SearchProgress  # records builds on this module's neighbours

    return _RunProgress(SearchProgress(context.console, total, METRIC, f"{stage} {context.request.name}",
                                       label_of=lambda trial: RunSpec.of(trial.config).label))


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [line for line in open(path).read().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return (lines[-1] if lines else "the run failed")[:300]
