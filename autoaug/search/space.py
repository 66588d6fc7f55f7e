"""Declarative search spaces (docs/ARCHITECTURE.md): YAML files validated on load, sampled define-by-run.

Three kinds, one per search style:

- ``policy`` (``vlm_default``): a set of at most ``entries.max`` ops; per op, whether it is in the policy
  and — only when it is — its ``p``, magnitude and schedule; plus clean fraction and the loss weight
  of augmented samples;
- ``randaugment``: RandAugment's N × M grid over a fixed op list (``--sampler grid``);
- ``pba_schedule``: Population Based Augmentation: a magnitude and a probability per op, changed over
  training by Ray Tune's Population Based Training and exported as ``piecewise`` schedules.

How a policy space reaches Optuna (one name per thing, whatever the op's position):

- ``max_ops``: this trial's cap on the number of ops, within ``entries`` (so the number of ops is
  searched too: with many ops on offer the ``use`` questions alone would nearly always fill the cap);
- ``op.<name>.use`` (``False``/``True``): the op is in the policy or not;
- ``op.<name>.p``, ``op.<name>.magnitude``, ``op.<name>.schedule``: asked only when ``use`` is True,
  so each op's p, magnitude and schedule are modelled from every trial that used the op;
- ``clean_fraction``, ``augmented_loss_weight``.

The policy holds exactly the used ops, in stage order (pixel → token → embedding); an op is never in
it twice, so nothing is de-duplicated. The cap ``max_ops`` is enforced by the order in which the ops
are *considered*: a permutation drawn from the search seed and the trial number (so no op is favoured by its place in
the file), with ``use`` asked op by op until ``max_ops`` ops are in; ops after that are not asked
and Optuna records nothing for them. The floor ``entries.min`` is enforced the same way: when the ops
not yet considered are just enough to reach it, they join without a ``use`` question (their p,
magnitude and schedule are still asked and recorded). So every parameter Optuna records is one the
policy uses, and the trial's policy is a pure function of its params (`SearchSpace.policy_data`),
in the driver and in the trainable alike; MLflow logs the same names (`records.flatten_policy`).

Per-modality ``balance`` multiplies magnitudes at run time (`Policy`: an op of modality ``m`` runs at
``magnitude × balance.m``). A space declares it per modality (``vision``, ``text``, ``cross``), either
fixed (one number) or searched (a range ``[low, high]``, e.g. ``vision: [0.5, 1.0]``):

- ``balance.<modality>``: asked once per trial, after the ops, and only when the trial uses an op of
  that modality (a strength that scales no op is not a parameter, as p and magnitude of an unused op
  are not); it is written into the policy's ``balance``. A modality with a range and no op in the
  trial gets the neutral value (1, or the end of the range nearest it), which scales nothing.

Why a searched balance is not a second name for per-op magnitude: it is *one* parameter shared by every
op of the modality, so it pools evidence across them. With a dozen vision ops a short search sees each
op in a couple of trials but some vision op in most trials; "this model wants its image augmented
more gently" is then learned from all of those trials at once, while each per-op magnitude still says
how strong that op is relative to its own range (TPE models each parameter from the trials that have
it, so the shared strength is modelled from many more trials than any op's magnitude).

Both kinds stay inside each op's declared magnitude range, the most (and least) an op ever runs at:
the sampled magnitude range is divided by the balance range's ends, ``[low / balance_low,
min(high / balance_high, 1)]`` (`PolicySpace.sampling_ranges`), so ``magnitude × balance`` is within
``[low, high]`` at every balance in the declared range (a fixed balance is the range of one number).
A range where no magnitude can do that is refused at load time.
"""

from __future__ import annotations

import hashlib
import json
import random
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from autoaug import ops
from autoaug.errors import AutoaugInputError
from autoaug.ops.base import STAGES
from autoaug.policy.schedules import SCHEDULES
from autoaug.ops.registry import unknown_op_message
from autoaug.policy.schema import StrictModel, allowed_fields, field_path, read_document

SPACE_SCHEMA_VERSION = 1
SHIPPED = ("vlm_default", "vlm_balanced", "randaugment", "pba_schedule")


