"""The contract every op follows: declared metadata, sample parameters, then apply them.

An op is a small class registered by name. It declares

- ``stage``: ``pixel`` (before tokenisation, on ``images``), ``token`` (patch pixels and text ids) or
  ``embedding`` (patch and text embeddings);
- ``modality``: ``vision``, ``text`` or ``cross`` (touches both, or the relation between them);
- ``parameter`` and ``default_range``: what the magnitude controls and the value of that parameter
  at magnitude 0 and at magnitude 1 (linear in between). Instances may override the range;
- ``mixes_labels``: whether the op rewrites ``labels`` (mixing ops).

Randomness lives only in `Op.sample_params`, which returns a dict of per-sample tensors; `Op.apply`
is a deterministic tensor program of the batch and those params. So a logged params dict replays the
exact batch, and the same generator seed gives the same output bit for bit on CPU.

Every params dict holds ``active`` ``[B]`` (bool): samples the op is allowed to change. The policy
uses it for per-sample probabilities, the clean fraction and RandAugment-style selection; an op leaves
inactive samples bit-identical. A magnitude whose parameter is 0 makes every sample inactive, so
magnitude 0 is the identity for every op whose range starts at 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Optional

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.errors import OpArgumentError

Stage = Literal["pixel", "token", "embedding"]
Modality = Literal["vision", "text", "cross"]
Params = dict[str, Tensor]

STAGES: tuple[Stage, ...] = ("pixel", "token", "embedding")
MODALITIES: tuple[Modality, ...] = ("vision", "text", "cross")


class Op(ABC):
    """Base class of every augmentation op (see the module docstring for the contract)."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    modality: ClassVar[Modality]
    parameter: ClassVar[str]
    default_range: ClassVar[tuple[float, float]]
    mixes_labels: ClassVar[bool] = False
    uses_saliency: ClassVar[bool] = False  # reads batch.saliency (a trainer fills it before the op runs)

    def __init__(self, magnitude_range: Optional[tuple[float, float]] = None) -> None:
        low, high = self.default_range if magnitude_range is None else magnitude_range
        if not (math.isfinite(low) and math.isfinite(high)):
            raise OpArgumentError(
                f"{self.name}: magnitude_range must be two finite numbers, got {magnitude_range!r}"
            )
        self.magnitude_range = (float(low), float(high))

    # ------------------------------------------------------------------ metadata
    @classmethod
    def summary(cls) -> str:
        """First line of the op's docstring: what it does, in one sentence."""
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def describe(cls) -> dict:
        return {
            "name": cls.name,
            "stage": cls.stage,
            "modality": cls.modality,
            "magnitude_range": list(cls.default_range),
            "parameter": cls.parameter,
            "mixes_labels": cls.mixes_labels,
            "summary": cls.summary(),
        }

    def strength(self, magnitude: float) -> float:
        """The op's own parameter for a magnitude in [0, 1] (linear map onto ``magnitude_range``)."""
        check_magnitude(self.name, magnitude)
        low, high = self.magnitude_range
        return low + float(magnitude) * (high - low)

    # ------------------------------------------------------------------ the two halves
    def sample_params(
        self,
        batch: MultimodalBatch,
        magnitude: float,
        generator: Optional[torch.Generator] = None,
        active: Optional[Tensor] = None,
    ) -> Params:
        """Draw every random choice of this op for this batch; ``active`` restricts it to some samples."""
        strength = self.strength(magnitude)
        self.check_batch(batch)
        active = _resolve_active(self.name, batch, active)
        if strength == 0.0:
            active = torch.zeros_like(active)
        generator = generator if generator is not None else _fresh_generator(batch.device)
        params = self._sample(batch, strength, generator)
        if "applies" in params:  # the draw leaves some samples untouched: they are not augmented
            active = active & params.pop("applies")
        params["active"] = active
        return params

    def apply(self, batch: MultimodalBatch, params: Params) -> MultimodalBatch:
        """Apply sampled params to the batch (deterministic; the input batch is not mutated)."""
        if "active" not in params:
            raise OpArgumentError(f"{self.name}: params must hold 'active' (as sample_params returns)")
        active = params["active"].to(batch.device)
        if not bool(active.any()):
            return batch
        out = self._apply(batch, params, active)
        return out.replace(augmented=batch.augmented | active)

    def __call__(
        self,
        batch: MultimodalBatch,
        magnitude: float,
        generator: Optional[torch.Generator] = None,
        active: Optional[Tensor] = None,
    ) -> MultimodalBatch:
        return self.apply(batch, self.sample_params(batch, magnitude, generator, active))

    def check_batch(self, batch: MultimodalBatch) -> None:
        """Raise a clear error if the batch lacks what this op's stage needs."""
        if self.stage == "pixel":
            batch.require("images", op=self.name)
        elif self.modality in ("vision", "cross"):
            batch.require("vision", op=self.name)
        if self.stage == "embedding" and self.modality in ("text", "cross"):
            batch.require("text_embeddings", op=self.name)

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        """Draw this op's per-sample params (tensors on the batch's device) for every sample.

        An op whose draw leaves some samples unchanged (a per-sample coin flip) returns their
        complement as ``applies`` [B] bool; it is folded into ``active``.
        """

    @abstractmethod
    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        """Apply params; samples where ``active`` is False must come out bit-identical."""


def check_magnitude(op_name: str, magnitude: float) -> None:
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) \
            or not math.isfinite(magnitude) or not 0.0 <= magnitude <= 1.0:
        raise OpArgumentError(f"{op_name}: magnitude must be a number in [0, 1], got {magnitude!r}")


def where_active(active: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for active samples, ``old`` elsewhere (``active`` is ``[B]``, broadcast over the rest)."""
    return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)


def _resolve_active(op_name: str, batch: MultimodalBatch, active: Optional[Tensor]) -> Tensor:
    if active is None:
        return torch.ones(batch.batch_size, dtype=torch.bool, device=batch.device)
    if not isinstance(active, Tensor) or active.dtype != torch.bool or active.shape != (batch.batch_size,):
        raise OpArgumentError(
            f"{op_name}: active must be a bool tensor of shape [{batch.batch_size}], got "
            f"{getattr(active, 'shape', active)!r}"
        )
    return active.to(batch.device)


def _fresh_generator(device: torch.device) -> torch.Generator:
    """An unseeded generator for callers who do not need reproducibility."""
    generator = torch.Generator(device=device)
    generator.seed()
    return generator
