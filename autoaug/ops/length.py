"""Length ops: shorten a sample's sequence or move its padding (keep-masks and rolls, no Python loops).

docs/GUIDELINES.md, "Padding and length": random truncation (remove a random prefix or suffix),
smart truncation (keep the most informative, high-attention tokens), token budgets that vary the
sequence length as multi-scale training does, and "augment by varying padding position (left vs
right)". Truncation is a drop (keep-mask False, content untouched) so shapes stay fixed and a logged
batch replays exactly; special tokens, padding and already-dropped tokens are never touched, and
aligned text ↔ patch pairs are never left erased on both sides (`spare_aligned`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.errors import OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.alignment import spare_aligned
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register
from autoaug.ops.saliency import vision_saliency

# Fractions come from a float magnitude: 0.3 * 10 may land on 2.9999999999999996. The tolerance
# makes floor/ceil of a fraction of a count agree with the exact arithmetic a reader expects.
_TOLERANCE = 1e-9


def fraction_floor(fraction: float, counts: Tensor) -> Tensor:
    """``floor(fraction * counts)`` per sample (long), clamped to ``[0, counts]``."""
    exact = counts.to(torch.float64) * fraction
    return torch.floor(exact + _TOLERANCE).long().clamp(min=0).minimum(counts.long())


def fraction_ceil(fraction: float, counts: Tensor) -> Tensor:
    """``ceil(fraction * counts)`` per sample (long), clamped to ``[0, counts]``."""
    exact = counts.to(torch.float64) * fraction
    return torch.ceil(exact - _TOLERANCE).long().clamp(min=0).minimum(counts.long())


def lowest_scored(scores: Tensor, candidates: Tensor, count: Tensor, limit: int) -> Tensor:
    """``[B, N]`` bool: the ``count[b]`` candidates of row ``b`` with the lowest scores.

    ``limit`` (a Python int) bounds every ``count[b]``, so a ``topk`` of ``limit`` replaces a full
    sort without a host sync. Ties go to the earlier slot on every device (the sort key is the
    score's order-preserving integer image, then the slot). Fewer than ``count`` candidates: all.
    """
    tokens = scores.shape[1]
    limit = max(0, min(int(limit), tokens))
    if limit == 0:
        return torch.zeros_like(candidates)
    ranked = scores.float().masked_fill(~candidates, float("inf")).contiguous()
    _, order = order_key(ranked).topk(limit, dim=1, largest=False, sorted=True)
    chosen_in_order = torch.arange(limit, device=scores.device).unsqueeze(0) < count.unsqueeze(1)
    return torch.zeros_like(candidates).scatter(1, order, chosen_in_order) & candidates


def order_key(scores: Tensor) -> Tensor:
    """int64 keys ordered like the float32 ``scores`` [B, N], ties broken by slot (earlier first)."""
    bits = scores.view(torch.int32)
    monotone = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # IEEE-754 float order as signed-int order
    slots = torch.arange(scores.shape[1], device=scores.device)
    return monotone.long() * scores.shape[1] + slots


def largest_floor(fraction: float, tokens: int) -> int:
    """``floor(fraction * tokens) + 1``, at most ``tokens``: a Python-int bound on `fraction_floor`
    (and on a budget's drop count) for every count up to ``tokens``, so no host sync is needed."""
    return min(tokens, math.floor(max(fraction, 0.0) * tokens) + 1)


def droppable_patches(batch: MultimodalBatch) -> Tensor:
    """``[B, Nv]`` kept patches that `spare_aligned` would let an op drop now."""
    allowed, _ = spare_aligned(batch, erase_vision=batch.vision_mask)
    return allowed


@register
class RandomTruncation(Op):
    """Truncate a random prefix or suffix of each sample's text content (dropped from attention).

    Per sample, ``floor(f * n)`` of its ``n`` kept non-special text tokens are dropped
    (keep-mask False, ids untouched): the first ones (prefix) or the last ones (suffix), side drawn
    per sample with equal chance. Special tokens (CLS/SEP), padding and already-dropped tokens are
    never touched; a token aligned with an erased patch is spared (so a truncation can leave it in
    place). Samples whose count is 0 are not augmented.

    Magnitude → f in [0, 0.5]: docs/GUIDELINES.md lists random prefix/suffix truncation among its sequence
    length variations without a number; half the content is the most a caption can lose and still
    carry its meaning, and f ≈ 0.1–0.3 matches the token-dropout strengths of its guidelines.
    Params: ``suffix`` [B] bool (True: the suffix is cut), ``drop`` [B, Nt] bool (proposed drops).
    """

    name = "random_truncation"
    stage = "token"
    modality = "text"
    parameter = "fraction of the text content truncated"
    default_range = (0.0, 0.5)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        content = batch.text_content
        suffix = sampling.bernoulli(generator, 0.5, (batch.batch_size,), batch.device)
        seen = content.long().cumsum(dim=1)  # content tokens up to and including each position
        total = seen[:, -1:]
        count = fraction_floor(strength, total.squeeze(1)).unsqueeze(1)
        from_start = seen - 1             # rank of a content token from the start
        from_end = total - seen           # rank of a content token from the end
        rank = torch.where(suffix.unsqueeze(1), from_end, from_start)
        _, drop = spare_aligned(batch, erase_text=content & (rank < count))
        return {"suffix": suffix, "drop": drop, "applies": drop.any(dim=1)}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        proposal = params["drop"] & batch.text_content & active.unsqueeze(1)
        _, erase = spare_aligned(batch, erase_text=proposal)
        return batch.replace(text_mask=batch.text_mask & ~erase)


@register
class SaliencyTruncation(Op):
    """Keep the most salient patches: drop the least salient fraction f of each sample's kept patches.

    Per sample with ``n`` kept patches, the ``floor(f * n)`` least salient droppable ones are
    dropped (keep-mask False, content untouched). Saliency is the batch's own (attention from the
    model's last forward) or the cheap distinctiveness proxy (`autoaug.ops.saliency.vision_saliency`);
    ties go to the earlier slot. Patches aligned with erased text are not candidates (so the count
    stays exact while enough candidates remain). No randomness: deterministic given the batch.

    Magnitude → f in [0, 0.5]: the guidelines' "smart truncation: preserve most informative tokens (high
    attention scores)"; token-pruning work keeps half or more of the patches, and f ≈ 0.1–0.3 matches
    its dropout strengths. Params: ``drop`` [B, Nv] bool (the patches to drop).
    """

    name = "saliency_truncation"
    uses_saliency = True
    stage = "token"
    modality = "vision"
    parameter = "fraction of kept patches dropped (least salient first)"
    default_range = (0.0, 0.5)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        count = fraction_floor(strength, batch.vision_mask.sum(dim=1))
        limit = largest_floor(strength, batch.num_vision_tokens)
        drop = lowest_scored(vision_saliency(batch), droppable_patches(batch), count, limit)
        return {"drop": drop, "applies": drop.any(dim=1)}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        erase, _ = spare_aligned(batch, erase_vision=params["drop"] & batch.vision_mask & active.unsqueeze(1))
        return batch.replace(vision_mask=batch.vision_mask & ~erase)


@register
class VisionTokenBudget(Op):
    """Subsample each sample's kept patches to a token budget, as multi-scale training varies length.

    Per sample with ``n`` kept patches the budget is ``ceil((1 - f) * n)``; the rest are dropped
    (keep-mask False, content untouched). Options: ``mode="random"`` (default) keeps a uniformly
    random subset of exactly the budget; ``mode="grid"`` keeps a strided sub-grid (evenly spaced rows
    and columns of the patch grid, read from ``vision_positions``, with a random phase per sample)
    whose size approximates the budget, like a lower-resolution view. Patches aligned with erased
    text are never dropped (random mode then drops other patches instead, keeping the budget exact).

    Magnitude → f in [0, 0.5]: the guidelines' variable-length training ("important for deployment across
    different image resolutions"); keeping at least half the tokens stays within the resolution range
    multi-scale training uses (e.g. 224 ↔ 160 px, about 0.5× the tokens).
    Params: ``drop`` [B, Nv] bool (the patches to drop).
    """

    name = "vision_token_budget"
    stage = "token"
    modality = "vision"
    parameter = "fraction of kept patches removed by the budget"
    default_range = (0.0, 0.5)
    modes = ("random", "grid")

    def __init__(self, mode: str = "random", magnitude_range: Optional[tuple[float, float]] = None) -> None:
        super().__init__(magnitude_range)
        if mode not in self.modes:
            raise OpArgumentError(
                f"{self.name}: option mode must be one of {', '.join(map(repr, self.modes))}, got {mode!r}"
            )
        self.mode = mode

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        kept = batch.vision_mask.sum(dim=1)
        budget = fraction_ceil(1.0 - strength, kept)
        candidates = droppable_patches(batch)
        if self.mode == "random":
            scores = sampling.random_scores(generator, candidates.shape, batch.device)
            # kept - ceil((1 - f) kept) <= f kept + tolerance, which largest_floor bounds.
            limit = largest_floor(strength, batch.num_vision_tokens)
            drop = lowest_scored(scores, candidates, kept - budget, limit)
        else:
            keep = self._sub_grid(batch, budget.double() / kept.clamp(min=1).double(), generator)
            drop = candidates & ~keep
        return {"drop": drop, "applies": drop.any(dim=1)}

    @staticmethod
    def _sub_grid(batch: MultimodalBatch, ratio: Tensor, generator: torch.Generator) -> Tensor:
        """``[B, Nv]`` slots on evenly spaced rows × columns covering about ``ratio`` of the grid."""
        positions = batch.vision_positions.long()
        extent = positions.amax(dim=1) + 1  # [B, 2]: rows, cols per sample
        rows, cols = extent[:, 0].double(), extent[:, 1].double()
        keep_rows = torch.round(rows * ratio.sqrt()).clamp(min=1).minimum(rows)
        keep_cols = torch.round(ratio * rows * cols / keep_rows).clamp(min=1).minimum(cols)
        chosen = torch.stack((keep_rows, keep_cols), dim=1).long().unsqueeze(1)  # [B, 1, 2]
        draws = sampling.uniform(generator, (batch.batch_size, 2), batch.device)
        offset = (draws * extent).long().minimum(extent - 1).unsqueeze(1)  # random phase in [0, n)
        size = extent.unsqueeze(1)
        # Index i of n is picked when floor((i k + offset) / n) steps up: exactly k of n, evenly spaced.
        after = torch.div((positions + 1) * chosen + offset, size, rounding_mode="floor")
        before = torch.div(positions * chosen + offset, size, rounding_mode="floor")
        return (after > before).all(dim=2)

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        erase, _ = spare_aligned(batch, erase_vision=params["drop"] & batch.vision_mask & active.unsqueeze(1))
        return batch.replace(vision_mask=batch.vision_mask & ~erase)


@register
class PaddingSide(Op):
    """Move a sample's text padding to the other side (right-padded ↔ left-padded) with probability p.

    A right-padded row is rolled so its content ends at the last position; a left-padded row so its
    content starts at the first. Every text-position field moves with it: ``text_ids``,
    ``text_mask``, ``text_special``, ``text_embeddings``, ``mlm_labels`` and the Nt axis of
    ``alignment`` (one batched gather with a per-row index). Padding is ``text_special`` and not
    ``text_mask``; rows without padding, all padding, or padding on both sides are unaffected (not
    augmented). Nothing is erased.

    Magnitude → p in [0, 1]: docs/GUIDELINES.md, "padding can introduce bias - augment by varying padding
    position (left vs right)"; p = 0.5 makes the side uninformative, p = 1 flips every row.
    Params: ``shift`` [B] long (signed roll: ``new[j] = old[(j - shift) mod Nt]``; 0 = unchanged).
    """

    name = "padding_side"
    stage = "token"
    modality = "text"
    parameter = "probability a sample's padding moves to the other side"
    default_range = (0.0, 1.0)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        flip = sampling.bernoulli(generator, strength, (batch.batch_size,), batch.device)
        length = batch.num_text_tokens
        padding = batch.text_special & ~batch.text_mask
        pads = padding.sum(dim=1)
        position = torch.arange(length, device=batch.device).expand_as(padding)
        first_content = torch.where(padding, length, position).amin(dim=1)
        last_content = torch.where(padding, -1, position).amax(dim=1)
        movable = (pads > 0) & (pads < length)
        right_padded = movable & (length - 1 - last_content == pads)
        left_padded = movable & (first_content == pads)
        shift = torch.where(right_padded, pads, torch.where(left_padded, -pads, torch.zeros_like(pads)))
        shift = torch.where(flip, shift, torch.zeros_like(shift))
        return {"shift": shift, "applies": shift != 0}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        length = batch.num_text_tokens
        shift = torch.where(active, params["shift"].long(), torch.zeros_like(params["shift"].long()))
        position = torch.arange(length, device=batch.device)
        index = (position.unsqueeze(0) - shift.unsqueeze(1)) % length  # [B, Nt]

        def roll(tensor: Optional[Tensor]) -> Optional[Tensor]:
            if tensor is None:
                return None
            wide = index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand_as(tensor)
            return tensor.gather(1, wide)

        return batch.replace(
            text_ids=roll(batch.text_ids),
            text_mask=roll(batch.text_mask),
            text_special=roll(batch.text_special),
            text_embeddings=roll(batch.text_embeddings),
            mlm_labels=roll(batch.mlm_labels),
            alignment=roll(batch.alignment),
        )