class SearchSpaceError(AutoaugInputError):
    """A search space file that does not exist or does not validate."""


Range = tuple[float, float]


def _check_range(value: Range, low: float = 0.0, high: float = 1.0) -> Range:
    lo, hi = value
    if not low <= lo <= hi <= high:
        raise ValueError(f"expected [low, high] with {low} <= low <= high <= {high}, got {list(value)}")
    return value


class OpRanges(StrictModel):
    """Ranges searched for one op: its probability p and its magnitude (both within [0, 1])."""

    p: Range = (0.5, 1.0)
    magnitude: Range = (0.0, 1.0)

    @field_validator("p", "magnitude")
    @classmethod
    def _unit(cls, value: Range) -> Range:
        return _check_range(value)


class EntryCount(StrictModel):
    min: int = Field(1, ge=0)
    max: int = Field(4, ge=1, le=12)

    @model_validator(mode="after")
    def _ordered(self) -> "EntryCount":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class _SpaceBase(StrictModel):
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

    # What each kind does with a trial; `SearchSpace` delegates to these. Adding a kind: a subclass
    # with its fields, these methods, and an entry in `_KINDS`.
    def suggest(self, trial, source: str) -> None:
        """Ask the trial (define-by-run) for one point of this space."""
        raise NotImplementedError

    def policy_data(self, params: dict[str, Any], name: Optional[str]) -> dict:
        """The policy (as a dict `Policy.from_dict` reads) that a trial's params describe."""
        raise NotImplementedError

    def grid(self, source: str) -> dict[str, list]:
        """The full grid of the space (for Optuna's GridSampler); only grid-shaped kinds have one."""
        raise SearchSpaceError(f"{source}: --sampler grid needs a randaugment space (kind: randaugment)")

    def corner_points(self) -> list[dict[str, Any]]:
        """Params whose policies are built at load time, so a space whose trials could never build a
        valid policy is refused then rather than in every trial."""
        raise NotImplementedError


def _known_ops(names: list[str]) -> list[str]:
    for index, name in enumerate(names):
        if name not in ops.names():
            raise ValueError(f"item {index}: {unknown_op_message(name)}")
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

    def sampling_ranges(self, op: str) -> OpRanges:
        """The ranges sampled for ``op`` (a kind with a modality balance rescales them)."""
        return self.ops[op]


