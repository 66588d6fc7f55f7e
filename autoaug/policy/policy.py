"""`Policy`: a validated policy file turned into a callable augmentation (docs/ARCHITECTURE.md).

    policy = Policy.load("policy.yaml")          # or a preset name: "moderate"
    batch = policy(batch, step=step, total_steps=total)

Each call applies the entries of one pipeline stage (pixel → token → embedding); without ``stage`` the
batch's own stage is used (`batch_stage`). Randomness comes from generators derived from
``(policy seed, step, stage)``, so the pixel, token and embedding calls of one step agree on which
samples stay clean and which entries each sample got, and a seeded policy gives the same augmented
batch for the same input and step. Every applied op's sampled params can be recorded and replayed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import yaml
from torch import Tensor

from autoaug import ops
from autoaug.batch import MultimodalBatch
from autoaug.errors import AutoaugInputError
from autoaug.ops import sampling
from autoaug.ops.base import STAGES, Params
from autoaug.policy.counting import EntryCounts
from autoaug.policy.schema import PolicyConfig, PolicyEntry, PolicyError, dump_document, read_document, validate_policy

PRESETS = ("none", "conservative", "moderate", "aggressive", "trivial", "randaugment")


@dataclass
class AppliedOp:
    """One op application as it happened: enough to log it and to replay it exactly."""

    entry: int
    op: str
    stage: str
    magnitude: float
    params: Params

    def summary(self) -> dict:
        """Loggable scalars: how many samples it touched at which magnitude."""
        return {"entry": self.entry, "op": self.op, "stage": self.stage, "magnitude": self.magnitude,
                "samples": int(self.params["active"].sum())}


def batch_stage(batch: MultimodalBatch) -> str:
    """The pipeline stage a batch is at (`MultimodalBatch.stage`): embedding, token or pixel."""
    return batch.stage


class Policy:
    """A callable augmentation policy built from a validated `PolicyConfig`."""

    def __init__(self, config: PolicyConfig, source: Union[str, Path] = "<memory>") -> None:
        self.config = config
        self.source = str(source)
        self.ops = [_build_op(entry, index, self.source) for index, entry in enumerate(config.entries)]
        self.seed = config.seed if config.seed is not None else secrets.randbits(62)
        self.record = False
        self.applied: list[AppliedOp] = []
        self.counts: Optional[EntryCounts] = None  # see count_entries
        # Shared with DataLoader workers forked after it is made, so collators follow the schedule.
        self._progress = multiprocessing.Value("d", 0.0, lock=False)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, path_or_preset: Union[str, Path]) -> "Policy":
        """A policy from a YAML/JSON file, or a shipped preset by name (see `PRESETS`)."""
        path = Path(path_or_preset)
        if not path.exists() and str(path_or_preset) in PRESETS:
            preset = resources.files("autoaug.policy") / "presets" / f"{path_or_preset}.yaml"
            return cls.from_dict(yaml.safe_load(preset.read_text()), source=f"preset '{path_or_preset}'")
        if not path.is_file():
            raise PolicyError(f"{str(path_or_preset) or repr(str(path_or_preset))}: no such policy file, "
                              f"and not a preset (presets: {', '.join(PRESETS)})")
        return cls.from_dict(read_document(path, PolicyError, "a policy"), source=path)

    @classmethod
    def from_dict(cls, data: Any, source: Union[str, Path] = "<dict>") -> "Policy":
        return cls(validate_policy(data, source), source=source)

    def to_dict(self) -> dict:
        return self.config.model_dump(mode="json", exclude_none=True)

    def dumps(self, format: str = "yaml") -> str:
        """The policy as text; the same policy always gives the same bytes."""
        if format == "json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        return dump_document(self.to_dict())

    def dump(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.write_text(self.dumps("json" if path.suffix == ".json" else "yaml"))
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other.config == self.config

    def __repr__(self) -> str:
        names = ", ".join(entry.op for entry in self.config.entries) or "no entries"
        return f"Policy({self.config.name or self.source}: {names})"

    # ------------------------------------------------------------------ applying
    @property
    def stages(self) -> list[str]:
        """Stages that have entries, in pipeline order."""
        present = {entry.stage for entry in self.config.entries}
        return [stage for stage in STAGES if stage in present]

    def __call__(
        self,
        batch: MultimodalBatch,
        step: int = 0,
        total_steps: int = 1,
        stage: Optional[str] = None,
    ) -> MultimodalBatch:
        """Apply this policy's entries of ``stage`` (default: the batch's stage) at training ``step``."""
        progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return self.apply_stage(batch, stage, stream=step, progress=progress)

    def apply_stage(
        self, batch: MultimodalBatch, stage: Optional[str], stream: int, progress: float
    ) -> MultimodalBatch:
        """Apply the entries of one stage with randomness keyed by ``stream`` at schedule ``progress``.

        ``stream`` is the training step for `__call__`; a collator passes a per-batch key instead.
        """
        if not isinstance(batch, MultimodalBatch):
            raise AutoaugInputError(f"a policy is applied to a MultimodalBatch, got {type(batch).__name__}")
        stage = stage or batch.stage
        if stage not in STAGES:
            raise AutoaugInputError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
        entries = [index for index, entry in enumerate(self.config.entries) if entry.stage == stage]
        if not entries:
            return batch
        eligible, chosen = self._selection(batch.batch_size, stream, batch.device)
        generator = _derived_generator(self.seed, stream, stage)
        start = batch
        for index in entries:
            entry, op = self.config.entries[index], self.ops[index]
            multiplier = entry.schedule(progress)
            magnitude = min(entry.magnitude * multiplier * getattr(self.config.balance, op.modality), 1.0)
            if self.config.magnitude_sampling == "uniform":
                magnitude *= float(sampling.uniform(generator, (1,), "cpu"))
            probability = entry.p * (multiplier if entry.schedule_p else 1.0)
            active = eligible & chosen[index] & sampling.bernoulli(
                generator, probability, (batch.batch_size,), batch.device)
            params = op.sample_params(batch, magnitude, generator, active)
            if self.counts is not None:
                self.counts.add(index, params["active"], batch.batch_size)
            batch = op.apply(batch, params)
            if self.record:
                self.applied.append(AppliedOp(index, entry.op, stage, magnitude, params))
        return self._weigh(start, batch)

    def count_entries(self) -> EntryCounts:
        """Start counting, per entry, the samples each application touched (see `EntryCounts`)."""
        self.counts = EntryCounts(len(self.config.entries))
        return self.counts

    def replay(self, batch: MultimodalBatch, applied: list[AppliedOp]) -> MultimodalBatch:
        """Re-apply recorded op applications (from ``policy.applied``) exactly."""
        start = batch
        for record in applied:
            batch = self.ops[record.entry].apply(batch, record.params)
        return self._weigh(start, batch)

    def _weigh(self, before: MultimodalBatch, after: MultimodalBatch) -> MultimodalBatch:
        """Scale the loss weight of samples this call augmented for the first time."""
        weight = self.config.augmented_loss_weight
        if weight == 1.0 or after is before:
            return after
        newly = after.augmented & ~before.augmented
        return after.replace(loss_weight=torch.where(newly, after.loss_weight * weight, after.loss_weight))

    def _selection(self, batch_size: int, stream: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Which samples may be augmented (not clean) and which entries each got, for this step.

        Drawn from a generator of its own so every stage of one step sees the same selection.
        Returns ``eligible`` [B] and ``chosen`` [E, B] (all True in sequential mode).
        """
        generator = _derived_generator(self.seed, stream, "selection")
        eligible = ~sampling.bernoulli(generator, self.config.clean_fraction, (batch_size,), device)
        count = len(self.config.entries)
        if self.config.selection == "sequential":
            return eligible, torch.ones(count, batch_size, dtype=torch.bool, device=device)
        scores = sampling.uniform(generator, (batch_size, count), device)
        picked = scores.topk(self.config.n, dim=1).indices
        chosen = torch.zeros(batch_size, count, dtype=torch.bool, device=device)
        chosen.scatter_(1, picked, True)
        return eligible, chosen.T

    # ------------------------------------------------------------------ integrations
    def set_progress(self, step: int, total_steps: int) -> None:
        """Training progress for collators running in DataLoader workers (the callback calls this)."""
        self._progress.value = min(max(step / max(total_steps, 1), 0.0), 1.0)

    @property
    def progress(self) -> float:
        return self._progress.value

    def lightning_callback(self, total_steps: Optional[int] = None):
        """A Lightning `Callback` (`PolicyCallback`) that augments training batches only (validation stays clean).

        Schedules follow ``trainer.global_step / total``, where ``total`` is ``total_steps`` (optimizer
        steps of the whole run) or, by default, the trainer's ``estimated_stepping_batches``; a
        scheduled policy refuses to run when neither says the run's length.
        """
        from autoaug.policy.integrations import PolicyCallback

        return PolicyCallback(self, total_steps=total_steps)

    def collator(self, base_collate: Callable[[list], MultimodalBatch], total_steps: Optional[int] = None,
                 progress_from_set_progress: bool = False):
        """Wrap a DataLoader ``collate_fn`` so each collated batch comes out augmented (`PolicyCollator`).

        ``total_steps``: batches this collator collates over the whole run (all epochs); schedules then
        follow the collator's own count. A scheduled policy needs it, or ``progress_from_set_progress=True``
        when the training loop calls ``policy.set_progress(step, total)`` itself.
        """
        from autoaug.policy.integrations import PolicyCollator

        return PolicyCollator(self, base_collate, total_steps=total_steps,
                              progress_from_set_progress=progress_from_set_progress)

    def consistency_loss(self, clean_logits: Tensor, augmented_logits: Tensor) -> Tensor:
        """This policy's consistency term (0 when the policy has none)."""
        from autoaug.policy.consistency import consistency_kl

        settings = self.config.consistency
        if settings is None or settings.weight == 0.0:
            return augmented_logits.new_zeros(())
        return settings.weight * consistency_kl(clean_logits, augmented_logits, settings.temperature)


def _build_op(entry: PolicyEntry, index: int, source: str) -> ops.Op:
    try:
        return ops.get(entry.op, **entry.options)
    except TypeError as error:
        raise PolicyError(f"{source}: entries[{index}].options: {_first_line(error)}") from None
    except AutoaugInputError as error:
        raise PolicyError(f"{source}: entries[{index}].options: {error}") from None


def _derived_generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator whose seed is a hash of (policy seed, step, purpose)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{purpose}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _first_line(error: BaseException) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:  # YAML errors: say what and where, on one line
        return f"{getattr(error, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
