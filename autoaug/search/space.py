"""Declarative search spaces (DESIGN §7): YAML files validated on load, sampled define-by-run.

Three kinds, one per search style:

- ``policy`` (``vlm_default``): up to ``entries.max`` entries; for each, the op is a categorical choice
  and its ``p``, magnitude and schedule are conditional on that choice; plus clean fraction, loss
  weight of augmented samples and per-modality balance;
- ``randaugment``: RandAugment's N × M grid over a fixed op list (``--sampler grid``);
- ``pba_schedule``: Population Based Augmentation: a magnitude and a probability per op, changed over
  training by Ray Tune's Population Based Training and exported as ``piecewise`` schedules.

Parameter names are flat strings (``entry0.op``, ``entry0.vision_token_dropout.magnitude``,
``clean_fraction``), the same in Optuna, Ray Tune's config and MLflow, so a trial's params turn into
its policy by a pure function (`SearchSpace.policy_data`), in the driver and in the trainable alike.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoaug import ops
from autoaug.errors import AutoaugInputError
from autoaug.ops.base import STAGES
from autoaug.policy.schedules import SCHEDULES
from autoaug.policy.schema import allowed_fields, field_path

SPACE_SCHEMA_VERSION = 1
SHIPPED = ("vlm_default", "randaugment", "pba_schedule")


class SearchSpaceError(AutoaugInputError):
    """A search space file that does not exist or does not validate."""


Range = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(value: Range, low: float = 0.0, high: float = 1.0) -> Range:
    lo, hi = value
    if not low <= lo <= hi <= high:
        raise ValueError(f"expected [low, high] with {low} <= low <= high <= {high}, got {list(value)}")
    return value


class OpRanges(_Strict):
    """Ranges searched for one op: its probability p and its magnitude (both within [0, 1])."""

    p: Range = (0.5, 1.0)
    magnitude: Range = (0.0, 1.0)

    @field_validator("p", "magnitude")
    @classmethod
    def _unit(cls, value: Range) -> Range:
        return _check_range(value)


class EntryCount(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(4, ge=1, le=12)

    @model_validator(mode="after")
    def _ordered(self) -> "EntryCount":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class _SpaceBase(_Strict):
    schema_version: int = SPACE_SCHEMA_VERSION
    name: str
    description: str = ""
    clean_fraction: Union[float, Range] = 0.4
    metric: Literal["val_accuracy"] = "val_accuracy"

    @field_validator("schema_version")
    @classmethod
    def _version(cls, version: int) -> int:
        if version > SPACE_SCHEMA_VERSION:
            raise ValueError(f"schema_version {version} is newer than this autoaug supports "
                             f"({SPACE_SCHEMA_VERSION}); upgrade autoaug")
        return version

    @field_validator("clean_fraction")
    @classmethod
    def _fraction(cls, value):
        return _check_range(value) if isinstance(value, tuple) else _check_range((value, value))[0]


def _known_ops(names: list[str]) -> list[str]:
    for index, name in enumerate(names):
        if name not in ops.names():
            close = difflib.get_close_matches(name, ops.names(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"unknown op {name!r} (item {index}); {hint}allowed: {', '.join(ops.names())}")
    return names


class _OpRangesSpace(_SpaceBase):
    """A space that searches a p range and a magnitude range per op."""

    ops: dict[str, OpRanges]

    @field_validator("ops")
    @classmethod
    def _ops(cls, value: dict[str, OpRanges]) -> dict[str, OpRanges]:
        if not value:
            raise ValueError("at least one op is needed")
        _known_ops(list(value))
        return value


class PolicySpace(_OpRangesSpace):
    """``kind: policy``: entries chosen op by op, with conditional ranges per op."""

    kind: Literal["policy"] = "policy"
    entries: EntryCount = Field(default_factory=EntryCount)
    schedules: list[str] = Field(default_factory=lambda: ["constant"], min_length=1)
    augmented_loss_weight: Union[float, Range] = 1.0
    balance: dict[Literal["vision", "text", "cross"], Union[float, Range]] = Field(default_factory=dict)

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, value: list[str]) -> list[str]:
        for kind in value:
            if kind not in SCHEDULES or kind == "piecewise":
                allowed = [k for k in SCHEDULES if k != "piecewise"]
                raise ValueError(f"unknown schedule {kind!r}; allowed: {', '.join(allowed)}")
        return value

    @field_validator("augmented_loss_weight")
    @classmethod
    def _weight(cls, value):
        return _check_range(value) if isinstance(value, tuple) else _check_range((value, value))[0]

    @field_validator("balance")
    @classmethod
    def _balance(cls, value):
        return {k: _check_range(v, 0.0, 4.0) if isinstance(v, tuple) else v for k, v in value.items()}


class RandAugmentSpace(_SpaceBase):
    """``kind: randaugment``: N ops per sample from ``ops``, all at magnitude M (a grid)."""

    kind: Literal["randaugment"] = "randaugment"
    ops: list[str] = Field(min_length=1)
    n: list[int] = Field(min_length=1)
    m: list[float] = Field(min_length=1)
    clean_fraction: Union[float, Range] = 0.0

    @field_validator("ops")
    @classmethod
    def _ops(cls, value: list[str]) -> list[str]:
        return _known_ops(value)

    @model_validator(mode="after")
    def _grid(self) -> "RandAugmentSpace":
        for n in self.n:
            if not 1 <= n <= len(self.ops):
                raise ValueError(f"n values must be in [1, {len(self.ops)}] (the number of ops), got {n}")
        for m in self.m:
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"m values must be in [0, 1], got {m}")
        return self


class PbaScheduleSpace(_OpRangesSpace):
    """``kind: pba_schedule``: per-op magnitude and p learned over training by Population Based Training."""

    kind: Literal["pba_schedule"] = "pba_schedule"
    perturbation_interval: int = Field(2, ge=1, description="epochs between exploit/explore steps")
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    initial_magnitude: float = Field(0.0, ge=0.0, le=1.0)
    clean_fraction: Union[float, Range] = 0.3


SpaceModel = Union[PolicySpace, RandAugmentSpace, PbaScheduleSpace]
_KINDS = {"policy": PolicySpace, "randaugment": RandAugmentSpace, "pba_schedule": PbaScheduleSpace}


class SearchSpace:
    """A validated search space: sample it in Optuna, turn params into a policy, hash it."""

    def __init__(self, model: SpaceModel, source: str) -> None:
        self.model = model
        self.source = source

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def kind(self) -> str:
        return self.model.kind

    def canonical(self) -> dict:
        return self.model.model_dump(mode="json")

    @property
    def hash(self) -> str:
        """sha256 of the validated content (comments and key order in the file do not count)."""
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ sampling (define-by-run)
    def suggest(self, trial) -> dict[str, Any]:
        """Draw one point with an Optuna trial (a real one or Ray's captor); returns the params."""
        space = self.model
        if isinstance(space, RandAugmentSpace):
            trial.suggest_categorical("n", space.n)
            trial.suggest_categorical("m", space.m)
            _suggest_scalar(trial, "clean_fraction", space.clean_fraction)
            return {}
        if isinstance(space, PbaScheduleSpace):
            raise SearchSpaceError(f"{self.source}: a pba_schedule space is searched with --scheduler pbt")
        count = trial.suggest_int("n_entries", space.entries.min, space.entries.max)
        op_names = list(space.ops)
        for index in range(count):
            op = trial.suggest_categorical(f"entry{index}.op", op_names)
            ranges = space.ops[op]
            # Ranges depend on the op, so the names do too: Optuna keeps one distribution per name.
            _suggest_scalar(trial, f"entry{index}.{op}.p", ranges.p)
            _suggest_scalar(trial, f"entry{index}.{op}.magnitude", ranges.magnitude)
            if len(space.schedules) > 1:
                trial.suggest_categorical(f"entry{index}.schedule", space.schedules)
        _suggest_scalar(trial, "clean_fraction", space.clean_fraction)
        _suggest_scalar(trial, "augmented_loss_weight", space.augmented_loss_weight)
        for modality, value in space.balance.items():
            _suggest_scalar(trial, f"balance.{modality}", value)
        return {}

    def grid(self) -> dict[str, list]:
        """The full grid of a randaugment space (for Optuna's GridSampler)."""
        if not isinstance(self.model, RandAugmentSpace):
            raise SearchSpaceError(f"{self.source}: --sampler grid needs a randaugment space (kind: randaugment)")
        grid = {"n": list(self.model.n), "m": list(self.model.m)}
        if isinstance(self.model.clean_fraction, tuple):
            raise SearchSpaceError(f"{self.source}: clean_fraction must be one number for --sampler grid")
        return grid

    # ------------------------------------------------------------------ params -> policy
    def policy_data(self, params: dict[str, Any], name: Optional[str] = None) -> dict:
        """The policy (as a dict `Policy.from_dict` reads) that a trial's params describe."""
        space = self.model
        if isinstance(space, RandAugmentSpace):
            return {
                "name": name, "selection": "random_n", "n": int(params["n"]),
                "clean_fraction": _value(params, "clean_fraction", space.clean_fraction),
                "entries": [{"op": op, "p": 1.0, "magnitude": float(params["m"])} for op in space.ops],
            }
        if isinstance(space, PbaScheduleSpace):
            entries = [{"op": op, "p": float(params.get(f"{op}.p", ranges.p[1])),
                        "magnitude": float(params.get(f"{op}.magnitude", space.initial_magnitude))}
                       for op, ranges in space.ops.items()]
            return {"name": name, "clean_fraction": _value(params, "clean_fraction", space.clean_fraction),
                    "entries": stage_sorted(entries)}
        entries, seen = [], set()
        for index in range(int(params["n_entries"])):
            op = params[f"entry{index}.op"]
            if op in seen:  # the same op twice adds nothing a higher p would not
                continue
            seen.add(op)
            ranges = space.ops[op]
            entries.append({
                "op": op,
                "p": _value(params, f"entry{index}.{op}.p", ranges.p),
                "magnitude": _value(params, f"entry{index}.{op}.magnitude", ranges.magnitude),
                "schedule": params.get(f"entry{index}.schedule", space.schedules[0]),
            })
        balance = {m: _value(params, f"balance.{m}", v) for m, v in space.balance.items()}
        data = {
            "name": name,
            "clean_fraction": _value(params, "clean_fraction", space.clean_fraction),
            "augmented_loss_weight": _value(params, "augmented_loss_weight", space.augmented_loss_weight),
            "entries": stage_sorted(entries),
        }
        if balance:
            data["balance"] = balance
        return data


def _suggest_scalar(trial, name: str, value) -> None:
    """A float parameter over a range; a fixed number is not a parameter at all."""
    if isinstance(value, tuple) and value[0] != value[1]:
        trial.suggest_float(name, value[0], value[1])


def _value(params: dict, name: str, declared) -> float:
    if name in params:
        return float(params[name])
    return float(declared[0] if isinstance(declared, tuple) else declared)


def stage_sorted(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda entry: STAGES.index(ops.op_class(entry["op"]).stage))


# ---------------------------------------------------------------------- loading
def load_space(name_or_path: Union[str, Path]) -> SearchSpace:
    """A shipped space by name (``vlm_default``) or a YAML file; errors name file, field and allowed values."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in SHIPPED:
        text = (resources.files("autoaug.search_spaces") / f"{name_or_path}.yaml").read_text()
        source = f"search space '{name_or_path}'"
    elif path.is_file():
        text, source = path.read_text(), str(path)
    else:
        raise SearchSpaceError(f"--space {name_or_path}: no such file, and not a shipped space "
                               f"(shipped: {', '.join(SHIPPED)})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SearchSpaceError(f"{source}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{source}: a search space must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", "policy")
    if kind not in _KINDS:
        raise SearchSpaceError(f"{source}: kind: {kind!r} is not one of {', '.join(_KINDS)}")
    try:
        model = _KINDS[kind].model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown field; allowed: {allowed_fields(first['loc'], _KINDS[kind])}"
        raise SearchSpaceError(f"{source}: {field_path(first['loc'])}: {message}") from None
    return SearchSpace(model, source)