class PolicySpace(_OpRangesSpace):
    """``kind: policy``: entries chosen op by op, with conditional ranges per op."""

    kind: Literal["policy"] = "policy"
    entries: EntryCount = Field(default_factory=EntryCount)
    schedules: list[str] = Field(default_factory=lambda: ["constant"], min_length=1)
    augmented_loss_weight: Union[float, Range] = 1.0
    # per modality: a fixed multiplier, or a searched range (`balance_param`); see the module docstring
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

    @field_validator("balance", mode="before")
    @classmethod
    def _balance(cls, value):
        if not isinstance(value, dict):
            return value  # the field's own type check says what is expected
        for modality, multiplier in value.items():
            if isinstance(multiplier, (list, tuple)):
                if len(multiplier) != 2 or not all(_is_number(end) for end in multiplier) \
                        or not 0.0 < multiplier[0] <= multiplier[1] <= BALANCE_MAX:
                    raise ValueError(f"{modality}: a searched balance is a range [low, high] with "
                                     f"0 < low <= high <= {BALANCE_MAX:g}, got {list(multiplier)}")
            elif _is_number(multiplier) and not 0.0 < multiplier <= BALANCE_MAX:
                raise ValueError(f"{modality}: expected a number in (0, {BALANCE_MAX:g}] or a range [low, high] "
                                 f"within it, got {multiplier}")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> "PolicySpace":
        for op, ranges in self.ops.items():
            modality = ops.op_class(op).modality
            declared = self.balance.get(modality, 1.0)
            weakest, strongest = self.balance_range(modality)
            low, high = ranges.magnitude
            if low / weakest > 1.0:
                raise ValueError(f"ops.{op}.magnitude: the low end {low} cannot be reached with balance.{modality} "
                                 f"{_shown(declared)} (magnitude × balance would need a magnitude above 1)")
            if low * strongest > high * weakest:
                raise ValueError(
                    f"ops.{op}.magnitude: {list(ranges.magnitude)} is too narrow for balance.{modality} "
                    f"{_shown(declared)}: one magnitude must run within it at every balance of that range, which "
                    f"needs high / low >= {strongest / weakest:g}; widen the magnitude range or narrow the balance")
        if self.entries.min > len(self.ops):
            raise ValueError(f"entries.min ({self.entries.min}) exceeds the number of ops ({len(self.ops)})")
        if self.entries.min > 0 and len(self.schedules) == 1:
            # An op the floor forces in is known by its recorded p/magnitude (it has no use question).
            fixed = [op for op, r in self.ops.items() if r.p[0] == r.p[1] and r.magnitude[0] == r.magnitude[1]]
            if fixed:
                raise ValueError(f"ops.{fixed[0]}: with entries.min > 0 every op needs a p or magnitude range "
                                 "(an op forced in by the floor is recorded through them); give a range or set min: 0")
        return self

    def balance_range(self, modality: str) -> Range:
        """The balances ``modality``'s ops may run at: a searched range, or a fixed value (or 1) twice."""
        declared = self.balance.get(modality, 1.0)
        return declared if isinstance(declared, tuple) else (declared, declared)

    def searched_balances(self) -> list[str]:
        """The modalities whose balance this space searches (in ``vision, text, cross`` order)."""
        return [modality for modality in MODALITIES
                if isinstance(self.balance.get(modality), tuple) and self.balance[modality][0] != self.balance[modality][1]]

    def sampling_ranges(self, op: str) -> OpRanges:
        """The declared p range, and the magnitude range divided by the ends of the op's modality balance
        (``[low / weakest, min(high / strongest, 1)]``), so that ``magnitude × balance`` stays within the
        declared range at every balance the space allows (fixed: one value; searched: its range)."""
        ranges = self.ops[op]
        weakest, strongest = self.balance_range(ops.op_class(op).modality)
        if weakest == strongest == 1.0:
            return ranges
        low, high = ranges.magnitude
        return OpRanges(p=ranges.p, magnitude=(low / weakest, min(high / strongest, 1.0)))

    def suggest(self, trial, source: str) -> None:
        cap = self.entries.max
        if self.entries.min < self.entries.max:
            cap = trial.suggest_int(MAX_OPS, self.entries.min, self.entries.max)
        order = consideration_order(list(self.ops), search_seed(trial), trial.number)
        used = 0
        modalities: set[str] = set()
        for position, op in enumerate(order):
            if used == cap:
                break  # the cap: later ops are not asked, so Optuna records nothing for them
            unconsidered = len(order) - position
            forced = unconsidered <= self.entries.min - used  # the floor: no question whose "no" could not hold
            if forced or trial.suggest_categorical(use_name(op), [False, True]):
                used += 1
                modalities.add(ops.op_class(op).modality)
                ranges = self.sampling_ranges(op)
                _suggest_scalar(trial, op_param(op, "p"), ranges.p)
                _suggest_scalar(trial, op_param(op, "magnitude"), ranges.magnitude)
                if len(self.schedules) > 1:
                    trial.suggest_categorical(op_param(op, "schedule"), self.schedules)
        for modality in self.searched_balances():
            if modality in modalities:  # a strength that scales none of the trial's ops is not asked
                _suggest_scalar(trial, balance_param(modality), self.balance[modality])
        _suggest_scalar(trial, "clean_fraction", self.clean_fraction)
        _suggest_scalar(trial, "augmented_loss_weight", self.augmented_loss_weight)

    def policy_data(self, params: dict[str, Any], name: Optional[str]) -> dict:
        entries = []
        for op in used_ops(self, params):
            ranges = self.sampling_ranges(op)
            entries.append({
                "op": op,
                "p": _value(params, op_param(op, "p"), ranges.p),
                "magnitude": _value(params, op_param(op, "magnitude"), ranges.magnitude),
                "schedule": params.get(op_param(op, "schedule"), self.schedules[0]),
            })
        data = {
            "name": name,
            "clean_fraction": _value(params, "clean_fraction", self.clean_fraction),
            "augmented_loss_weight": _value(params, "augmented_loss_weight", self.augmented_loss_weight),
            "entries": stage_sorted(entries),
        }
        if self.balance:
            data["balance"] = {modality: self.balance_of(modality, params) for modality in self.balance}
        return data

    def balance_of(self, modality: str, params: dict[str, Any]) -> float:
        """The balance a trial's policy gets for ``modality``: the fixed value, the trial's
        ``balance.<modality>``, or (a searched modality the params do not name: no op of it in the trial,
        or params written by hand, as the screen's) the neutral value: 1 clipped to the range."""
        weakest, strongest = self.balance_range(modality)
        if balance_param(modality) in params:
            return float(params[balance_param(modality)])
        return min(max(1.0, weakest), strongest)

    def corner_points(self) -> list[dict[str, Any]]:
        return [{use_name(op): True for op in self.ops}]  # every op at once: stage order, schedules


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

    def suggest(self, trial, source: str) -> None:
        trial.suggest_categorical("n", self.n)
        trial.suggest_categorical("m", self.m)
        _suggest_scalar(trial, "clean_fraction", self.clean_fraction)

    def policy_data(self, params: dict[str, Any], name: Optional[str]) -> dict:
        return {
            "name": name, "selection": "random_n", "n": int(params["n"]),
            "clean_fraction": _value(params, "clean_fraction", self.clean_fraction),
            "entries": stage_sorted([{"op": op, "p": 1.0, "magnitude": float(params["m"])} for op in self.ops]),
        }

    def grid(self, source: str) -> dict[str, list]:
        if isinstance(self.clean_fraction, tuple):
            raise SearchSpaceError(f"{source}: clean_fraction must be one number for --sampler grid")
        return {"n": list(self.n), "m": list(self.m)}

    def corner_points(self) -> list[dict[str, Any]]:
        return [{"n": n, "m": m} for n in self.n for m in self.m[:1]]


