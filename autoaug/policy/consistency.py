"""Consistency regularisation (docs/GUIDELINES.md, "Consistency regularisation"): predictions on the augmented view
should agree with those on the clean view of the same sample."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def consistency_kl(clean_logits: Tensor, augmented_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(clean ‖ augmented) of temperature-softened predictions, times T² (Hinton's scaling).

    The clean prediction is the target: it is detached, so the gradient pulls the augmented view
    towards the clean one and never the reverse. Mean over the batch.
    """
    target = F.log_softmax(clean_logits.detach() / temperature, dim=-1)
    prediction = F.log_softmax(augmented_logits / temperature, dim=-1)
    return F.kl_div(prediction, target, log_target=True, reduction="batchmean") * temperature**2
