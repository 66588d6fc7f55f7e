"""What `autoaug search` was asked: `SearchRequest`, validated at the boundary (`validate`).

Errors name the Python field (``trials: expected a positive integer``); the CLI shows the flag that fed
it (``--trials: ...``), since the fields are the `search` command's parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from autoaug.errors import ParameterError
from autoaug.search.calibration import DEFAULT_LEARNING_RATES
from autoaug.search.race import DEFAULT_ROUNDS, parse_rounds
from autoaug.search.samplers import SAMPLERS, sampler_kind
from autoaug.storage import DEFAULT_WORKDIR
from autoaug.trainers.tasks import require_task_or_data
from autoaug.trainers.train import DEFAULT_MAX_EPOCHS

SCHEDULERS = ("asha", "pbt", "none")

__all__ = ["SAMPLERS", "SCHEDULERS", "SearchRequest"]


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
    gpus_per_trial: Optional[float] = None  # None: 1 when the Ray cluster has GPUs, else 0 (cluster.gpus_per_trial)
    address: Optional[str] = None
    workdir: str = str(DEFAULT_WORKDIR)
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
    confirm_top_k: int = 1
    confirm_seeds: int = 17
    confirm_holdout: bool = True  # confirm on a part of validation that calibration, trials and ranking never saw
    confirm_fraction: float = 0.5  # that part's share of the validation examples
    screen: bool = True  # every op of the space alone before the sampler (autoaug.search.screen)
    race: str = DEFAULT_ROUNDS  # the selection race's rounds before the confirmation (autoaug.search.race), or "off"
    reuse_workers: bool = True
    model: Optional[str] = None  # --model: None is the built-in tiny VLM (autoaug.trainers.hf_vlm)
    max_failures: int = 0  # --max-failures: retries of a trial that failed (worker lost, error) before it counts failed
    storage_path: Optional[str] = None  # --storage-path: Ray's results and checkpoints (None: the workdir's ray folder)

    def validate(self) -> None:
        require_task_or_data(self.task, self.data)
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ParameterError("trials", f"expected a positive integer, got {self.trials}")
        sampler_kind(self.sampler)
        if self.scheduler not in SCHEDULERS:
            raise ParameterError("scheduler", f"{self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not 0 < self.cpus_per_trial <= 256 or (self.cpus_per_trial > 1 and self.cpus_per_trial != int(self.cpus_per_trial)):
            raise ParameterError("cpus_per_trial", f"expected a fraction in (0, 1] or a whole number, got {self.cpus_per_trial}")
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial <= 64:
            raise ParameterError("gpus_per_trial", f"expected a number >= 0, got {self.gpus_per_trial}")
        if self.max_epochs is None:
            self.max_epochs = DEFAULT_MAX_EPOCHS
        if not isinstance(self.max_epochs, int) or self.max_epochs < 1:
            raise ParameterError("max_epochs", f"expected a positive integer, got {self.max_epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ParameterError("learning_rate", f"expected a positive number, got {self.learning_rate}")
        if not self.learning_rates or not all(isinstance(rate, (int, float)) and rate > 0 for rate in self.learning_rates):
            raise ParameterError("learning_rates", f"expected positive numbers, got {list(self.learning_rates)}")
        if self.confirm and self.confirm_top_k < 1:
            raise ParameterError("confirm_top_k", f"expected >= 1 candidate, got {self.confirm_top_k}")
        if self.confirm and self.confirm_seeds < 2:
            raise ParameterError("confirm_seeds", f"expected >= 2 seeds (a standard error needs two), got {self.confirm_seeds}")
        if self.confirm and self.confirm_holdout and not (isinstance(self.confirm_fraction, (int, float))
                                                         and 0.0 < self.confirm_fraction < 1.0):
            raise ParameterError("confirm_fraction", f"expected a fraction in (0, 1), got {self.confirm_fraction}")
        if self.confirm:
            parse_rounds(self.race)
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ParameterError("max_failures", f"expected a non-negative integer, got {self.max_failures}")
        if self.data_seed < 0:
            raise ParameterError("data_seed", f"expected a non-negative integer, got {self.data_seed}")
        if not self.name or "/" in self.name:
            raise ParameterError("name", f"expected a study name without '/', got {self.name!r}")

    @property
    def objectives(self) -> int:
        """1 (clean validation accuracy) or 2 (clean and robust: ``--sampler nsga2``)."""
        return sampler_kind(self.sampler).objectives
