"""Records of a search, written from the Tune driver (never from workers, so SQLite has one writer).

- `RecordingOptunaSearch`: Ray's Optuna searcher that also stores, on each Optuna trial, the policy
  it ran and how it ended (``complete``, ``pruned`` = stopped early by ASHA, ``failed``). A trial
  stopped early reaches Optuna as PRUNED, its last value an intermediate value at the epoch it was
  stopped (Ray would tell Optuna COMPLETE with that value: the sampler would learn that a policy cut
  at a rung is as good as its rung value, and that trial could be exported as best).
- `MlflowRecorder`: one child run per trial nested under the search's parent run (the
  ``mlflow.parentRunId`` tag; Ray's own MLflow logger has no parent option), with the policy's
  flattened params, every epoch's metrics, the final metrics (modality reliance, at the last epoch's
  step), the policy YAML and the trial's state.
- `SearchProgress`: live progress on stderr (a rich bar on a terminal, sparse lines otherwise).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, Optional

from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from autoaug.policy import Policy
from autoaug.search.trainable import epochs_of

from autoaug.search.record_schema import (EPOCH_METRICS, ERROR_ATTR, ERROR_TAG, FINAL_METRICS, PARENT_TAG, POLICY_ATTR,
                                          POLICY_NAME_TAG, RAY_TRIAL_TAG, RELIANCE_ATTR, RETRIES_ATTR, RETRIES_TAG,
                                          ROLE_TAG, ROLE_TRIAL, STATE_ATTR, STATE_TAG, STOPPED_EPOCH_ATTR, STUDY_TAG,
                                          TRIAL_TAG)


def trial_state(trial, max_epochs: int) -> str:
    """complete / pruned (stopped before ``max_epochs`` epochs) / failed, for a finished Tune trial."""
    if trial.status == "ERROR":
        return "failed"
    last = trial.last_result or {}
    reported = last.get("epoch", last.get("training_iteration", 0))
    return "complete" if reported >= max_epochs else "pruned"


class RecordingOptunaSearch(OptunaSearch):
    """`OptunaSearch` that records each trial's policy and end state as Optuna user attributes.

    Ray's searcher keeps its Optuna trials in private attributes and offers no accessor: ``_ot_trials``
    (Tune trial id -> the live `optuna.Trial`, the only handle that can set a running trial's user
    attributes) and ``_completed_trials`` (ids it already told Optuna about; attributes set after that
    would be refused). tests/test_search_records.py::test_private_ray_searcher_routes_still_exist fails
    loudly if a Ray release renames them."""

    def __init__(self, *args, policy_of: Callable[[dict], Policy], max_epochs: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._policy_of = policy_of
        self._max_epochs = max_epochs
        # Tune tells a searcher only *that* a trial failed; the reason comes from the Tune trial,
        # which the driver's MlflowRecorder holds (`MlflowRecorder.error_of`).
        self.error_of: Callable[[str], Optional[str]] = lambda trial_id: None
        self._retries: dict[str, list[str]] = {}
        self._reported: dict[str, set[int]] = {}  # epochs each trial reported to Optuna (one value per step)

    def record_retry(self, trial_id: str, reason: str) -> None:
        """A failed attempt that Tune retries (``--max-failures``): its reason, kept on the Optuna trial."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            self._retries[trial_id] = [*self._retries.get(trial_id, []), reason]
            ot_trial.set_user_attr(RETRIES_ATTR, self._retries[trial_id])

    def save(self, checkpoint_path: str) -> None:
        """Tune checkpoints its searcher regularly; ours holds live storage handles, and our resume
        reads the Optuna study instead, so the checkpoint only says where the state is."""
        with open(checkpoint_path, "w") as handle:
            json.dump({"optuna_study": self._study_name}, handle)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("autoaug resumes from the Optuna study, not from Tune's searcher checkpoint")

    def optuna_number(self, trial_id: str) -> Optional[int]:
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number

    def suggest(self, trial_id: str) -> Optional[dict]:
        config = super().suggest(trial_id)
        if config is not None:
            ot_trial = self._ot_trials[trial_id]
            policy = self._policy_of(config)
            ot_trial.set_user_attr(POLICY_ATTR, policy.to_dict())
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """An intermediate report (an ASHA rung): Optuna's intermediate value at the trial's *epoch*
        (Ray's own searcher files it under Tune's report count, which is not an epoch here)."""
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return super().on_trial_result(trial_id, result)  # Ray's rules: no intermediate values then
        self._ot_trials[trial_id].report(result[self.metric], _epoch(result))
        self._reported.setdefault(trial_id, set()).add(_epoch(result))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)  # Ray warns about a repeat
        if error:
            state = "failed"
            ot_trial.set_user_attr(ERROR_ATTR, self.error_of(trial_id) or "trial failed (Ray Tune gave no reason)")
        elif not result:
            state = "pruned"
        else:
            state = "complete" if _epoch(result) >= self._max_epochs else "pruned"
        ot_trial.set_user_attr(STATE_ATTR, state)
        if result:
            ot_trial.set_user_attr(STOPPED_EPOCH_ATTR, _epoch(result))
            reliance = modality_reliance_of(result)
            if reliance:
                ot_trial.set_user_attr(RELIANCE_ATTR, reliance)
        if state != "pruned" or not result:  # Ray's own tell: COMPLETE with values, FAIL, or PRUNED without result
            return super().on_trial_complete(trial_id, result=result, error=error)
        # Stopped early: PRUNED, with the value it was stopped at as an intermediate value (one-objective
        # studies only; Optuna keeps no intermediate values for two). TPE then ranks it below every
        # complete trial, by that value; it is never a best trial or an export.
        value = None if isinstance(self.metric, list) else result.get(self.metric)
        if isinstance(value, (int, float)) and _epoch(result) not in self._reported.get(trial_id, ()):
            ot_trial.report(value, _epoch(result))
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def _epoch(result: dict) -> int:
    """The epoch a Tune result is for (a result without one: Tune's report count)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def modality_reliance_of(result: Optional[dict]) -> dict[str, float]:
    """The modality-reliance metrics (``FINAL_METRICS``) a trial's last result holds ({} when it has
    none: a trial stopped early, a failed one, a calibration or confirmation run). What the Optuna trial
    records as ``RELIANCE_ATTR`` (baselines: `autoaug.search.baselines.record_baselines` may do the same)."""
    return {name: float(result[name]) for name in FINAL_METRICS
            if isinstance((result or {}).get(name), (int, float))}


def is_entry_count_metric(key: str) -> bool:
    """``entry{k}.{op}.applied_fraction`` / ``.applied_samples``: what each entry touched per epoch."""
    return key.startswith("entry") and key.endswith((".applied_fraction", ".applied_samples"))


def flatten_policy(policy: Policy, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """MLflow params of a trial: the sampler's own params verbatim (``params``: a searched trial's
    config), then the policy under the same names — ``op.<name>.use`` / ``.p`` / ``.magnitude`` /
    ``.schedule`` per op, whatever its position — so Optuna, Ray and MLflow give one name one meaning
    and the compare view lines trials up by op. ``n_ops`` and ``ops`` (the ops in the order they run)
    are derived from the policy. An op the policy lists more than once (a PBT schedule exported in
    windows) gets ``op.<name>.entry<k>.*`` for its later entries."""
    config = policy.config
    flat: dict[str, Any] = {key: value for key, value in (params or {}).items() if not key.startswith("_")}
    flat.update({
        "selection": config.selection, "n_ops": len(config.entries),
        "ops": ",".join(entry.op for entry in config.entries),
        "clean_fraction": config.clean_fraction, "augmented_loss_weight": config.augmented_loss_weight,
        "balance.vision": config.balance.vision, "balance.text": config.balance.text,
        "balance.cross": config.balance.cross,
    })
    if config.selection == "random_n":
        flat["n"] = config.n
    seen: set[str] = set()
    for index, entry in enumerate(config.entries):
        prefix = f"op.{entry.op}" if entry.op not in seen else f"op.{entry.op}.entry{index}"
        seen.add(entry.op)
        flat[f"{prefix}.use"] = True
        flat[f"{prefix}.p"] = entry.p
        flat[f"{prefix}.magnitude"] = entry.magnitude
        flat[f"{prefix}.schedule"] = entry.schedule.kind if _plain(entry.schedule) else entry.schedule.describe()
    return flat


def _plain(schedule) -> bool:
    """A schedule with its defaults is logged by its kind alone: the name the search space samples."""
    return schedule.describe() == schedule.kind


class MlflowRecorder(Callback):
    """Child MLflow run per Tune trial, nested under the search's parent run."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, study: str,
                 label_of: Callable[[Any], str], policy_of: Callable[[dict], Policy], max_epochs: int,
                 on_finished: Optional[Callable[[Any, str], None]] = None, track_config: bool = False,
                 log_config_params: bool = False) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study = study
        self.label_of = label_of
        self.policy_of = policy_of
        self.max_epochs = max_epochs
        self.on_finished = on_finished
        self.track_config = track_config  # PBT: hyper-parameters change mid-trial; log them per epoch
        self.log_config_params = log_config_params  # searched trials: the sampler's params, verbatim
        self.run_ids: dict[str, str] = {}
        self.trials: dict[str, Any] = {}  # Tune trials by id, for `error_of`
        self.retries: dict[str, int] = {}
        self.on_retry: Optional[Callable[[str, str], None]] = None  # (trial id, reason) of a retried attempt

    def error_of(self, trial_id: str) -> Optional[str]:
        """The failed trial's reason (last line of its error), once Tune has written it."""
        trial = self.trials.get(trial_id)
        return error_reason(trial) if trial is not None else None

    def __getstate__(self) -> dict:
        # Tune pickles its run config for Tuner.restore, which autoaug never uses (resume reads the
        # Optuna study); the live client (and the live trials, hooks) stay out of that pickle.
        return {**self.__dict__, "client": None, "trials": {}, "on_retry": None}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        from mlflow.entities import Param, RunTag

        self.trials[trial.trial_id] = trial
        if trial.trial_id in self.run_ids:  # PBT restarted it from a clone, or a retry: same run
            return
        label = self.label_of(trial)
        policy = self.policy_of(trial.config)
        tags = {PARENT_TAG: self.parent_run_id, "mlflow.runName": label,
                STUDY_TAG: self.study, TRIAL_TAG: label, ROLE_TAG: ROLE_TRIAL,
                RAY_TRIAL_TAG: trial.trial_id, STATE_TAG: "running"}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=label)
        self.run_ids[trial.trial_id] = run.info.run_id
        params = [Param(key, str(value)) for key, value in
                  flatten_policy(policy, trial.config if self.log_config_params else None).items()]
        self.client.log_batch(run.info.run_id, params=params,
                              tags=[RunTag(POLICY_NAME_TAG, str(policy.config.name or ""))])
        self.client.log_text(run.info.run_id, policy.dumps(), "policy.yaml")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        from mlflow.entities import Metric

        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            return
        stamp = int(time.time() * 1000)
        metrics = []
        for epoch in epochs_of(result):  # a report carries every epoch since the previous one
            step = int(epoch.get("epoch", result.get("training_iteration", 0)))
            at = int(epoch["epoch_end_time"] * 1000) if "epoch_end_time" in epoch else stamp
            metrics += [Metric(key, float(value), at, step) for key, value in epoch.items()
                        if key in EPOCH_METRICS or key in FINAL_METRICS or is_entry_count_metric(key)]
        if self.track_config:
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            metrics += [Metric(f"config.{key}", float(value), stamp, step) for key, value in trial.config.items()
                        if isinstance(value, (int, float))]
        self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, trial_state(trial, self.max_epochs))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, "failed")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """Tune retries the trial (``--max-failures``): the failed attempt's reason goes on its run
        (tag ``autoaug_retries``, artifact ``error_attempt<k>.txt``) and to ``on_retry``; the retry
        reports from epoch 1 again into the same run."""
        reason = error_reason(trial)
        count = self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is not None:
            self.client.set_tag(run_id, RETRIES_TAG, str(count))
            self.client.log_text(run_id, _error_text(trial), f"error_attempt{count}.txt")
        if self.on_retry is not None:
            self.on_retry(trial.trial_id, reason)

    def _finish(self, trial, state: str) -> None:
        run_id = self.run_ids.pop(trial.trial_id, None)
        if run_id is not None:  # None: the trial ended before MLflow saw it start; its callback still runs
            self._close_run(run_id, trial, state)
        if self.on_finished is not None:
            self.on_finished(trial, state)

    def _close_run(self, run_id: str, trial, state: str) -> None:
        self.client.set_tag(run_id, STATE_TAG, state)
        if state == "failed":
            error = _error_text(trial)
            # MLflow tags hold 5000 characters; the raised exception is at the end of a traceback
            self.client.set_tag(run_id, ERROR_TAG, error[-4900:])
            self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, "FAILED" if state == "failed" else "FINISHED")


