"""The Ray Tune trainable: one proxy training run of the policy a trial's config describes.

It reports **clean** validation accuracy after every epoch (what ASHA stops on and what Optuna is
told), the robust validation accuracy when the objective needs it, and — under Population Based
Training — a Lightning checkpoint every epoch so PBT can clone and resume trials.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch

from autoaug.policy import Policy
from autoaug.search.space import SearchSpace, load_space

BASELINE_KEY = "baseline"  # a trial config holding this key runs a preset instead of searched params


@dataclass(frozen=True)
class TrialSettings:
    """Everything every trial of one search shares (sent to workers once with `tune.with_parameters`)."""

    space_source: str
    task: Optional[str]
    data: Optional[str]
    seed: int
    max_epochs: int
    report_robust: bool = False
    checkpoint_every_epoch: bool = False
    threads: int = 1
    accelerator: str = "cpu"
    task_options: dict = field(default_factory=dict)

    def space(self) -> SearchSpace:
        return load_space(self.space_source)

    def policy_for(self, config: dict[str, Any], space: Optional[SearchSpace] = None, name: Optional[str] = None) -> Policy:
        """The policy of a trial: a preset for baseline trials, the space's params otherwise."""
        if BASELINE_KEY in config:
            policy = Policy.load(config[BASELINE_KEY])
        else:
            space = space or self.space()
            params = {key: value for key, value in config.items() if not key.startswith("_")}
            policy = Policy.from_dict(space.policy_data(params, name=name), source=f"trial of {space.name}")
        if policy.config.seed is None:  # in the config, so the recorded and exported policy replays
            policy = Policy(policy.config.model_copy(update={"seed": self.seed}), source=policy.source)
        return policy


class TuneReporter(L.Callback):
    """Reports each validation epoch to Ray Tune (and checkpoints for PBT); NaN fails the trial."""

    def __init__(self, settings: TrialSettings) -> None:
        self.settings = settings

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from ray import tune

        if trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        for name in ("val_accuracy", "val_loss", "train_loss"):
            if name in metrics and not math.isfinite(metrics[name]):
                raise FloatingPointError(f"{name} is {metrics[name]} at epoch {trainer.current_epoch + 1}")
        metrics["epoch"] = trainer.current_epoch + 1
        if self.settings.report_robust:
            from autoaug.trainers import evaluation

            robust = evaluation.robust_accuracies(pl_module.model, trainer.datamodule.loader("val"), pl_module.device)
            metrics["robust_val_accuracy"] = sum(robust.values()) / len(robust)
        if not self.settings.checkpoint_every_epoch:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            trainer.save_checkpoint(Path(folder) / "trial.ckpt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def proxy_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """Ray Tune function trainable (wrapped with `tune.with_parameters(proxy_trial, settings=...)`)."""
    from ray import tune

    from autoaug.trainers.train import run_training

    torch.set_num_threads(max(1, settings.threads))  # trials share the machine's cores
    policy = settings.policy_for(config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = Path(tempfile.mkdtemp()) / "trial.ckpt"
            resume.write_bytes((Path(folder) / "trial.ckpt").read_bytes())
    else:
        resume = None
    try:
        run_training(
            task=settings.task, data=settings.data, policy=policy, seed=settings.seed,
            max_epochs=settings.max_epochs, accelerator=settings.accelerator,
            callbacks=[TuneReporter(settings)], task_options=settings.task_options or None,
            evaluate=False, resume_from=resume,
        )
    finally:
        if resume is not None:
            resume.unlink(missing_ok=True)
