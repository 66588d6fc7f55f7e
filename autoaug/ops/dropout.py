"""Dropout ops: remove tokens from attention (keep-mask False), content untouched.

docs/GUIDELINES.md (strength table and modality dropout): vision token dropout p ≈ 0.1–0.3, text
token dropout, and cross-modal dropout of a whole image or a whole text with p ≈ 0.05 each. Special
and padding tokens are never dropped, and aligned text ↔ patch pairs are never left erased on both
sides.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.ops import sampling
from autoaug.ops.alignment import spare_aligned
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register


@register
class VisionTokenDropout(Op):
    """Drop each kept patch token independently with probability p (removed from attention).

    Magnitude → p in [0, 0.30] (docs/GUIDELINES.md: conservative 0.05–0.10, moderate 0.10–0.20,
    aggressive 0.20–0.30). Params: ``drop`` [B, Nv] bool.
    """

    name = "vision_token_dropout"
    stage = "token"
    modality = "vision"
    parameter = "drop probability"
    default_range = (0.0, 0.30)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        shape = batch.vision_mask.shape
        return {"drop": sampling.bernoulli(generator, strength, shape, batch.device) & batch.vision_mask}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        erase, _ = spare_aligned(batch, erase_vision=params["drop"] & active.unsqueeze(1))
        return batch.replace(vision_mask=batch.vision_mask & ~erase)


@register
class TextTokenDropout(Op):
    """Drop each non-special text token independently with probability p (removed from attention).

    Magnitude → p in [0, 0.30] (the guidelines' token dropout range). Special tokens and padding are never
    dropped. Params: ``drop`` [B, Nt] bool.
    """

    name = "text_token_dropout"
    stage = "token"
    modality = "text"
    parameter = "drop probability"
    default_range = (0.0, 0.30)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        droppable = batch.text_content
        return {"drop": sampling.bernoulli(generator, strength, droppable.shape, batch.device) & droppable}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        _, erase = spare_aligned(batch, erase_text=params["drop"] & active.unsqueeze(1))
        return batch.replace(text_mask=batch.text_mask & ~erase)


@register
class ModalityDropout(Op):
    """Drop a whole modality of a sample: all its patches, or all its non-special text tokens.

    With probability p a sample loses one modality, image or text with equal chance, never both
    (docs/GUIDELINES.md: p_img ≈ p_text ≈ 0.05, i.e. p ≈ 0.10). Magnitude → p in [0, 0.20].
    Params: ``drop_vision`` [B] bool, ``drop_text`` [B] bool (never both True).
    """

    name = "modality_dropout"
    stage = "token"
    modality = "cross"
    parameter = "probability a sample loses one modality"
    default_range = (0.0, 0.20)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        draw = sampling.uniform(generator, (batch.batch_size,), batch.device)
        return {
            "drop_vision": draw < strength / 2,
            "drop_text": (draw >= strength / 2) & (draw < strength),
            "applies": draw < strength,
        }

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        erase_vision = (params["drop_vision"] & active).unsqueeze(1) & batch.vision_mask
        droppable_text = batch.text_content
        erase_text = (params["drop_text"] & active).unsqueeze(1) & droppable_text
        erase_vision, erase_text = spare_aligned(batch, erase_vision, erase_text)
        return batch.replace(
            vision_mask=batch.vision_mask & ~erase_vision,
            text_mask=batch.text_mask & ~erase_text,
        )
