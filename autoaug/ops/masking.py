"""Masking ops: replace token content while the token stays in the sequence (and in attention).

docs/GUIDELINES.md (strength table; BERT, Devlin et al. 2019; MAE, He et al. 2022): BERT-style text
masking (15% of the text tokens, 80/10/10 [MASK]/random/unchanged, MLM labels on the selected
positions) and vision patch masking in four patterns: random (MAE-style), contiguous blocks
(simulated occlusion), a regular grid (GridMask) and attention-guided (the most salient patches, so
the model cannot lean on them alone). The strength table of docs/GUIDELINES.md puts the masking
ratio at 5–10% (conservative), 10–15% (moderate, BERT: 15%) and 15–25% (aggressive), so magnitude 1
is a ratio of 0.25 (0.5 for the grid, see `VisionGridMask`).

A masked patch keeps its slot and its keep-mask; its content becomes ``fill`` and ``vision_masked``
marks it, so a model can swap in a learned [MASK] embedding. Every vision op here only masks patches
that are kept and not yet masked (dropped ones are never chosen, masked ones are not re-filled), and
every erasure goes through `spare_aligned`, so an aligned text ↔ patch pair is never erased on both
sides. Special tokens and padding are never touched.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from autoaug.batch import IGNORE_INDEX, MultimodalBatch, TextVocabulary
from autoaug.errors import BatchValidationError, OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.alignment import spare_aligned
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register
from autoaug.ops.saliency import vision_saliency


# ---------------------------------------------------------------------------------------- shared
def _maskable_patches(batch: MultimodalBatch) -> Tensor:
    """``[B, Nv]`` patches a vision masking op may choose: kept and not already masked."""
    return batch.vision_mask & ~batch.vision_masked


def _mask_patches(batch: MultimodalBatch, proposal: Tensor, active: Tensor, fill: float) -> MultimodalBatch:
    """Replace the content of the proposed patches of active samples by ``fill`` and flag them.

    The proposal is restricted to active samples and maskable patches, then passed through
    `spare_aligned`; the surviving patches get ``fill`` in ``vision`` and True in ``vision_masked``.
    """
    erase = proposal & active.unsqueeze(1) & _maskable_patches(batch)
    erase, _ = spare_aligned(batch, erase_vision=erase)
    return batch.replace(
        vision=batch.vision.masked_fill(erase.unsqueeze(-1), fill),
        vision_masked=batch.vision_masked | erase,
    )


def _first_k(scores: Tensor, count: Tensor) -> Tensor:
    """``[B, N]`` bool: the ``count[b]`` positions of row ``b`` with the smallest scores.

    Ranks come from a stable sort, so exactly ``min(count, N)`` positions are chosen per row and ties
    go to the lower index.
    """
    order = scores.argsort(dim=1, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < count.unsqueeze(1)


def _check_number(op: str, option: str, value, allowed: str, low: float = -math.inf,
                  high: float = math.inf, low_open: bool = False) -> float:
    """A real number in the allowed interval, or an `OpArgumentError` naming op, option and range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        raise OpArgumentError(f"{op}: option '{option}' must be {allowed}, got {value!r}")
    return float(value)


