"""A label-consistent multimodal mirror: flip the image left to right and swap "left"/"right" in the
question and the answer.

A plain horizontal flip (``pixel_horizontal_flip``) is one of the most useful image augmentations, but
on a VQA task with spatial relations it lies: "is the red circle left of the square?" changes its
answer when the image is mirrored. Flipping the image *and* exchanging every left/right word of the
question and every left/right answer class keeps each sample true, so the flip stays available.

The op knows nothing about any language or task: which token ids and which answer classes a mirror
exchanges is declared on the batch (`autoaug.batch.MirrorSwaps`, ``batch.mirror_swaps``; the built-in
trainers fill it from the task's declared word pairs, by default ``("left", "right")``). A batch
without a declaration is mirrored in the image only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params, where_active
from autoaug.ops.registry import register


def swap_values(values: Tensor, pairs: tuple[tuple[int, int], ...]) -> Tensor:
    """``values`` with every ``a`` replaced by ``b`` and every ``b`` by ``a`` for each pair (a new tensor)."""
    out = values.clone()
    for first, second in pairs:
        out = torch.where(values == first, second, torch.where(values == second, first, out))
    return out


def swap_columns(matrix: Tensor, pairs: tuple[tuple[int, int], ...]) -> Tensor:
    """``matrix`` ``[B, C]`` with columns ``a`` and ``b`` exchanged for each pair (a new tensor)."""
    order = torch.arange(matrix.shape[1], device=matrix.device)
    for first, second in pairs:
        order[first], order[second] = second, first
    return matrix.index_select(1, order)


@register
class MultimodalHorizontalFlip(Op):
    """Mirror the image left to right and swap the left/right words of the question and answer classes.

    Per sample, with probability p: the image ``[3, H, W]`` is reversed along W (exact, no
    resampling); every text id of a ``batch.mirror_swaps.text_pairs`` pair is replaced by its partner
    ("left" <-> "right") on the positions an op may edit (``batch.text_content``: present, not special); the soft label's columns of each
    ``label_pairs`` pair are exchanged (a one-hot "left" answer becomes "right"; a mixed label keeps its
    weights, moved). The swaps are a permutation, so labels stay a distribution and nothing is mixed.
    Without ``mirror_swaps`` on the batch only the image is mirrored.
    Magnitude -> flip probability p in [0, 1]; p = 0.5 gives the most variety.
    Params: none beyond ``active`` (the per-sample coin flips are folded into it).
    """

    name = "multimodal_horizontal_flip"
    stage = "pixel"
    modality = "cross"
    parameter = "flip probability"
    default_range = (0.0, 1.0)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        return {"applies": sampling.bernoulli(generator, strength, (batch.batch_size,), batch.device)}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        changes = {"images": where_active(active, batch.images.flip(-1), batch.images)}
        swaps = batch.mirror_swaps
        if swaps is not None and swaps.text_pairs:
            swapped = swap_values(batch.text_ids, swaps.text_pairs)
            changes["text_ids"] = torch.where(active.unsqueeze(1) & batch.text_content, swapped, batch.text_ids)
        if swaps is not None and swaps.label_pairs:
            changes["labels"] = where_active(active, swap_columns(batch.labels, swaps.label_pairs), batch.labels)
        return batch.replace(**changes)