def error_reason(trial) -> str:
    """The last line of a failed trial's error (the exception and its message)."""
    lines = [line for line in _error_text(trial).splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else "trial failed"


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path:
            with open(path) as handle:
                return handle.read().strip() or "trial failed"
    except OSError:
        pass
    return str(getattr(trial, "error_msg", None) or "trial failed")


class SearchProgress(Callback):
    """Live progress of a search on stderr: trials done / total, running, stopped early, failed, the
    best *finished* score, elapsed time and ETA.

    On a terminal it is one rich progress bar redrawn in place; otherwise (a log file, CI) it prints
    a line when a trial finishes, at most one every ``line_interval_s`` seconds, plus the last one.
    "best" is the best score of a trial that ran its full length (state ``complete``), the rule the
    search's summary and export follow; intermediate values of a running or stopped trial never
    count, so the bar never shows a best the summary does not have.
    """

    line_interval_s = 30.0

    def __init__(self, console, total: int, metric: str, label: str,
                 label_of: Optional[Callable[[Any], str]] = None) -> None:
        self.console = console
        self.label_of = label_of  # a trial's name in the records ("trial 3"), for the line a failure prints
        self.total = total
        self.metric = metric
        self.label = label
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        self.best: Optional[float] = None
        self.running: set[str] = set()  # trial ids (PBT restarts trials: count each once)
        self.started = time.monotonic()
        self._progress = None
        self._task = None
        self._last_line = -math.inf

    def __getstate__(self) -> dict:
        # see MlflowRecorder.__getstate__; the live display holds a thread and locks
        return {**self.__dict__, "console": None, "_progress": None, "_task": None, "label_of": None}

    @property
    def live(self) -> bool:
        return bool(self.console is not None and self.console.is_terminal)

    def setup(self, **info) -> None:
        self.started = time.monotonic()
        if self.live and self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, redirect_stdout=False, redirect_stderr=False, transient=False,
            )
            self._task = self._progress.add_task(self.label, total=self.total, status=self._status())
            self._progress.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id not in self.running:
            self.running.add(trial.trial_id)
            self._show(finished=False)

    def record(self, trial, state: str) -> None:
        """A trial ended (``complete`` / ``pruned`` / ``failed``); its final result is its score."""
        self.running.discard(trial.trial_id)
        self.counts[state] += 1
        if state == "failed" and self.console is not None:  # the reason in one line (Ray's traceback is not shown)
            name = self.label_of(trial) if self.label_of else f"Ray trial {trial.trial_id}"
            self.console.print(f"[{self.label}] {name} failed: {error_reason(trial)}", markup=False, highlight=False,
                               soft_wrap=True)
        value = (trial.last_result or {}).get(self.metric)
        if state == "complete" and isinstance(value, (int, float)) and (self.best is None or value > self.best):
            self.best = float(value)
        self._show(finished=True)

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=self._status())
            self._progress.stop()
            self._progress = None

    def done(self) -> int:
        return sum(self.counts.values())

    def _status(self) -> str:
        best = "—" if self.best is None else f"{self.best:.4f}"
        return (f"{len(self.running)} running, {self.counts['pruned']} stopped early, {self.counts['failed']} failed, "
                f"best {self.metric} {best}")

    def _show(self, finished: bool) -> None:
        if self.console is None:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done(), status=self._status())
            return
        now = time.monotonic()
        last = self.done() >= self.total
        if not finished or (now - self._last_line < self.line_interval_s and not last):
            return
        self._last_line = now
        elapsed = now - self.started
        eta = ""
        if 0 < self.done() < self.total:
            eta = f", ETA {_clock(elapsed / self.done() * (self.total - self.done()))}"
        self.console.print(f"[{self.label}] {self.done()}/{self.total} done ({self.counts['complete']} complete), "
                           f"{self._status()}, elapsed {_clock(elapsed)}{eta}", markup=False, highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
