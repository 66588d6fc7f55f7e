"""The Ray Tune trainable: one proxy training run of the policy a trial's config describes.

It reports **clean** validation accuracy after every epoch (what ASHA stops on and what Optuna is
told), the robust validation accuracy when the objective needs it, at the last epoch of a searched or baseline
trial the accuracy with the image and with the text blanked (how much the model relies on each
modality), and — under Population Based Training — a Lightning checkpoint every epoch so PBT can clone
and resume trials.

Trials start warm: the task arrives already tokenised and stacked (`PreparedTask`, built once by the
driver and shipped through Ray's object store by `tune.with_parameters`) together with the validated
search space, and Ray reuses each slot's worker process from trial to trial (``reuse_actors``), so
imports and process start-up are paid once per slot. Nothing a trial builds outlives it: the model,
optimiser, policy and trainer are created inside `proxy_trial` and every random stream is reseeded.

A config is one of three kinds: the search space's parameters (a searched trial), ``{BASELINE_KEY:
preset}`` (a baseline) or ``{RUN_KEY: RunSpec}`` (a calibration or confirmation run: an explicit
policy, seed, learning rate and length).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch

from autoaug.errors import AutoaugError
from autoaug.policy import Policy
from autoaug.search.record_schema import HOLDOUT_ACCURACY, METRIC, RELIANCE_METRICS, ROBUST_METRIC
from autoaug.search.space import SearchSpace

BASELINE_KEY = "baseline"  # a trial config holding this key runs a preset instead of searched params
RUN_KEY = "_run"  # a trial config holding this key is an explicit run (calibration, confirmation)
HISTORY_KEY = "history"  # a report's per-epoch metrics since the previous report (oldest first)
# the final report of a run whose RunSpec asks for it: which validation examples the finished model gets
# right, `autoaug.trainers.evaluation.encode_correct` ("<n>:<hex>"); at the top of the report, not in its history
EXAMPLES_KEY = "examples_correct"


VERSION_MISMATCH = "autoaug version mismatch"  # the start of the error a worker with another autoaug raises


class VersionMismatch(AutoaugError):
    """A worker runs another autoaug than the driver: the search stops (results would mix two codes)."""


def _autoaug_version() -> str:
    import autoaug

    return autoaug.__version__


def check_worker_version(driver_version: Optional[str]) -> None:
    """Raise `VersionMismatch` (in a trial, on a worker) when this process's autoaug is not the driver's;
    the driver's `autoaug.search.cluster.TrialPlacement` stops the search with its line."""
    if driver_version is not None and _autoaug_version() != driver_version:
        import ray

        raise VersionMismatch(f"{VERSION_MISMATCH}: the worker on node {ray.util.get_node_ip_address()} runs autoaug "
                              f"{_autoaug_version()}, the driver runs autoaug {driver_version}; install the same "
                              "autoaug on every node")


def epochs_of(result: dict) -> list[dict]:
    """The per-epoch metrics a reported result stands for (its ``history``, or the result itself)."""
    return list(result.get(HISTORY_KEY) or [result])


@dataclass(frozen=True)
class RunSpec:
    """An explicit run of the stages around the search (calibration, confirmation).

    ``policy`` is a policy as data (or a preset name); ``None`` fields take the search's settings;
    ``validate_on`` is the split the run validates on: ``"val"`` (selection), or ``"confirm"`` (a
    confirmation run on the held-out part, `PreparedTask.with_confirm_split`); ``report_examples``: the
    final report also carries which examples of that split the finished model gets right
    (``EXAMPLES_KEY``; the confirmation's example-level evidence, `autoaug.search.verdict`). Off by
    default: searched trials and calibration runs report exactly what they did before.
    ``validate_each_epoch=False``: validation after the last epoch only, for runs judged on their final
    value (race, confirmation); calibration runs need the whole curve. ``holdout_fraction``: the run
    trains on the rest of the training split and reports, every epoch, its accuracy on that fraction of
    it (``HOLDOUT_ACCURACY``, `PreparedTask.with_train_holdout`): calibration's measure of overfitting."""

    role: str
    label: str
    policy: Any = "none"
    seed: Optional[int] = None
    learning_rate: Optional[float] = None
    epochs: Optional[int] = None
    question_only: bool = False
    validate_on: str = "val"
    report_examples: bool = False
    validate_each_epoch: bool = True
    holdout_fraction: Optional[float] = None

    def as_config(self) -> dict:
        return {RUN_KEY: dict(self.__dict__)}

    @classmethod
    def of(cls, config: dict) -> Optional["RunSpec"]:
        return cls(**config[RUN_KEY]) if RUN_KEY in config else None


