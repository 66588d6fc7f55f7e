"""Where a policy plugs into a user's training: a Lightning callback and a DataLoader collator.

Both are public (``from autoaug import PolicyCallback, PolicyCollator``, or from ``autoaug.policy``), and
`Policy.lightning_callback(total_steps=...)` / `Policy.collator(collate, total_steps=...)` build them, so
this module does not import the policy module back (that would be an import circle): what the classes
use of a policy is typed by `PolicyLike`, which `Policy` satisfies.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from typing import Any, Callable, Optional, Protocol

import lightning as L
import torch

from autoaug.batch import MultimodalBatch
from autoaug.errors import AutoaugInputError


class PolicyLike(Protocol):
    """What the callback and the collator use of a `Policy` (autoaug.policy.policy)."""

    config: Any  # a PolicyConfig: its entries' schedules
    source: str
    progress: float

    def __call__(self, batch: MultimodalBatch, step: int = 0, total_steps: int = 1,
                 stage: Optional[str] = None) -> MultimodalBatch: ...

    def apply_stage(self, batch: MultimodalBatch, stage: Optional[str], stream: int,
                    progress: float) -> MultimodalBatch: ...

    def set_progress(self, step: int, total_steps: int) -> None: ...


def scheduled_entries(policy: PolicyLike) -> list[str]:
    """``entries[i] (kind)`` for each entry whose schedule changes over training (needs its length)."""
    return [f"entries[{index}] ({entry.schedule.kind})" for index, entry in enumerate(policy.config.entries)
            if entry.schedule.kind != "constant"]


def _check_total(total_steps: Optional[int], where: str) -> Optional[int]:
    if total_steps is None:
        return None
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise AutoaugInputError(f"{where}: total_steps must be a positive integer, got {total_steps!r}")
    return total_steps


class PolicyCallback(L.Callback):
    """Augments training batches only; validation, test and predict batches are never touched.

    At each training batch it applies the policy's entries for the batch's stage, in place (Lightning
    hands the same object to ``training_step``), and gives the module ``pl_module.augment(batch,
    stage)`` for the later stages that happen inside the model (tokenise → ``"token"``, embed →
    ``"embedding"``). ``augment`` is the identity whenever the module is not training, so a module can
    call it unconditionally.
    """

    def __init__(self, policy: PolicyLike, total_steps: Optional[int] = None) -> None:
        """``total_steps``: optimizer steps of the whole run, for schedules when the trainer cannot
        tell (``max_epochs=-1`` without ``max_steps``, a loader without a length); by default the
        trainer's ``estimated_stepping_batches``."""
        self.policy = policy
        self.total_steps = _check_total(total_steps, "PolicyCallback")
        self._step = 0
        self._total = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.augment = self._augment_inside_model(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._step = trainer.global_step
        self._total = self.total_steps or self._trainer_total(trainer)
        self.policy.set_progress(self._step, self._total)
        if not isinstance(batch, MultimodalBatch):
            raise TypeError(f"autoaug's PolicyCallback expects MultimodalBatch training batches, got {type(batch).__name__}")
        augmented = self.policy(batch, step=self._step, total_steps=self._total, stage=batch.stage)
        for field in dataclasses.fields(batch):
            setattr(batch, field.name, getattr(augmented, field.name))

    def _trainer_total(self, trainer: L.Trainer) -> int:
        """The run's length from the trainer; a scheduled policy refuses to guess it."""
        total = trainer.estimated_stepping_batches  # inf, or -1 for an iterable loader, when unknown
        if 0 < total < float("inf"):
            return int(total)
        scheduled = scheduled_entries(self.policy)
        if scheduled:
            raise AutoaugInputError(
                f"policy {self.policy.source}: {', '.join(scheduled)} follow training progress, but the trainer "
                "cannot tell the run's length (no max_epochs/max_steps, or a loader without a length): set "
                "Trainer(max_steps=...) or use policy.lightning_callback(total_steps=<optimizer steps in the run>)")
        return 1  # constant schedules do not read progress

    def _augment_inside_model(self, pl_module: L.LightningModule) -> Callable[[MultimodalBatch, str], MultimodalBatch]:
        def augment(batch: MultimodalBatch, stage: str) -> MultimodalBatch:
            if not pl_module.training:
                return batch
            return self.policy(batch, step=self._step, total_steps=self._total, stage=stage)

        return augment


class PolicyCollator:
    """``collate_fn`` wrapper: the base collate builds a `MultimodalBatch`, the policy augments it.

    Works in DataLoader worker processes. Each batch gets its own random stream, derived from the
    worker's seed (which DataLoader draws afresh every epoch from its generator, so epochs differ and
    a seeded DataLoader repeats) and the worker's batch count. Schedules follow `Policy.set_progress`,
    which the training loop (or `PolicyCallback`) updates and forked workers read through shared
    memory — or, given ``total_steps`` (batches of the whole run), the collator's own count of the
    batches it has collated, shared by all workers (workers prefetch, so it runs a few batches ahead).
    A policy with schedules needs one of the two, and says so when it has neither.
    """

    def __init__(self, policy: PolicyLike, base_collate: Callable[[list], MultimodalBatch],
                 total_steps: Optional[int] = None, progress_from_set_progress: bool = False) -> None:
        self.policy = policy
        self.base_collate = base_collate
        self.total_steps = _check_total(total_steps, "PolicyCollator")
        scheduled = scheduled_entries(policy)
        if scheduled and self.total_steps is None and not progress_from_set_progress:
            raise AutoaugInputError(
                f"policy {policy.source}: {', '.join(scheduled)} follow training progress, which a collator "
                "cannot see: use policy.collator(collate, total_steps=<batches in the run>), or "
                "progress_from_set_progress=True if your loop calls policy.set_progress(step, total)")
        self._count = itertools.count()
        self._collated = multiprocessing.Value("q", 0)  # shared with forked workers

    def __call__(self, samples: list) -> MultimodalBatch:
        batch = self.base_collate(samples)
        worker = torch.utils.data.get_worker_info()
        worker_seed = worker.seed if worker is not None else 0
        stream = (worker_seed % 2**40) * 2**20 + next(self._count)
        return self.policy.apply_stage(batch, batch.stage, stream=stream, progress=self._progress())

    def _progress(self) -> float:
        if self.total_steps is None:
            return self.policy.progress
        with self._collated.get_lock():
            done = self._collated.value
            self._collated.value += 1
        return min(done / self.total_steps, 1.0)
