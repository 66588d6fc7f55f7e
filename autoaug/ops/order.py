"""Order ops: move vision tokens between sequence slots, or flip which modality comes first.

docs/GUIDELINES.md, "Order" (video frame order: MERLOT, Zellers et al. 2021): image patches have a
weak sequential order (raster scan is arbitrary), so vision tokens may be shuffled, reversed or
block-shuffled; text order is never touched; video frames may be reversed or shuffled to exercise
temporal reasoning; and the text-vision order may be swapped. Two kinds of patch move are
distinguished:

- *order only* (``vision_permute_order``, ``vision_reversal``): content and 2-D position move
  together, so only the sequence order changes (a no-op for a bidirectional encoder with position
  embeddings, meaningful for causal decoders);
- *content to other positions* (``vision_scramble_positions``, ``vision_block_shuffle``,
  ``frame_reversal``, ``frame_shuffle``): positions stay in their slots and content moves, so patches
  land at other grid positions (or frames).

Every slot op samples ``source`` ``[B, Nv]`` (long): output slot ``j`` of sample ``b`` takes the token
of input slot ``source[b, j]``. It is always a permutation of each row, so tokens are moved, never
duplicated or lost, and every per-slot field moves with its token: ``vision``, ``vision_mask``,
``vision_masked``, ``saliency``, the ``Nv`` axis of ``alignment`` and, for order-only ops,
``vision_positions``. Video (frame-major, ``Nv = num_frames * patches_per_frame``): the patch ops act
inside each frame (a slot's frame, ``slot // patches_per_frame``, is its temporal position, so a patch
never changes frame); the frame ops move whole frames.

Sampling "a fraction f of n items" takes ``round(f * n)`` of them, but at least 2 when ``f > 0`` (a
single item cannot be permuted), so any positive magnitude changes something when it can.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.errors import OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register


# ---------------------------------------------------------------------- shared helpers
def _count(fraction: float, available: Tensor) -> Tensor:
    """How many of ``available`` items a fraction takes: round(f * n), at least 2 when f > 0, at most n."""
    count = torch.floor(available.to(torch.float64) * fraction + 0.5).long()
    if fraction > 0:
        count = count.clamp_min(2)
    return torch.minimum(count, available.long())


def _span_length(fraction: float, available: int) -> int:
    """`_count` for one known size (a span length shared by every row)."""
    count = math.floor(available * fraction + 0.5)
    if fraction > 0:
        count = max(count, 2)
    return min(count, available)


def _permute_random_subset(
    generator: torch.Generator, eligible: Tensor, fraction: float
) -> tuple[Tensor, Tensor]:
    """Pick ``round(fraction * n)`` eligible items per row at random and permute them among themselves.

    ``eligible`` is ``[R, N]`` bool. Returns ``(source, chosen)``: ``source`` ``[R, N]`` long is a
    permutation of each row (item ``j`` takes the content of item ``source[r, j]``; unchosen items map
    to themselves) and ``chosen`` ``[R, N]`` bool marks the picked items. The permutation of the chosen
    items is a plain uniform one (random scores, argsort), not a derangement: some items may stay. In
    the rare case (probability 1/k!) it comes out as the identity it is replaced by a one-step cyclic
    shift of the chosen items, so a row with at least 2 chosen items always changes order.
    """
    rows, length = eligible.shape
    device = eligible.device
    index = torch.arange(length, device=device).expand(rows, length)
    count = _count(fraction, eligible.sum(1))

    # Choose: the `count` eligible items with the smallest random scores.
    pick_scores = sampling.random_scores(generator, (rows, length), device)
    rank = torch.where(eligible, pick_scores, 2.0).argsort(1).argsort(1)
    chosen = rank < count.unsqueeze(1)

    # Both orders list the chosen items first, then the others in index order; pairing them position
    # by position maps each chosen item to a random chosen item and every other item to itself.
    order_scores = sampling.random_scores(generator, (rows, length), device)
    in_order = torch.where(chosen, index, index + length).argsort(1)
    shuffled = torch.where(chosen, order_scores, 1.0 + index.to(order_scores.dtype)).argsort(1)
    unchanged = (shuffled == in_order).all(1, keepdim=True)
    cycle = torch.where(index < count.unsqueeze(1) - 1, index + 1,
                        torch.where(index == count.unsqueeze(1) - 1, 0, index))
    shuffled = torch.where(unchanged, in_order.gather(1, cycle), shuffled)
    source = torch.empty_like(in_order).scatter_(1, in_order, shuffled)
    return source, chosen


def _frame_rows(mask: Tensor, num_frames: int) -> Tensor:
    """``[B, Nv]`` -> ``[B * num_frames, patches_per_frame]``: one row per frame (frame-major layout)."""
    batch, tokens = mask.shape
    return mask.reshape(batch * num_frames, tokens // num_frames)


def _rows_to_slots(local_source: Tensor, batch_size: int, num_frames: int) -> Tensor:
    """Per-frame permutations ``[B * F, P]`` (indices inside a frame) -> slot permutation ``[B, F * P]``."""
    per_frame = local_source.shape[1]
    offset = torch.arange(num_frames, device=local_source.device).repeat(batch_size) * per_frame
    return (local_source + offset.unsqueeze(1)).reshape(batch_size, num_frames * per_frame)


def _frames_to_slots(frame_source: Tensor, patches_per_frame: int) -> Tensor:
    """Frame permutation ``[B, F]`` -> slot permutation ``[B, F * P]`` moving whole frames."""
    batch, frames = frame_source.shape
    within = torch.arange(patches_per_frame, device=frame_source.device)
    return (frame_source.unsqueeze(2) * patches_per_frame + within).reshape(batch, frames * patches_per_frame)


def _reverse_span(start: Tensor, length: int, size: int) -> Tensor:
    """``[R, size]`` permutation reversing items ``start .. start + length - 1`` of each row.

    ``start`` is ``[R, 1]`` long; ``length`` is shared by every row.
    """
    index = torch.arange(size, device=start.device)
    inside = (index >= start) & (index < start + length)
    return torch.where(inside, 2 * start + length - 1 - index, index)


def _take_slots(tensor: Tensor, flat_source: Tensor) -> Tensor:
    """Rows of ``tensor`` ``[B, Nv, ...]`` at flat slot indices ``b * Nv + source`` (one index_select)."""
    batch, tokens = tensor.shape[:2]
    rest = tensor.shape[2:]
    return tensor.reshape(batch * tokens, *rest).index_select(0, flat_source).view(batch, tokens, *rest)


def _gather_slots(
    batch: MultimodalBatch, source: Tensor, active: Tensor, move_positions: bool
) -> MultimodalBatch:
    """Move every per-slot vision field by the slot permutation ``source`` ``[B, Nv]``.

    Output slot ``j`` of sample ``b`` takes input slot ``source[b, j]``; inactive samples use the
    identity (a plain copy, so they come out bit-identical). ``vision_positions`` moves only when
    ``move_positions`` (order-only ops); otherwise content moves to the positions of its new slots.
    """
    size, tokens = source.shape
    identity = torch.arange(tokens, device=source.device)
    source = torch.where(active.unsqueeze(1), source, identity)
    flat = (source + torch.arange(size, device=source.device).unsqueeze(1) * tokens).reshape(-1)
    changes = {
        "vision": _take_slots(batch.vision, flat),
        "vision_mask": _take_slots(batch.vision_mask, flat),
        "vision_masked": _take_slots(batch.vision_masked, flat),
    }
    if move_positions:
        changes["vision_positions"] = _take_slots(batch.vision_positions, flat)
    if batch.saliency is not None:
        changes["saliency"] = _take_slots(batch.saliency, flat)
    if batch.alignment is not None:
        text_tokens = batch.alignment.shape[1]
        changes["alignment"] = batch.alignment.gather(
            2, source.unsqueeze(1).expand(-1, text_tokens, -1))
    return batch.replace(**changes)


# ---------------------------------------------------------------------- patch order ops
def _sample_kept_slot_permutation(batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
    """A fraction ``strength`` of the kept slots of each frame permuted among themselves."""
    eligible = _frame_rows(batch.vision_mask, batch.num_frames)
    local, chosen = _permute_random_subset(generator, eligible, strength)
    moved = (chosen.sum(1) >= 2).view(batch.batch_size, batch.num_frames).any(1)
    return {"source": _rows_to_slots(local, batch.batch_size, batch.num_frames), "applies": moved}


@register
class VisionPermuteOrder(Op):
    """Permute the sequence order of a random fraction of the kept patch tokens, positions travelling along.

    A fraction f of the kept (``vision_mask``) slots is chosen per sample (per frame for video) and
    their tokens are permuted among themselves; each token keeps its 2-D grid position (content and
    position move together), so only the sequence order changes: a no-op for a bidirectional encoder,
    meaningful for a causal decoder. Dropped slots stay put.

    Magnitude → f in [0, 1]: docs/GUIDELINES.md calls vision patches safe to shuffle when positions are encoded
    separately (moderate: shuffling enabled for vision tokens), and here the positions travel with the
    tokens, so even a full shuffle keeps every patch where it was in the image.
    Params: ``source`` [B, Nv] long (output slot j takes input slot ``source[b, j]``).
    """

    name = "vision_permute_order"
    stage = "token"
    modality = "vision"
    parameter = "fraction of kept patch tokens reordered"
    default_range = (0.0, 1.0)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        return _sample_kept_slot_permutation(batch, strength, generator)

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=True)


@register
class VisionScramblePositions(Op):
    """Move the content of a random fraction of the kept patches to each other's grid positions.

    A fraction f of the kept slots is chosen per sample (per frame for video) and their contents are
    permuted among themselves while ``vision_positions`` stay in their slots, so each moved patch now
    sits at another grid position (the image is scrambled). ``vision``, ``vision_mask``,
    ``vision_masked``, ``saliency`` and the alignment's ``Nv`` axis move with the content.

    Magnitude → f in [0, 0.5]: docs/GUIDELINES.md enables vision shuffling for moderate training and "with
    constraints" for aggressive training; scrambling destroys spatial layout, so the constraint here
    is that at most half the patches leave their place. Params: ``source`` [B, Nv] long.
    """

    name = "vision_scramble_positions"
    stage = "token"
    modality = "vision"
    parameter = "fraction of kept patches moved to other positions"
    default_range = (0.0, 0.5)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        return _sample_kept_slot_permutation(batch, strength, generator)

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=False)


@register
class VisionBlockShuffle(Op):
    """Shuffle a random fraction of the full k×k blocks of the patch grid, each block moving whole.

    Blocks are read off ``vision_positions`` (block ``(row // k, col // k)``), so any slot layout works.
    A block is full when each of its k×k cells is held by exactly one slot of the frame; a fraction f
    of the full blocks is permuted among themselves, each block's content keeping its within-block
    arrangement, while positions stay in their slots (as in ``vision_scramble_positions``). Partial
    edge blocks stay put; dropped patches inside a moved block move with it.

    Magnitude → f in [0, 1]: the guidelines' "Block Shuffling" keeps local structure (edges, textures)
    while disrupting the global organisation, the constrained shuffle its aggressive setting allows.
    Option ``block_size`` (k, int >= 1, default 2). Params: ``source`` [B, Nv] long.
    """

    name = "vision_block_shuffle"
    stage = "token"
    modality = "vision"
    parameter = "fraction of full k×k blocks shuffled"
    default_range = (0.0, 1.0)

    def __init__(self, block_size: int = 2, magnitude_range=None) -> None:
        super().__init__(magnitude_range)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise OpArgumentError(
                f"{self.name}: block_size must be an int >= 1 (the side of a block in patches), "
                f"got {block_size!r}"
            )
        self.block_size = block_size

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        k = self.block_size
        frames, per_frame = batch.num_frames, batch.patches_per_frame
        rows_count = batch.batch_size * frames
        positions = batch.vision_positions.reshape(rows_count, per_frame, 2).long()
        grid_rows, grid_cols = batch.grid_shape
        blocks_across = -(-grid_cols // k)
        blocks = -(-grid_rows // k) * blocks_across
        cells_per_block = k * k
        block = (positions[..., 0] // k) * blocks_across + positions[..., 1] // k
        cell = block * cells_per_block + (positions[..., 0] % k) * k + positions[..., 1] % k

        slot = torch.arange(per_frame, device=batch.device).expand(rows_count, per_frame)
        occupancy = torch.zeros(rows_count, blocks * cells_per_block, dtype=torch.long, device=batch.device)
        occupancy.scatter_add_(1, cell, torch.ones_like(cell))
        full = (occupancy.view(rows_count, blocks, cells_per_block) == 1).all(2)
        slot_of_cell = torch.zeros_like(occupancy).scatter_(1, cell, slot)  # read only for full blocks

        block_source, chosen = _permute_random_subset(generator, full, strength)
        source_cell = block_source.gather(1, block) * cells_per_block + cell % cells_per_block
        local = torch.where(full.gather(1, block), slot_of_cell.gather(1, source_cell), slot)
        moved = (chosen.sum(1) >= 2).view(batch.batch_size, frames).any(1)
        return {"source": _rows_to_slots(local, batch.batch_size, frames), "applies": moved}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=False)


@register
class VisionReversal(Op):
    """Reverse the sequence order of a random contiguous span of patch slots, positions travelling along.

    A span of ``round(f * P)`` consecutive slots (at least 2 when f > 0; ``P`` = patches per frame)
    starting at a uniform random slot is reversed per sample (per frame for video); f = 1 reverses the
    whole sequence. Tokens keep their 2-D positions (as in ``vision_permute_order``), so only the
    sequence order changes. Every slot in the span moves, dropped ones included (their mask moves too).

    Magnitude → f in [0, 1]: the guidelines' "Vision Token Reversal" reverses the patch order to test
    position invariance; with positions carried along the full reversal is safe.
    Params: ``source`` [B, Nv] long.
    """

    name = "vision_reversal"
    stage = "token"
    modality = "vision"
    parameter = "fraction of the patch sequence in the reversed span"
    default_range = (0.0, 1.0)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        frames, per_frame = batch.num_frames, batch.patches_per_frame
        length = _span_length(strength, per_frame)
        start = sampling.integers(generator, 0, per_frame - length + 1,
                                  (batch.batch_size * frames, 1), batch.device)
        local = _reverse_span(start, length, per_frame)
        applies = torch.full((batch.batch_size,), length >= 2, dtype=torch.bool, device=batch.device)
        return {"source": _rows_to_slots(local, batch.batch_size, frames), "applies": applies}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=True)


# ---------------------------------------------------------------------- modality order
@register
class ModalityOrderSwap(Op):
    """Swap which modality comes first in the joint sequence (image-first ↔ text-first) for some samples.

    With probability p per sample ``vision_first`` is flipped; the tokens themselves are untouched (the
    model or collator concatenates the two halves in the order ``vision_first`` says).

    Magnitude → p in [0, 0.5]: the guidelines' "Text-Vision Order Reversal" tests whether a model is
    sensitive to modality order; p = 0.5 already makes the order uninformative, and a larger p would
    only make the other order the habitual one. Params: ``swap`` [B] bool.
    """

    name = "modality_order_swap"
    stage = "token"
    modality = "cross"
    parameter = "probability a sample's modality order is swapped"
    default_range = (0.0, 0.5)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        swap = sampling.bernoulli(generator, strength, (batch.batch_size,), batch.device)
        return {"swap": swap, "applies": swap}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return batch.replace(vision_first=batch.vision_first ^ (params["swap"] & active))


# ---------------------------------------------------------------------- video frames
@register
class FrameReversal(Op):
    """Reverse the temporal order of the frame contents over a random contiguous span of frames.

    Video, frame-major (``Nv = num_frames * patches_per_frame``, frame of a slot = slot //
    patches_per_frame). A span of ``round(f * num_frames)`` consecutive frames (at least 2 when f > 0)
    at a uniform random start has its frame contents reversed; f = 1 reverses the whole clip. Positions
    stay in their slots (each frame's patches keep their within-frame arrangement). With
    ``num_frames == 1`` there is nothing to reverse: the op changes nothing (``applies`` False).

    Magnitude → f in [0, 1]: the guidelines' "Temporal Reversal (Video)" reverses frame order to test
    temporal reasoning (whole-clip reversal is the classic form; use it where actions are symmetric).
    Params: ``source`` [B, Nv] long.
    """

    name = "frame_reversal"
    stage = "token"
    modality = "vision"
    parameter = "fraction of the frames in the reversed span"
    default_range = (0.0, 1.0)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        frames = batch.num_frames
        length = _span_length(strength, frames)
        start = sampling.integers(generator, 0, frames - length + 1, (batch.batch_size, 1), batch.device)
        frame_source = _reverse_span(start, length, frames)
        applies = torch.full((batch.batch_size,), length >= 2, dtype=torch.bool, device=batch.device)
        return {"source": _frames_to_slots(frame_source, batch.patches_per_frame), "applies": applies}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=False)


@register
class FrameShuffle(Op):
    """Permute the contents of a random fraction of the video frames among themselves.

    Video, frame-major. ``round(f * num_frames)`` frames (at least 2 when f > 0 and there are 2
    frames) are chosen per sample and their contents permuted among themselves (never left in order),
    each frame moving whole; positions stay in their slots. With ``num_frames == 1`` nothing changes
    (``applies`` False).

    Magnitude → f in [0, 0.5]: docs/GUIDELINES.md says to preserve temporal order in video and cites MERLOT's
    "scramble random i frames"; scrambling a limited share of the frames is the constrained form.
    Params: ``source`` [B, Nv] long.
    """

    name = "frame_shuffle"
    stage = "token"
    modality = "vision"
    parameter = "fraction of the frames shuffled"
    default_range = (0.0, 0.5)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        every_frame = torch.ones(batch.batch_size, batch.num_frames, dtype=torch.bool, device=batch.device)
        frame_source, chosen = _permute_random_subset(generator, every_frame, strength)
        return {"source": _frames_to_slots(frame_source, batch.patches_per_frame),
                "applies": chosen.sum(1) >= 2}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        return _gather_slots(batch, params["source"], active, move_positions=False)
