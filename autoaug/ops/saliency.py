"""Per-patch saliency for the attention-guided ops.

The batch's own ``saliency`` (attention to vision tokens from the model's last forward) is used when
present. Otherwise a cheap proxy stands in: how far each patch is from its image's mean patch (a
patch unlike the background is where the content is). Dropped patches score ``-inf`` so no top-k
ever picks them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch


def vision_saliency(batch: MultimodalBatch) -> Tensor:
    """``[B, Nv]`` float saliency; higher means more salient; ``-inf`` on dropped patches."""
    if batch.saliency is not None:
        scores = batch.saliency.float()
    else:
        scores = distinctiveness(batch.vision, batch.vision_mask)
    return scores.masked_fill(~batch.vision_mask, float("-inf"))


def distinctiveness(tokens: Tensor, keep: Tensor) -> Tensor:
    """Squared distance of each token from the mean of the kept tokens of its sample (float32)."""
    tokens = tokens.float()
    weights = keep.unsqueeze(-1).to(tokens.dtype)
    mean = (tokens * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1.0)
    return (tokens - mean).pow(2).sum(-1)
