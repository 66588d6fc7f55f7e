"""Policies as data (docs/ARCHITECTURE.md): the schema, schedules, presets and the callable `Policy`.

`PolicyCallback` (Lightning) and `PolicyCollator` (DataLoader) are exported too, but loaded on first
use: their module imports Lightning, which would add seconds to every ``import autoaug`` (the CLI's
start-up included) that never trains.
"""

from autoaug.policy.consistency import consistency_kl
from autoaug.policy.policy import PRESETS, AppliedOp, Policy, batch_stage
from autoaug.policy.schedules import SCHEDULES
from autoaug.policy.schema import SCHEMA_VERSION, PolicyConfig, PolicyEntry, PolicyError, validate_policy

_FROM_INTEGRATIONS = ("PolicyCallback", "PolicyCollator")

__all__ = [
    "PRESETS", "SCHEDULES", "SCHEMA_VERSION", "AppliedOp", "Policy", "PolicyCallback", "PolicyCollator",
    "PolicyConfig", "PolicyEntry", "PolicyError", "batch_stage", "consistency_kl", "validate_policy",
]


def __getattr__(name: str):
    """Module attributes loaded on first access (PEP 562): the Lightning-importing integrations."""
    if name in _FROM_INTEGRATIONS:
        from autoaug.policy import integrations

        return getattr(integrations, name)
    raise AttributeError(f"module 'autoaug.policy' has no attribute {name!r}")