class PbaScheduleSpace(_OpRangesSpace):
    """``kind: pba_schedule``: per-op magnitude and p learned over training by Population Based Training."""

    kind: Literal["pba_schedule"] = "pba_schedule"
    perturbation_interval: int = Field(2, ge=1, description="epochs between exploit/explore steps")
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    initial_magnitude: float = Field(0.0, ge=0.0, le=1.0)
    clean_fraction: Union[float, Range] = 0.3

    def suggest(self, trial, source: str) -> None:
        raise SearchSpaceError(f"{source}: a pba_schedule space is searched with --scheduler pbt")

    def op_settings(self, params: dict[str, Any], op: str) -> tuple[float, float]:
        """(p, magnitude) of ``op`` in a PBT member's params; unset ones at their start (p at the top of
        its range, magnitude at ``initial_magnitude``)."""
        return (float(params.get(op_param(op, "p"), self.ops[op].p[1])),
                float(params.get(op_param(op, "magnitude"), self.initial_magnitude)))

    def policy_data(self, params: dict[str, Any], name: Optional[str]) -> dict:
        """The policy at a PBT member's current params."""
        entries = [dict(zip(("op", "p", "magnitude"), (op, *self.op_settings(params, op)))) for op in self.ops]
        return {"name": name, "clean_fraction": _value(params, "clean_fraction", self.clean_fraction),
                "entries": stage_sorted(entries)}

    def corner_points(self) -> list[dict[str, Any]]:
        return [{}]


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

    # ------------------------------------------------------------------ what each kind does
    def suggest(self, trial) -> dict[str, Any]:
        """Draw one point with an Optuna trial (a real one or Ray's captor); returns the params."""
        self.model.suggest(trial, self.source)
        return {}

    def sampling_ranges(self, op: str) -> OpRanges:
        return self.model.sampling_ranges(op)

    def grid(self) -> dict[str, list]:
        """The full grid of a randaugment space (for Optuna's GridSampler)."""
        return self.model.grid(self.source)

    def policy_data(self, params: dict[str, Any], name: Optional[str] = None) -> dict:
        """The policy (as a dict `Policy.from_dict` reads) that a trial's params describe."""
        return self.model.policy_data(params, name)


