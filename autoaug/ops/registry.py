"""The op registry: a config string or YAML entry maps to an op class by name, never an if-chain."""

from __future__ import annotations

import difflib
from typing import Optional, Sequence

from autoaug.errors import UnknownOpError
from autoaug.ops.base import MODALITIES, STAGES, Modality, Op, Stage

_REGISTRY: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op to the registry under ``cls.name`` (names are unique)."""
    for attribute in ("name", "stage", "modality", "parameter", "default_range"):
        if not hasattr(cls, attribute):
            raise TypeError(f"op class {cls.__name__} does not declare `{attribute}`")
    if cls.stage not in STAGES or cls.modality not in MODALITIES:
        raise TypeError(f"op {cls.name}: stage must be one of {STAGES}, modality one of {MODALITIES}")
    if not (cls.__doc__ or "").strip():
        raise TypeError(f"op {cls.name}: needs a docstring stating its semantics and range")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"op name '{cls.name}' is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def unknown_op_message(name: object, allowed: Optional[Sequence[str]] = None) -> str:
    """The one message for an op name that is not registered: the closest names, then every allowed
    one (``allowed`` narrows the choice, e.g. to the ops a search space may name; default: all).

    ``unknown op 'vision_tokn_dropout'; did you mean vision_token_dropout? allowed: ...``"""
    allowed = list(_REGISTRY) if allowed is None else list(allowed)
    close = difflib.get_close_matches(str(name), allowed, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown op {name!r}; {hint}allowed: {', '.join(allowed)}"


def op_class(name: str) -> type[Op]:
    """The registered class for ``name``; an unknown name raises with the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(unknown_op_message(name)) from None


def get(name: str, **options) -> Op:
    """An instance of the op registered as ``name`` (options go to its constructor)."""
    return op_class(name)(**options)


def names(stage: Optional[Stage] = None, modality: Optional[Modality] = None) -> list[str]:
    """Registered op names in registration order, optionally filtered by stage and modality."""
    return [
        name for name, cls in _REGISTRY.items()
        if (stage is None or cls.stage == stage) and (modality is None or cls.modality == modality)
    ]


def describe() -> list[dict]:
    """One dict per op: name, stage, modality, magnitude_range, parameter, mixes_labels, summary."""
    return [cls.describe() for cls in _REGISTRY.values()]
