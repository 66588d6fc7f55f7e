"""The policy file format: a versioned, validated description of an augmentation policy
(docs/ARCHITECTURE.md, "Policy contract").

A policy is data, not code. Example (YAML)::

    schema_version: 1
    name: moderate
    selection: sequential        # or random_n (RandAugment-style: n entries per sample)
    clean_fraction: 0.4          # share of each batch left untouched (docs/GUIDELINES.md: 30-50 %)
    augmented_loss_weight: 1.0   # loss weight written into the batch for augmented samples
    balance: {vision: 1.0, text: 1.0, cross: 1.0}   # magnitude multipliers per modality
    entries:
      - {op: vision_token_dropout, p: 0.5, magnitude: 0.5, schedule: warmup_peak_cooldown}

Errors name the file, the field path (``entries[2].magnitude``) and the allowed values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from autoaug import ops
from autoaug.errors import AutoaugInputError
from autoaug.ops.base import STAGES
from autoaug.ops.registry import unknown_op_message
from autoaug.policy.schedules import SCHEDULES, Constant, Schedule, Unit
from autoaug.policy.strict import StrictModel

SCHEMA_VERSION = 1


class PolicyError(AutoaugInputError):
    """A policy file or dict that does not validate."""


class PolicyEntry(StrictModel):
    """One op of the policy with its probability, magnitude and schedule."""

    op: str
    p: Unit = 1.0
    magnitude: Unit = 0.5
    schedule: Schedule = Field(default_factory=Constant)
    schedule_p: bool = False
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("op")
    @classmethod
    def _known_op(cls, name: str) -> str:
        if name not in ops.names():
            raise ValueError(unknown_op_message(name))
        return name

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" in value and not (isinstance(value["kind"], str) and value["kind"] in SCHEDULES):
            raise ValueError(f"unknown schedule kind {value['kind']!r}; allowed: {', '.join(SCHEDULES)}")
        return value

    @model_validator(mode="after")
    def _options_build_the_op(self) -> "PolicyEntry":
        # Options go to the op's constructor: build it once here, so that an option the op cannot take
        # is refused with the file and field (entries[i].options), not met as a crash in training.
        if self.options:
            try:
                ops.get(self.op, **self.options)
            except Exception as error:  # noqa: BLE001 - whatever a constructor raises on a user's option
                raise _FieldError(("options",), f"{self.op} cannot take these options "
                                  f"(allowed: {', '.join(_option_names(self.op)) or 'none'}): "
                                  f"{type(error).__name__}: {_first_line_of(error)}") from None
        return self

    @property
    def stage(self) -> str:
        return ops.op_class(self.op).stage

    @property
    def modality(self) -> str:
        return ops.op_class(self.op).modality


def _option_names(op: str) -> list[str]:
    """The keyword options an op's constructor takes (``options:`` of a policy entry)."""
    import inspect

    parameters = inspect.signature(ops.op_class(op).__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _first_line_of(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "invalid value"


class Balance(StrictModel):
    """Magnitude multipliers per modality, to balance augmentation across vision, text and both."""

    vision: float = Field(1.0, ge=0.0, le=4.0)
    text: float = Field(1.0, ge=0.0, le=4.0)
    cross: float = Field(1.0, ge=0.0, le=4.0)


class Consistency(StrictModel):
    """Consistency regularisation: ``weight`` × KL(clean prediction ‖ augmented prediction)."""

    weight: float = Field(0.0, ge=0.0)
    temperature: float = Field(1.0, gt=0.0)


class ConfirmedCandidate(StrictModel):
    """One policy of a confirmation: its score over fresh seeds and its paired difference to ``none``."""

    name: str
    mean: Optional[float] = None
    se: Optional[float] = None
    diff_vs_none: Optional[float] = None
    diff_se: Optional[float] = None
    n: int = 0
    p_adjusted: Optional[float] = None  # the one-sided paired test's p-value after the multiplicity correction


class ConfirmationEvidence(StrictModel):
    """Why this policy was exported: the confirmation stage of the search (see `autoaug.search.confirmation`)."""

    verdict: Literal["improves", "no-gain", "inconclusive"]
    winner: str
    metric: str = "val_accuracy"
    split: str = "val"
    seeds: list[int] = Field(default_factory=list)
    candidates: list[ConfirmedCandidate] = Field(default_factory=list)


class TrainingSettings(StrictModel):
    """How the search trained when it measured this policy (calibrated learning rate and length)."""

    learning_rate: Optional[float] = None
    epochs: Optional[int] = None


class Provenance(StrictModel):
    """Where a policy came from: which search and trial, how good, on what, and the evidence."""

    study: Optional[str] = None
    trial: Optional[int] = None
    metric: Optional[str] = None
    value: Optional[float] = None
    seeds: dict[str, int] = Field(default_factory=dict)
    search_space: Optional[str] = None
    search_space_hash: Optional[str] = None
    data_fingerprint: Optional[str] = None
    task: Optional[str] = None
    package_version: Optional[str] = None
    training: Optional[TrainingSettings] = None
    confirmation: Optional[ConfirmationEvidence] = None


class PolicyConfig(StrictModel):
    """A whole policy (see the module docstring)."""

    schema_version: int = SCHEMA_VERSION
    name: Optional[str] = None
    description: Optional[str] = None
    selection: Literal["sequential", "random_n"] = "sequential"
    n: int = Field(1, ge=1, description="entries per sample in random_n mode")
    magnitude_sampling: Literal["fixed", "uniform"] = "fixed"
    clean_fraction: Unit = 0.4
    augmented_loss_weight: float = Field(1.0, ge=0.0)
    balance: Balance = Field(default_factory=Balance)
    consistency: Optional[Consistency] = None
    seed: Optional[int] = None
    entries: list[PolicyEntry] = Field(default_factory=list)
    provenance: Optional[Provenance] = None

    @field_validator("schema_version")
    @classmethod
    def _supported_version(cls, version: int) -> int:
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is newer than this autoaug supports ({SCHEMA_VERSION}); "
                "upgrade autoaug to read it"
            )
        if version < 1:
            raise ValueError(f"schema_version must be >= 1, got {version}")
        return version

    @model_validator(mode="after")
    def _stage_order_and_n(self) -> "PolicyConfig":
        # Stages run in pipeline order, so entries must be listed in that order too: a pixel op
        # listed after a token op could never see the pixels it needs.
        latest = 0
        for index, entry in enumerate(self.entries):
            rank = STAGES.index(entry.stage)
            if rank < latest:
                raise _FieldError(
                    ("entries", index, "op"),
                    f"{entry.op!r} is a {entry.stage}-stage op listed after {STAGES[latest]}-stage "
                    f"entries; order entries by stage: {' → '.join(STAGES)}",
                )
            latest = rank
        if self.selection == "random_n" and self.entries and self.n > len(self.entries):
            raise _FieldError(("n",), f"n={self.n} exceeds the number of entries ({len(self.entries)})")
        return self


class _FieldError(ValueError):
    """A model-level error that knows the field path it belongs to."""

    def __init__(self, location: tuple, message: str) -> None:
        super().__init__(message)
        self.location = location


def field_path(location: tuple) -> str:
    """``("entries", 2, "magnitude")`` → ``entries[2].magnitude``; a key that is not a plain printable
    name (a user's key with a line break, an empty key) is quoted: ``balance['a\\nb']``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.isprintable() and part.strip() == part and part:
            path += ("." if path else "") + part
        else:
            path += f"[{part!r}]"
    return path or "<policy>"


def read_document(path: Path, error: type[AutoaugInputError], what: str) -> Any:
    """The data in a user's YAML or JSON file (JSON by the ``.json`` suffix), loaded safely.

    Whatever stops the parse — unreadable bytes, a syntax error, a YAML timestamp no calendar has,
    nesting deeper than Python's recursion limit — becomes ``error`` with one line naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path}: cannot be read as {what}: not UTF-8 text (byte {problem.start})") from None
    except OSError as problem:
        raise error(f"{path}: cannot be read as {what}: {parse_problem(problem)}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except RecursionError:
        raise error(f"{path}: cannot be read as {what}: nested too deeply") from None
    except Exception as problem:  # noqa: BLE001 - safe_load builds plain data only: any failure is the text's
        # (PyYAML's constructors raise ValueError, AttributeError, OverflowError... on odd tagged values)
        syntax = {yaml.YAMLError: "not valid YAML: ", json.JSONDecodeError: "not valid JSON: "}
        kind = next((label for base, label in syntax.items() if isinstance(problem, base)), "")
        raise error(f"{path}: cannot be read as {what}: {kind}{parse_problem(problem)}") from None


class _DocumentDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, except that a string holding U+0085 (NEL) is double-quoted: written plain
    it reads back as a line break (PyYAML treats NEL as one), so the file would not round-trip."""


_DocumentDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"' if "\x85" in value else None))


def dump_document(data: Any) -> str:
    """``data`` as YAML that `read_document` gives back unchanged (key order kept, Unicode as is)."""
    return yaml.dump(data, Dumper=_DocumentDumper, sort_keys=False, allow_unicode=True)


def parse_problem(problem: BaseException) -> str:
    """One line about a parse error: YAML's problem and where (line, column), else the first line."""
    mark = getattr(problem, "problem_mark", None)
    if mark is not None:
        return f"{getattr(problem, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(problem, OSError) and problem.strerror:
        return problem.strerror
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__


def validate_policy(data: Any, source: Union[str, Path] = "<dict>") -> PolicyConfig:
    """Validate raw policy data; errors name ``source``, the field path and the allowed values."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a mapping, got {type(data).__name__}")
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as error:
        raise PolicyError(_format_validation_error(error, source)) from None


def _format_validation_error(error: ValidationError, source: Union[str, Path]) -> str:
    details = error.errors(include_url=False)
    first = details[0]
    location = tuple(part for part in first["loc"] if part not in SCHEDULES)  # drop union tags
    message = first["msg"].removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):  # its location is relative to the model that raised it
        location, message = location + cause.location, str(cause)
    elif first["type"] == "extra_forbidden":
        message = f"unknown field; allowed here: {allowed_fields(location)}"
    elif first["type"] == "union_tag_invalid":
        message = f"unknown schedule kind; allowed: {', '.join(SCHEDULES)}"
    elif {"ge", "le", "gt", "lt"} & set(first.get("ctx", {})):
        message = f"{message}, got {first['input']!r}{_allowed_range(location, first['ctx'])}"
    more = f" (and {len(details) - 1} more problem{'s' * (len(details) > 2)})" if len(details) > 1 else ""
    return f"{source}: {field_path(location)}: {message}{more}"


def _allowed_range(location: tuple, failed: dict) -> str:
    """`` (allowed: [0.0, 1.0])`` from the field's declared bounds (or from the bound that failed)."""
    bounds = dict(failed)
    model = _model_at(location)
    field = model.model_fields.get(location[-1]) if model is not None else None
    for constraint in getattr(field, "metadata", []):
        for name in ("ge", "le", "gt", "lt"):
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    low = f"[{bounds['ge']}" if "ge" in bounds else f"({bounds['gt']}" if "gt" in bounds else "(-inf"
    high = f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})" if "lt" in bounds else "inf)"
    return f" (allowed: {low}, {high})"


def _model_at(location: tuple, root: type[BaseModel] = None) -> Optional[type[BaseModel]]:
    """The pydantic model that holds the last field of ``location`` (list indices and dict keys skipped)."""
    model: Any = root or PolicyConfig
    skip_key = False
    for part in location[:-1]:
        if skip_key or isinstance(part, int):
            skip_key = False
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        skip_key = get_origin(annotation) is dict
        model = _model_in(annotation)
    return model


def allowed_fields(location: tuple, root: type[BaseModel] = None) -> str:
    """The field names allowed where ``location`` points (for "unknown field" messages)."""
    model = _model_at(location, root)
    return ", ".join(model.model_fields) if model is not None else "?"


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model inside an annotation such as ``list[PolicyEntry]`` or ``Optional[Balance]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
