"""Policies as data (docs/ARCHITECTURE.md): the schema, schedules, presets and the callable `Policy`."""

from autoaug.policy.consistency import consistency_kl
from autoaug.policy.policy import PRESETS, AppliedOp, Policy, batch_stage
from autoaug.policy.schedules import SCHEDULES
from autoaug.policy.schema import SCHEMA_VERSION, PolicyConfig, PolicyEntry, PolicyError, validate_policy

__all__ = [
    "PRESETS", "SCHEDULES", "SCHEMA_VERSION", "AppliedOp", "Policy", "PolicyConfig", "PolicyEntry",
    "PolicyError", "batch_stage", "consistency_kl", "validate_policy",
]
