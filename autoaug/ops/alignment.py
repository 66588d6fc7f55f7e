"""Cross-modal alignment: never erase both sides of an aligned text-token ↔ patch pair.

docs/GUIDELINES.md, "Alignment": don't mask the "cat" token and the cat region at once, or the model
has no supervision left for that pair. A batch may carry ``alignment`` ``[B, Nt, Nv]``; every op
that drops or masks tokens passes its proposed erasures through `spare_aligned`, which withdraws the
ones that would complete an erased pair (given what earlier ops already erased).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from autoaug.batch import IGNORE_INDEX, MultimodalBatch


def erased_text(batch: MultimodalBatch) -> Tensor:
    """``[B, Nt]`` text positions whose content is gone: dropped (not padding) or MLM-masked."""
    erased = ~batch.text_mask & ~batch.text_special
    if batch.mlm_labels is not None:
        erased = erased | (batch.mlm_labels != IGNORE_INDEX)
    return erased


def erased_vision(batch: MultimodalBatch) -> Tensor:
    """``[B, Nv]`` patches whose content is gone: dropped or replaced by the mask fill."""
    return ~batch.vision_mask | batch.vision_masked


def spare_aligned(
    batch: MultimodalBatch,
    erase_vision: Optional[Tensor] = None,
    erase_text: Optional[Tensor] = None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Withdraw proposed erasures that would leave an aligned pair erased on both sides.

    Vision proposals are checked against text already erased; text proposals against vision erased
    before or proposed now. Without ``alignment`` the proposals come back unchanged.
    """
    if batch.alignment is None:
        return erase_vision, erase_text
    pairs = batch.alignment
    if erase_vision is not None:
        # Within one op, text erasures yield to vision ones, so only earlier text counts here.
        text_gone = erased_text(batch)
        blocked = (pairs & text_gone.unsqueeze(2)).any(dim=1)
        erase_vision = erase_vision & ~blocked
    if erase_text is not None:
        vision_gone = erased_vision(batch) if batch.vision is not None else None
        if vision_gone is not None:
            if erase_vision is not None:
                vision_gone = vision_gone | erase_vision
            blocked = (pairs & vision_gone.unsqueeze(1)).any(dim=2)
            erase_text = erase_text & ~blocked
    return erase_vision, erase_text
