"""Where a policy plugs into a user's training: a Lightning callback and a DataLoader collator."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import lightning as L
import torch

from autoaug.batch import MultimodalBatch
from autoaug.policy.policy import Policy, batch_stage


class PolicyCallback(L.Callback):
    """Augments training batches only; validation, test and predict batches are never touched.

    At each training batch it applies the policy's entries for the batch's stage, in place (Lightning
    hands the same object to ``training_step``), and gives the module ``pl_module.augment(batch,
    stage)`` for the later stages that happen inside the model (tokenise → ``"token"``, embed →
    ``"embedding"``). ``augment`` is the identity whenever the module is not training, so a module can
    call it unconditionally.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._step = 0
        self._total = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.augment = self._augment_inside_model(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._step = trainer.global_step
        total = trainer.estimated_stepping_batches
        self._total = int(total) if total and total != float("inf") else max(self._step + 1, 1)
        self.policy.set_progress(self._step, self._total)
        if not isinstance(batch, MultimodalBatch):
            raise TypeError(f"autoaug's PolicyCallback expects MultimodalBatch training batches, got {type(batch).__name__}")
        augmented = self.policy(batch, step=self._step, total_steps=self._total, stage=batch_stage(batch))
        for field in dataclasses.fields(batch):
            setattr(batch, field.name, getattr(augmented, field.name))

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
    memory.
    """

    def __init__(self, policy: Policy, base_collate: Callable[[list], MultimodalBatch]) -> None:
        self.policy = policy
        self.base_collate = base_collate
        self._count = itertools.count()

    def __call__(self, samples: list) -> MultimodalBatch:
        batch = self.base_collate(samples)
        worker = torch.utils.data.get_worker_info()
        worker_seed = worker.seed if worker is not None else 0
        stream = (worker_seed % 2**40) * 2**20 + next(self._count)
        return self.policy.apply_stage(batch, batch_stage(batch), stream=stream, progress=self.policy.progress)