@dataclass(frozen=True)
class TrialSettings:
    """Everything every trial of one search shares (sent to workers once with `tune.with_parameters`)."""

    search_space: Optional[SearchSpace]
    seed: int
    max_epochs: int
    learning_rate: float = 1e-3
    batch_size: int = 32
    report_robust: bool = False
    checkpoint_every_epoch: bool = False
    threads: int = 1
    accelerator: str = "cpu"
    report_epochs: Optional[tuple[int, ...]] = None  # None: report every epoch (PBT, ASHA without rungs known)
    # the driver's autoaug (the default is evaluated where the settings are built: the driver); every
    # trial checks its worker runs the same one first (`check_worker_version`)
    driver_version: Optional[str] = field(default_factory=_autoaug_version)

    def trial_accelerator(self) -> str:
        """Where a trial trains: on its GPU when the search gave trials GPUs and this worker's torch sees
        one; on CPU otherwise (a node whose Ray advertises GPUs its torch cannot use — a CPU-only torch,
        or the fake ``--num-gpus`` resources of a test cluster — trains on CPU rather than failing)."""
        return "gpu" if self.accelerator == "gpu" and torch.cuda.is_available() else "cpu"

    def reports_at(self, epoch: int, last_epoch: int) -> bool:
        """Whether the trial reports to Tune after ``epoch``: at the scheduler's decision points and the end."""
        return self.report_epochs is None or epoch in self.report_epochs or epoch >= last_epoch

    def policy_for(self, config: dict[str, Any], space: Optional[SearchSpace] = None, name: Optional[str] = None) -> Policy:
        """The policy of a trial: a preset for baseline trials, the explicit policy of a `RunSpec`,
        the space's params otherwise."""
        run = RunSpec.of(config)
        if run is not None:
            policy = Policy.load(run.policy) if isinstance(run.policy, str) else \
                Policy.from_dict(run.policy, source=run.label)
        elif BASELINE_KEY in config:
            policy = Policy.load(config[BASELINE_KEY])
        else:
            space = space or self.search_space
            params = {key: value for key, value in config.items() if not key.startswith("_")}
            policy = Policy.from_dict(space.policy_data(params, name=name), source=f"trial of {space.name}")
        if policy.config.seed is None:  # in the config, so the recorded and exported policy replays
            seed = run.seed if run is not None and run.seed is not None else self.seed
            policy = Policy(policy.config.model_copy(update={"seed": seed}), source=policy.source)
        return policy


class TuneReporter(L.Callback):
    """Reports each epoch to Ray Tune (and checkpoints for PBT); NaN fails the trial.

    It reports at the end of the training epoch, which Lightning reaches after that epoch's validation:
    the epoch's own training metrics are reduced by then (at the end of validation they are still the
    previous epoch's). With a ``policy``, each entry's applied fraction of the epoch is reported too.
    With ``report_examples``, the last epoch's report carries ``EXAMPLES_KEY``: the finished model's
    correctness on every example of the split it validated on, in order (the same model and examples
    as that epoch's ``val_accuracy``, which is their mean). With ``report_reliance`` (searched and
    baseline trials), the last epoch's metrics also hold the accuracy on that split with the image
    blanked and with the text blanked (``RELIANCE_METRICS``; two extra validation passes, once): what
    shows a policy that taught the model to ignore a modality. A trial stopped early never reaches its
    last epoch, so it has none. With ``report_holdout`` (calibration's ``none`` runs), every epoch also
    holds the accuracy on the held-out training examples (``HOLDOUT_ACCURACY``).
    """

    def __init__(self, settings: TrialSettings, clock: Optional["TrialClock"] = None,
                 policy: Optional[Policy] = None, report_examples: bool = False,
                 report_reliance: bool = False, report_holdout: bool = False) -> None:
        self.settings = settings
        self.report_holdout = report_holdout
        self.report_examples = report_examples
        self.report_reliance = report_reliance
        self.clock = clock
        self.history: list[dict[str, float]] = []
        self.counts = policy.count_entries() if policy is not None else None
        self.policy = policy

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from ray import tune

        if trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if self.counts is not None:
            from autoaug.policy.counting import applied_fraction_metrics

            metrics.update(applied_fraction_metrics(self.policy, self.counts.take()))
        for name in (METRIC, "val_loss", "train_loss"):
            if name in metrics and not math.isfinite(metrics[name]):
                raise FloatingPointError(f"{name} is {metrics[name]} at epoch {trainer.current_epoch + 1}")
        metrics["epoch"] = trainer.current_epoch + 1
        if self.clock is not None:
            metrics.update(self.clock.metrics())
        if self.settings.report_robust:
            from autoaug.trainers import evaluation

            robust = evaluation.robust_accuracies(pl_module.model, trainer.datamodule.loader(trainer.datamodule.val_split), pl_module.device)
            metrics[ROBUST_METRIC] = sum(robust.values()) / len(robust)
        if self.report_holdout:
            from autoaug.trainers import evaluation
            from autoaug.trainers.prepared import TRAIN_HOLDOUT_SPLIT

            metrics[HOLDOUT_ACCURACY] = evaluation.accuracy(pl_module.model, trainer.datamodule.loader(TRAIN_HOLDOUT_SPLIT),
                                                            device=pl_module.device)
        if self.report_reliance and metrics["epoch"] >= trainer.max_epochs:
            metrics.update(_modality_reliance(trainer, pl_module))
        self.history.append(metrics)
        if not self.settings.reports_at(metrics["epoch"], trainer.max_epochs):
            return
        # A Tune function trainable stops at every report until the driver has processed it (a round
        # trip per report): epochs in between travel in ``history`` with the next report instead.
        report = {**metrics, HISTORY_KEY: self.history}
        self.history = []
        if self.report_examples and metrics["epoch"] >= trainer.max_epochs:
            report[EXAMPLES_KEY] = _examples_correct(trainer, pl_module)
        if not self.settings.checkpoint_every_epoch:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as folder:
            trainer.save_checkpoint(Path(folder) / "trial.ckpt")
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


