"""Schedules: a multiplier in [0, 1] of an entry's magnitude (and optionally p) over training progress.

Progress is ``step / total_steps`` clipped to [0, 1]. Each schedule is a small pydantic model
registered by its ``kind``, so a YAML entry ``schedule: {kind: cosine, start: 0.2}`` (or just
``schedule: cosine``) maps to it without an if-chain. docs/GUIDELINES.md, "Schedules": start light,
strengthen, ease off near the end — that is `warmup_peak_cooldown`. Population Based Training
produces `piecewise` schedules (values that change at exploit steps).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from autoaug.policy.strict import StrictModel

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
SPARK = "▁▂▃▄▅▆▇█"


class _Schedule(StrictModel):

    def __call__(self, progress: float) -> float:
        return self.value_at(min(max(float(progress), 0.0), 1.0))

    def value_at(self, progress: float) -> float:  # pragma: no cover - every kind overrides
        raise NotImplementedError

    def curve(self, points: int = 24) -> list[float]:
        """Values at ``points`` evenly spaced progress points from 0 to 1 (for plots)."""
        return [self(i / (points - 1)) for i in range(points)]

    def sparkline(self, points: int = 16) -> str:
        """The schedule drawn as a one-line sparkline (▁ = 0, █ = 1)."""
        return "".join(SPARK[min(int(v * len(SPARK)), len(SPARK) - 1)] for v in self.curve(points))

    def describe(self) -> str:
        """Kind and the settings that differ from the defaults, e.g. ``cosine start=0.2``."""
        changed = self.model_dump(exclude={"kind"}, exclude_defaults=True)
        return " ".join([self.kind, *(f"{k}={v}" for k, v in changed.items())])


class Constant(_Schedule):
    """The same multiplier all along (default 1: the entry's magnitude as written)."""

    kind: Literal["constant"] = "constant"
    value: Unit = 1.0

    def value_at(self, progress: float) -> float:
        return self.value


class Linear(_Schedule):
    """Straight line from ``start`` at progress 0 to ``end`` at progress 1."""

    kind: Literal["linear"] = "linear"
    start: Unit = 0.0
    end: Unit = 1.0

    def value_at(self, progress: float) -> float:
        return self.start + (self.end - self.start) * progress


class Cosine(_Schedule):
    """Half-cosine from ``start`` at progress 0 to ``end`` at progress 1 (flat at both ends)."""

    kind: Literal["cosine"] = "cosine"
    start: Unit = 0.0
    end: Unit = 1.0

    def value_at(self, progress: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Step(_Schedule):
    """``values[i]`` between ``milestones[i-1]`` and ``milestones[i]`` (one more value than milestones)."""

    kind: Literal["step"] = "step"
    milestones: list[Unit] = Field(default_factory=lambda: [0.5])
    values: list[Unit] = Field(default_factory=lambda: [0.5, 1.0])

    @model_validator(mode="after")
    def _shape(self) -> "Step":
        if len(self.values) != len(self.milestones) + 1:
            raise ValueError(
                f"values must have one more item than milestones ({len(self.milestones) + 1}), "
                f"got {len(self.values)}"
            )
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError("milestones must be increasing")
        return self

    def value_at(self, progress: float) -> float:
        index = sum(progress >= milestone for milestone in self.milestones)
        return self.values[index]


class WarmupPeakCooldown(_Schedule):
    """The curriculum of docs/GUIDELINES.md, "Schedules": rise from ``start`` to 1 until ``warmup``,
    hold, fall to ``end`` after ``cooldown``."""

    kind: Literal["warmup_peak_cooldown"] = "warmup_peak_cooldown"
    warmup: Unit = 0.2
    cooldown: Unit = 0.8
    start: Unit = 0.0
    end: Unit = 0.3

    @model_validator(mode="after")
    def _order(self) -> "WarmupPeakCooldown":
        if self.warmup > self.cooldown:
            raise ValueError(f"warmup ({self.warmup}) must not come after cooldown ({self.cooldown})")
        return self

    def value_at(self, progress: float) -> float:
        if progress < self.warmup:
            return self.start + (1.0 - self.start) * progress / self.warmup
        if progress <= self.cooldown or self.cooldown >= 1.0:
            return 1.0
        return 1.0 + (self.end - 1.0) * (progress - self.cooldown) / (1.0 - self.cooldown)


class Piecewise(_Schedule):
    """Values at given progress points (what Population Based Training produces), held or interpolated.

    ``points`` are ``[progress, value]`` pairs with increasing progress; before the first point the
    first value holds. ``interpolation: step`` holds each value until the next point (PBT's exploit
    steps); ``linear`` draws straight lines between points.
    """

    kind: Literal["piecewise"] = "piecewise"
    points: list[tuple[Unit, Unit]] = Field(min_length=1)
    interpolation: Literal["step", "linear"] = "step"

    @model_validator(mode="after")
    def _increasing(self) -> "Piecewise":
        times = [t for t, _ in self.points]
        if times != sorted(times):
            raise ValueError("points must be ordered by progress")
        return self

    def value_at(self, progress: float) -> float:
        value = self.points[0][1]
        for index, (time, point_value) in enumerate(self.points):
            if progress < time:
                if self.interpolation == "linear" and index > 0:
                    previous_time, previous_value = self.points[index - 1]
                    share = (progress - previous_time) / (time - previous_time)
                    return previous_value + (point_value - previous_value) * share
                return value
            value = point_value
        return value


Schedule = Annotated[
    Union[Constant, Linear, Cosine, Step, WarmupPeakCooldown, Piecewise],
    Field(discriminator="kind"),
]
SCHEDULES: dict[str, type[_Schedule]] = {
    cls.model_fields["kind"].default: cls
    for cls in (Constant, Linear, Cosine, Step, WarmupPeakCooldown, Piecewise)
}
