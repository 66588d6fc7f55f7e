"""How many samples each policy entry touched: the check that the sampled policy reached training.

A tuner can record one policy and train with another ("all trials train identically"). `EntryCounts`
counts, per entry, the samples the entry's op was applied to (its ``active`` mask after the policy's
clean fraction, selection and coin flip, and the op's own draw) and the samples it saw. Counting adds
on the batch's device and never waits for it; `EntryCounts.take` reads the totals once (per epoch).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class EntryCounts:
    """Per-entry ``applied`` (samples touched) and ``seen`` (samples offered) since the last `take`."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._applied: Optional[Tensor] = None  # int64 [entries], on the device the batches are on
        self._seen = [0] * entries

    def add(self, entry: int, active: Tensor, batch_size: int) -> None:
        """Count one application of ``entry`` (``active`` [B] bool: the samples it touched)."""
        if self._applied is None:
            self._applied = torch.zeros(self.entries, dtype=torch.int64, device=active.device)
        elif self._applied.device != active.device:
            self._applied = self._applied.to(active.device)
        self._applied[entry] += active.sum()  # stays on the device: no synchronisation here
        self._seen[entry] += batch_size

    def take(self) -> list[tuple[int, int]]:
        """``[(applied, seen)]`` per entry since the last call, and start counting afresh."""
        applied = self._applied.tolist() if self._applied is not None else [0] * self.entries
        counts = list(zip(applied, self._seen))
        self._applied, self._seen = None, [0] * self.entries
        return counts


def applied_fraction_metrics(policy, counts: list[tuple[int, int]]) -> dict[str, float]:
    """``entry{k}.{op}.applied_fraction`` (touched / seen) and ``entry{k}.{op}.applied_samples`` per entry."""
    metrics: dict[str, float] = {}
    for index, (entry, (applied, seen)) in enumerate(zip(policy.config.entries, counts)):
        prefix = f"entry{index}.{entry.op}"
        metrics[f"{prefix}.applied_samples"] = float(applied)
        metrics[f"{prefix}.applied_fraction"] = applied / seen if seen else 0.0
    return metrics
