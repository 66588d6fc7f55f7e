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
    """Squared distance of each token from the mean of the kept tokens of its sample (float32).

    Expanded as |t|² - 2 t·m + |m|² with batched matrix products, so no [B, N, D] temporary is made:
    this runs on every attention-guided op call, on the largest tensor of the batch.
    """
    tokens = tokens.float()
    weights = keep.to(tokens.dtype).unsqueeze(1)                       # [B, 1, N]
    mean = torch.bmm(weights, tokens) / weights.sum(-1, keepdim=True).clamp_min(1.0)  # [B, 1, D]
    squared_norms = torch.linalg.vector_norm(tokens, dim=-1).square()  # [B, N]
    cross = torch.bmm(tokens, mean.transpose(1, 2)).squeeze(-1)        # [B, N]
    return (squared_norms - 2.0 * cross + mean.square().sum(-1)).clamp_min(0.0)
