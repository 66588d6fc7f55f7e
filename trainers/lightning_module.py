"""The proxy trial as Lightning code: a module that runs the full pipeline, and its data module.

Training step (docs/ARCHITECTURE.md)::

    pixel batch ─(PolicyCallback: pixel ops)─► to_token_stage ─► [saliency from a no-grad forward,
    only when an op reads it] ─► augment("token") ─► embed ─► augment("embedding") ─► model ─► loss

``augment`` is installed by the policy's `PolicyCallback` and is the identity outside training, so
validation and test batches are always clean. Validation reports clean accuracy every epoch
(``val_accuracy``), which is what early stopping and the search read.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch

from autoaug.batch import MultimodalBatch
from autoaug.policy import Policy

from .model import TinyVLM, soft_cross_entropy
from .prepared import PreparedTask, TensorBatches


class ProxyTrialModule(L.LightningModule):
    """Trains a `TinyVLM` with soft-label cross-entropy (mixing ops mix labels), per-sample loss
    weights from the policy, and the policy's optional consistency term."""

    def __init__(self, model: TinyVLM, policy: Optional[Policy] = None, learning_rate: float = 1e-3,
                 weight_decay: float = 0.05, warmup_fraction: float = 0.05) -> None:
        super().__init__()
        self.model = model
        self.policy = policy
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.needs_saliency = policy is not None and any(op.uses_saliency for op in policy.ops)
        self.wants_consistency = policy is not None and policy.config.consistency is not None \
            and policy.config.consistency.weight > 0

    def augment(self, batch: MultimodalBatch, stage: str) -> MultimodalBatch:
        """Identity until a `PolicyCallback` replaces it (then: the policy's entries of ``stage``)."""
        return batch

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> torch.Tensor:
        tokens = self.model.to_token_stage(batch)
        if self.needs_saliency:
            tokens = self.model.with_saliency(tokens)
        clean_tokens = tokens
        tokens = self.augment(tokens, "token")
        embedded = self.augment(self.model.embed(tokens), "embedding")
        output = self.model(embedded)
        loss = soft_cross_entropy(output.logits, embedded.labels, embedded.loss_weight)
        if self.wants_consistency:
            clean_logits = self.model(self.model.embed(clean_tokens)).logits
            loss = loss + self.policy.consistency_loss(clean_logits, output.logits)
        accuracy = (output.logits.argmax(-1) == embedded.labels.argmax(-1)).float().mean()
        self.log_dict({"train_loss": loss.detach(), "train_accuracy": accuracy},
                      on_step=False, on_epoch=True, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        logits = self.model.predict(batch).logits
        loss = soft_cross_entropy(logits, batch.labels)
        accuracy = (logits.argmax(-1) == batch.labels.argmax(-1)).float().mean()
        self.log_dict({"val_loss": loss, "val_accuracy": accuracy}, on_step=False, on_epoch=True,
                      batch_size=batch.batch_size)

    def configure_optimizers(self):
        """AdamW, linear warm-up over the first ``warmup_fraction`` of the steps, then cosine decay to 0.

        The schedule is stepped per batch and sized from Lightning's ``estimated_stepping_batches`` (the
        whole run's optimiser steps), so a run of any length ends at learning rate 0."""
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate,
                                      weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(int(round(self.warmup_fraction * total)), 1)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1)),
        ], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        # Lightning's default deep-copies dataclasses field by field; `to` moves the tensors once.
        return batch.to(device) if isinstance(batch, MultimodalBatch) else \
            super().transfer_batch_to_device(batch, device, dataloader_idx)


class ProxyDataModule(L.LightningDataModule):
    """Train / val / test batches of a `PreparedTask` (stacked tensors, no per-step collation).

    The training order of epoch ``e`` depends on ``(seed, e)`` only (`TensorBatches`), so every trial
    of a search sees the same data order and a run restored from a checkpoint continues it."""

    def __init__(self, task: PreparedTask, batch_size: int = 32, seed: int = 0, val_split: str = "val") -> None:
        super().__init__()
        self.task = task
        self.batch_size = batch_size
        self.seed = seed
        self.val_split = val_split  # "confirm": a confirmation run validates on the held-out part

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> TensorBatches:
        return self.task.batches("train", self.batch_size, shuffle=True, seed=self.seed, epoch=self._epoch)

    def val_dataloader(self) -> TensorBatches:
        return self.loader(self.val_split)

    def test_dataloader(self) -> TensorBatches:
        return self.loader("test")

    def loader(self, split: str, batch_size: int = 256) -> TensorBatches:
        """An in-order iterable of one split's batches (evaluation)."""
        return self.task.batches(split, batch_size)