def _examples_correct(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """The encoded per-example correctness of the module's model on the split it validates on (in order)."""
    from autoaug.trainers import evaluation

    datamodule = trainer.datamodule
    correct = evaluation.per_example_correct(pl_module.model, datamodule.loader(datamodule.val_split), pl_module.device)
    return evaluation.encode_correct(correct)


def _modality_reliance(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
    """The module's model's accuracy on the split it validates on with each modality blanked, by metric name."""
    from autoaug.trainers import evaluation

    datamodule = trainer.datamodule
    accuracies = evaluation.modality_reliance(pl_module.model, datamodule.loader(datamodule.val_split), pl_module.device)
    return {RELIANCE_METRICS[name]: value for name, value in accuracies.items()}


class TrialClock(L.Callback):
    """Where a trial's time goes, from inside the trial: ``startup_seconds`` (from the trial function's
    start to its first training epoch: task fetch, model, trainer), ``epoch_seconds`` (training plus
    validation of the epoch just reported) and ``cpu_seconds`` (the trial's process CPU time so far).
    Read by `TuneReporter`; the driver's `TimeAccounting` sums them against the slots' wall time."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.cpu_started = time.process_time()  # a reused worker's process time runs on across trials
        self.startup = None
        self.epoch_started = started

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self.startup is None:
            self.startup = now - self.started
        self.epoch_started = now

    def metrics(self) -> dict[str, float]:
        return {"startup_seconds": float(self.startup or 0.0),
                "epoch_seconds": time.perf_counter() - self.epoch_started,
                "cpu_seconds": time.process_time() - self.cpu_started,
                "epoch_end_time": time.time()}  # wall clock: epochs reach the driver in batches


def proxy_trial(config: dict[str, Any], settings: TrialSettings, task: Any = None) -> None:
    """Ray Tune function trainable, wrapped with ``tune.with_parameters(proxy_trial, settings=...,
    task=prepared_task)``."""
    started = time.perf_counter()
    from ray import tune

    from autoaug.trainers.train import run_training

    check_worker_version(settings.driver_version)  # before anything: results of two codes must not mix
    torch.set_num_threads(max(1, settings.threads))  # trials share the machine's cores
    run = RunSpec.of(config)
    prepared = task.without_images() if run is not None and run.question_only else task
    if run is not None and run.holdout_fraction:
        prepared = prepared.with_train_holdout(run.holdout_fraction, seed=settings.seed)
    policy = settings.policy_for(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = Path(tempfile.mkdtemp()) / "trial.ckpt"
            resume.write_bytes((Path(folder) / "trial.ckpt").read_bytes())
    else:
        resume = None
    try:
        clock = TrialClock(started)
        run_training(
            prepared=prepared, policy=policy,
            seed=run.seed if run is not None and run.seed is not None else settings.seed,
            max_epochs=run.epochs if run is not None and run.epochs else settings.max_epochs,
            learning_rate=run.learning_rate if run is not None and run.learning_rate else settings.learning_rate,
            batch_size=settings.batch_size, accelerator=settings.trial_accelerator(),
            callbacks=[clock, TuneReporter(settings, clock, policy, report_examples=run is not None and run.report_examples,
                                           report_reliance=run is None,  # searched and baseline trials only
                                           report_holdout=run is not None and bool(run.holdout_fraction))],
            evaluate=False, resume_from=resume,
            val_split=run.validate_on if run is not None else "val",
            validate_each_epoch=run is None or run.validate_each_epoch,
        )
    finally:
        if resume is not None:
            resume.unlink(missing_ok=True)
