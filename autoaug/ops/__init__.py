"""The op catalogue (docs/ARCHITECTURE.md): every op registered by name, one small unit each.

    from autoaug import ops
    op = ops.get("vision_token_dropout")
    augmented = op(batch, magnitude=0.5, generator=torch.Generator().manual_seed(0))

Modules by family: dropout, masking, perturbation, mixing, mergemix, order, length, pixel (kornia),
mirror (the label-consistent multimodal horizontal flip).
"""

from autoaug.ops.base import MODALITIES, STAGES, Op, Params, check_magnitude, where_active
from autoaug.ops.registry import describe, get, names, op_class, register

# Importing the families registers their ops.
from autoaug.ops import (  # noqa: E402,F401  isort: skip
    dropout, masking, perturbation, mixing, mergemix, order, length, pixel, mirror,
)

__all__ = [
    "MODALITIES", "STAGES", "Op", "Params", "check_magnitude", "where_active",
    "describe", "get", "names", "op_class", "register",
]