MODALITIES = ("vision", "text", "cross")  # the order searched balances are asked in
BALANCE_MAX = 4.0  # the largest multiplier a policy's balance holds (`autoaug.policy.schema.Balance`)
MAX_OPS = "max_ops"  # the trial's own cap on the number of ops, within [entries.min, entries.max]


def balance_param(modality: str) -> str:
    """The one name of a searched per-modality balance in Optuna, Ray's config, MLflow and the policy
    (`records.flatten_policy` logs the policy's ``balance.<modality>`` under the same name)."""
    return f"balance.{modality}"


def use_name(op: str) -> str:
    return f"op.{op}.use"


def op_param(op: str, field: str) -> str:
    """The one name of an op's ``p`` / ``magnitude`` / ``schedule`` in Optuna, Ray's config and MLflow."""
    return f"op.{op}.{field}"


def consideration_order(op_names: list[str], seed: int, trial_number: int) -> list[str]:
    """The order in which a trial considers the ops: a permutation fixed by the search's ``seed`` and
    the trial number, so the cap on the number of ops favours no op by its place in the file, another
    ``--seed`` puts other ops first (which ops a short search tries early is part of what the seed
    varies), and a trial replays exactly."""
    order = list(op_names)
    random.Random(f"autoaug-op-order:{seed}:{trial_number}").shuffle(order)
    return order


def search_seed(trial) -> int:
    """The ``--seed`` of the search ``trial`` belongs to, which its study records (`SEED_ATTR`); 0 for
    a study made outside ``autoaug search`` (unit tests, `samplers.cmaes_coverage`). ``trial`` is an
    Optuna trial or Ray's captor of one (it passes ``study`` through)."""
    from autoaug.search.record_schema import SEED_ATTR

    return int(trial.study.user_attrs.get(SEED_ATTR, 0))


def used_ops(space: "PolicySpace", params: dict[str, Any]) -> list[str]:
    """The ops a trial's params put in the policy: ``use`` True, or forced in by ``entries.min``
    (those have p/magnitude/schedule params but no ``use`` param)."""
    chosen = []
    for op in space.ops:
        flag = params.get(use_name(op))
        asked_fields = any(op_param(op, field) in params for field in ("p", "magnitude", "schedule"))
        if flag is True or (flag is None and asked_fields):
            chosen.append(op)
    return chosen


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(declared) -> str:
    """A declared balance as the space file writes it: ``0.5`` or ``[0.5, 1.0]``."""
    return str(list(declared)) if isinstance(declared, tuple) else f"{declared:g}"


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
        data = yaml.safe_load(text)
    elif path.is_file():
        source = str(path)
        data = read_document(path, SearchSpaceError, "a search space")
    else:
        raise SearchSpaceError(f"--space {name_or_path}: no such file, and not a shipped space "
                               f"(shipped: {', '.join(SHIPPED)})")
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{source}: a search space must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", "policy")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise SearchSpaceError(f"{source}: kind: {kind!r} is not one of {', '.join(_KINDS)}")
    try:
        model = _KINDS[kind].model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown field; allowed: {allowed_fields(first['loc'], _KINDS[kind])}"
        where = f"{field_path(first['loc'])}: " if first["loc"] else ""  # a whole-space check names its field itself
        raise SearchSpaceError(f"{source}: {where}{message}") from None
    space = SearchSpace(model, source)
    _check_buildable(space)
    return space


def _check_buildable(space: SearchSpace) -> None:
    """Build the policy of a corner point now, so a space that validates but whose trials could never
    build a valid policy is refused at load time rather than in every trial."""
    from autoaug.policy.schema import PolicyError, validate_policy

    for params in space.model.corner_points():
        try:
            validate_policy(space.policy_data(params), space.source)
        except PolicyError as error:
            raise SearchSpaceError(f"{space.source}: its trials would build an invalid policy: {error}") from None