class _VisionMaskingOp(Op):
    """Base of the vision masking ops: ``fill`` option, sample a ``mask`` proposal, apply it."""

    stage = "token"
    modality = "vision"

    def __init__(self, magnitude_range: Optional[tuple[float, float]] = None, fill: float = 0.0) -> None:
        super().__init__(magnitude_range)
        self.fill = _check_number(self.name, "fill", fill, "a finite number (the masked patches' value)")

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        params = self._propose(batch, strength, generator)
        params["mask"] = params["mask"] & _maskable_patches(batch)
        params["applies"] = params["mask"].any(dim=1)
        return params

    def _propose(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        """Params holding ``mask`` [B, Nv] bool (the patches to mask) plus any geometry to log."""
        raise NotImplementedError

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _mask_patches(batch, params["mask"], active, self.fill)


def _count_to_mask(batch: MultimodalBatch, ratio: float) -> Tensor:
    """``[B]`` long: ``round(ratio * kept patches)``, at most the number of maskable patches."""
    kept = batch.vision_mask.sum(dim=1)
    count = torch.round(kept.to(torch.float64) * min(max(ratio, 0.0), 1.0)).long()
    return torch.minimum(count, _maskable_patches(batch).sum(dim=1))


# ---------------------------------------------------------------------------------------- text
@register
class TextMask(Op):
    """BERT-style masked language modelling: select text tokens at a rate, corrupt them 80/10/10, label them.

    Each maskable token (kept, not special or padding, not already carrying an MLM label) is selected
    independently with probability ``rate``. Of the selected tokens a fraction ``mask_token_fraction``
    (0.8) becomes ``vocab.mask_id``, ``random_token_fraction`` (0.1) becomes a uniformly random
    non-special id of the vocabulary (never ``pad_id``, ``mask_id`` or one of ``special_ids``) and the
    rest keep their id. ``mlm_labels`` holds the original id at selected positions and keeps its
    previous value (``-100`` when there was none) elsewhere. Selected positions count as erased for
    cross-modal alignment: a selection that would complete an erased aligned pair is withdrawn.
    Needs ``batch.vocab``. Text embeddings, if already present, are not recomputed (this is a
    token-stage op).

    Magnitude → rate in [0, 0.25] (docs/GUIDELINES.md: conservative 5–10%, moderate 10–15%, BERT 15%,
    aggressive 15–25%).

    Params: ``select`` [B, Nt] bool; ``to_mask_id`` and ``to_random_id`` [B, Nt] bool (disjoint,
    inside ``select``); ``random_ids`` [B, Nt] long.
    """

    name = "text_mask"
    stage = "token"
    modality = "text"
    parameter = "masking rate (fraction of maskable text tokens selected)"
    default_range = (0.0, 0.25)

    def __init__(
        self,
        magnitude_range: Optional[tuple[float, float]] = None,
        mask_token_fraction: float = 0.8,
        random_token_fraction: float = 0.1,
    ) -> None:
        super().__init__(magnitude_range)
        self.mask_token_fraction = _check_number(
            self.name, "mask_token_fraction", mask_token_fraction, "a number in [0, 1]", 0.0, 1.0)
        self.random_token_fraction = _check_number(
            self.name, "random_token_fraction", random_token_fraction, "a number in [0, 1]", 0.0, 1.0)
        if self.mask_token_fraction + self.random_token_fraction > 1.0 + 1e-9:
            raise OpArgumentError(
                f"{self.name}: options 'mask_token_fraction' + 'random_token_fraction' must be at most 1, "
                f"got {mask_token_fraction!r} + {random_token_fraction!r}"
            )

    def check_batch(self, batch: MultimodalBatch) -> None:
        super().check_batch(batch)
        batch.require("vocab", op=self.name)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        shape, device = batch.text_ids.shape, batch.device
        select = sampling.bernoulli(generator, strength, shape, device) & _maskable_text(batch)
        action = sampling.uniform(generator, shape, device)
        to_mask_id = select & (action < self.mask_token_fraction)
        to_random_id = select & ~to_mask_id & (action < self.mask_token_fraction + self.random_token_fraction)
        return {
            "select": select,
            "to_mask_id": to_mask_id,
            "to_random_id": to_random_id,
            "random_ids": _random_ordinary_ids(batch, generator, shape),
            "applies": select.any(dim=1),
        }

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        select = params["select"] & active.unsqueeze(1) & _maskable_text(batch)
        _, select = spare_aligned(batch, erase_text=select)
        ids = batch.text_ids
        mask_id = torch.full_like(ids, batch.vocab.mask_id)
        new_ids = torch.where(select & params["to_mask_id"], mask_id, ids)
        new_ids = torch.where(select & params["to_random_id"], params["random_ids"].to(ids.dtype), new_ids)
        old_labels = batch.mlm_labels
        if old_labels is None:
            old_labels = torch.full(ids.shape, IGNORE_INDEX, dtype=torch.long, device=ids.device)
        labels = torch.where(select, ids.to(old_labels.dtype), old_labels)
        return batch.replace(text_ids=new_ids, mlm_labels=labels)


def _maskable_text(batch: MultimodalBatch) -> Tensor:
    """``[B, Nt]`` text positions MLM masking may select: kept, not special, not already labelled."""
    maskable = batch.text_content
    if batch.mlm_labels is not None:
        maskable = maskable & (batch.mlm_labels == IGNORE_INDEX)
    return maskable


def _random_ordinary_ids(batch: MultimodalBatch, generator: torch.Generator, shape) -> Tensor:
    """Ids drawn uniformly from the vocabulary minus its special ids (pad, mask and ``special_ids``)."""
    table = _ordinary_ids(batch.vocab, batch.device)
    draws = sampling.integers(generator, 0, table.numel(), shape, batch.device)
    # index_select, not table[draws]: advanced indexing costs milliseconds on small CPU tensors here
    return table.index_select(0, draws.reshape(-1)).view(draws.shape)


_ORDINARY_IDS: dict[tuple[TextVocabulary, torch.device], Tensor] = {}


def _ordinary_ids(vocab: TextVocabulary, device: torch.device) -> Tensor:
    """The sorted non-special ids of ``vocab`` as a long tensor on ``device`` (built once, then cached)."""
    key = (vocab, device)
    if key not in _ORDINARY_IDS:
        special = sorted({vocab.pad_id, vocab.mask_id, *vocab.special_ids} & set(range(vocab.vocab_size)))
        ordinary = torch.ones(vocab.vocab_size, dtype=torch.bool)
        ordinary[special] = False
        if not ordinary.any():
            raise BatchValidationError(
                f"op 'text_mask' needs a vocabulary with at least one non-special id, got vocab_size="
                f"{vocab.vocab_size} with special ids {special}"
            )
        if len(_ORDINARY_IDS) >= 16:  # a handful of tokenizers per process at most; stay bounded
            _ORDINARY_IDS.clear()
        _ORDINARY_IDS[key] = ordinary.nonzero().squeeze(1).to(device)
    return _ORDINARY_IDS[key]


# ---------------------------------------------------------------------------------------- vision
@register
class VisionRandomMask(_VisionMaskingOp):
    """MAE-style random patch masking: replace a fixed fraction of each sample's patches by a fill value.

    Per sample exactly ``round(ratio * kept patches)`` patches are masked, chosen uniformly among the
    kept, not yet masked ones (the smallest of i.i.d. uniform scores); fewer only when fewer are
    maskable or `spare_aligned` withdraws some to protect aligned text ↔ patch pairs. Their content
    becomes ``fill`` (option, default 0.0) and ``vision_masked`` becomes True.

    Magnitude → mask ratio in [0, 0.25] (docs/GUIDELINES.md: masking ratio 5–10% conservative, 10–15%
    moderate, 15–25% aggressive).

    Params: ``mask`` [B, Nv] bool, ``count`` [B] long (patches asked for).
    """

    name = "vision_random_mask"
    parameter = "fraction of kept patches masked"
    default_range = (0.0, 0.25)

    def _propose(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        count = _count_to_mask(batch, strength)
        scores = sampling.random_scores(generator, batch.vision_mask.shape, batch.device)
        scores = scores.masked_fill(~_maskable_patches(batch), 2.0)  # after every maskable patch
        return {"mask": _first_k(scores, count), "count": count}


@register
class VisionBlockMask(_VisionMaskingOp):
    """Mask one contiguous rectangle of patches per sample, as an occluder would hide part of an image.

    The rectangle's target area is ``ratio * rows * cols`` of the sample's patch grid (read off
    ``vision_positions``, so any layout works). Its aspect ratio (height / width) is log-uniform in
    ``aspect_ratio`` (option, default (0.5, 2.0)); ``height = round(sqrt(area * aspect))`` and
    ``width = round(area / height)``, each clipped to [1, grid side]. Its top-left corner is uniform
    over the positions where it fits inside the grid. Every kept, not yet masked patch whose position
    lies inside is masked (content → ``fill``, ``vision_masked`` True); for video the same rectangle
    covers every frame (tube masking), since positions are per frame.

    A target area below one patch cannot be a rectangle, so it becomes a chance: the sample gets its
    1 × 1 block with probability ``area`` (and is untouched otherwise), so the expected masked area is
    still ``area`` patches and goes to 0 with the magnitude (a schedule ramping up from 0, or a searched
    magnitude near 0, masks almost nothing rather than a whole patch of every sample). From one patch
    up every sample gets its rectangle.

    Magnitude → area ratio in [0, 0.25] (docs/GUIDELINES.md: masking ratio 5–25%).

    Params: ``mask`` [B, Nv] bool (all False for a sample that lost its chance); ``top``, ``left``,
    ``height``, ``width`` [B] long (grid units).
    """

    name = "vision_block_mask"
    parameter = "block area as a fraction of the patch grid"
    default_range = (0.0, 0.25)

    def __init__(
        self,
        magnitude_range: Optional[tuple[float, float]] = None,
        fill: float = 0.0,
        aspect_ratio: Sequence[float] = (0.5, 2.0),
    ) -> None:
        super().__init__(magnitude_range, fill)
        allowed = "two positive numbers (low, high) with low <= high (height / width)"
        error = OpArgumentError(f"{self.name}: option 'aspect_ratio' must be {allowed}, got {aspect_ratio!r}")
        if not isinstance(aspect_ratio, (tuple, list)) or len(aspect_ratio) != 2:
            raise error
        low, high = (_check_number(self.name, "aspect_ratio", value, allowed, 0.0, low_open=True)
                     for value in aspect_ratio)
        if low > high:
            raise error
        self.aspect_ratio = (low, high)

    def _propose(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size, device = batch.batch_size, batch.device
        positions = batch.vision_positions
        extent = positions.amax(dim=1).long() + 1  # [B, 2]: rows, cols of each sample's grid
        rows, cols = extent[:, 0], extent[:, 1]
        area = (rows * cols).to(torch.float64) * max(strength, 0.0)
        log_low, log_high = math.log(self.aspect_ratio[0]), math.log(self.aspect_ratio[1])
        draws = sampling.uniform(generator, (size, 3), device).to(torch.float64)
        aspect = torch.exp(log_low + draws[:, 0] * (log_high - log_low))
        height = torch.round(torch.sqrt(area * aspect)).long().clamp(min=1)
        height = torch.minimum(height, rows)
        width = torch.minimum(torch.round(area / height).long().clamp(min=1), cols)
        top = torch.floor(draws[:, 1] * (rows - height + 1)).long()
        left = torch.floor(draws[:, 2] * (cols - width + 1)).long()
        row, col = positions[..., 0].long(), positions[..., 1].long()
        inside = (row >= top.unsqueeze(1)) & (row < (top + height).unsqueeze(1)) \
            & (col >= left.unsqueeze(1)) & (col < (left + width).unsqueeze(1))
        # Drawn after the geometry, so a seed draws the same rectangles as before this chance existed.
        chance = sampling.uniform(generator, (size,), device).to(torch.float64)
        inside = inside & (chance < area).unsqueeze(1)  # area >= 1: always; below: with probability area
        return {"mask": inside, "top": top, "left": left, "height": height, "width": width}


@register
class VisionGridMask(_VisionMaskingOp):
    """GridMask-style masking: a regular lattice of square patch blocks, random period and offset per sample.

    Per sample a period ``d`` is drawn uniformly from ``periods`` (option, default (2, 3, 4) patches)
    and offsets ``oy, ox`` uniformly from [0, d). A patch at grid (row, col) is masked when
    ``(row + oy) % d < s`` and ``(col + ox) % d < s``, so an ``s × s`` block out of every ``d × d`` cell
    (fraction ``(s / d)²`` of a grid whose sides are multiples of d). The block side is
    ``s = round(d * sqrt(ratio))``, capped at ``d - 1``: the nearest lattice to the requested fraction.
    This is quantised: with d = 2 a ratio below 1/16 gives s = 0 and a ratio in [1/16, 0.5] gives
    25%; d = 4 reaches 1/16, 1/4 or 9/16. A sample whose s is 0 is left untouched (and not counted as
    augmented); ratio 0 masks nothing. Dropped and already masked patches are never chosen.

    Magnitude → target masked fraction in [0, 0.5] (a lattice needs more than the guidelines' 25% before
    d = 3 and d = 4 can produce anything but a single patch per cell; GridMask itself keeps about half
    of the image).

    Params: ``mask`` [B, Nv] bool; ``period``, ``offset_row``, ``offset_col``, ``size`` [B] long.
    """

    name = "vision_grid_mask"
    parameter = "target fraction of the patch grid masked (quantised to (s/d)^2)"
    default_range = (0.0, 0.5)

    def __init__(
        self,
        magnitude_range: Optional[tuple[float, float]] = None,
        fill: float = 0.0,
        periods: Sequence[int] = (2, 3, 4),
    ) -> None:
        super().__init__(magnitude_range, fill)
        valid = isinstance(periods, (tuple, list)) and len(periods) > 0 and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 2 for d in periods)
        if not valid:
            raise OpArgumentError(
                f"{self.name}: option 'periods' must be a non-empty list of integers >= 2 (in patches), "
                f"got {periods!r}"
            )
        self.periods = tuple(periods)

    def _propose(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size, device = batch.batch_size, batch.device
        choice = sampling.integers(generator, 0, len(self.periods), (size,), device)
        period = torch.tensor(self.periods, dtype=torch.long, device=device)[choice]
        offsets = torch.floor(sampling.uniform(generator, (size, 2), device) * period.unsqueeze(1)).long()
        side = torch.round(period.to(torch.float64) * math.sqrt(min(max(strength, 0.0), 1.0))).long()
        side = torch.minimum(side, period - 1)
        row = batch.vision_positions[..., 0].long() + offsets[:, :1]
        col = batch.vision_positions[..., 1].long() + offsets[:, 1:]
        d, s = period.unsqueeze(1), side.unsqueeze(1)
        mask = (row % d < s) & (col % d < s)
        return {"mask": mask, "period": period, "offset_row": offsets[:, 0], "offset_col": offsets[:, 1],
                "size": side}


@register
class VisionAttentionMask(_VisionMaskingOp):
    """Mask each sample's most salient patches, so the model cannot rely on the salient regions alone.

    Per sample the ``k = round(ratio * kept patches)`` kept, not yet masked patches with the highest
    saliency are masked (content → ``fill``, ``vision_masked`` True). Saliency comes from
    `autoaug.ops.saliency.vision_saliency`: ``batch.saliency`` (attention from the model's last
    forward) when present, else the cheap distinctiveness proxy (distance from the sample's mean
    patch). Ties go to the lower slot index; no randomness is involved. `spare_aligned` may withdraw
    some to protect aligned text ↔ patch pairs.

    Magnitude → mask ratio in [0, 0.25] (docs/GUIDELINES.md: masking ratio 5–25%).

    Params: ``mask`` [B, Nv] bool, ``count`` [B] long (patches asked for).
    """

    name = "vision_attention_mask"
    uses_saliency = True
    parameter = "fraction of kept patches masked (most salient first)"
    default_range = (0.0, 0.25)

    def _propose(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        count = _count_to_mask(batch, strength)
        saliency = torch.nan_to_num(vision_saliency(batch), nan=-math.inf)
        saliency = saliency.masked_fill(~_maskable_patches(batch), -math.inf)
        return {"mask": _first_k(-saliency, count), "count": count}
