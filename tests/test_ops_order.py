"""Order ops (autoaug/ops/order.py): what moves, what stays, and the permutation they draw.

Every vision token is tagged with its input slot in ``vision[..., 0]``, so after an op the tag at
output slot ``j`` says which input slot it came from; every other per-slot field must have moved the
same way (or, for positions under the content-moving ops, not at all).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from autoaug import ops
from autoaug.errors import BatchValidationError, OpArgumentError
from autoaug.ops.order import _permute_random_subset
from autoaug.synthetic import example_batch
from conftest import generator

SLOT_OPS = ["vision_permute_order", "vision_scramble_positions", "vision_block_shuffle",
            "vision_reversal", "frame_reversal", "frame_shuffle"]
ORDER_ONLY = {"vision_permute_order", "vision_reversal"}  # positions travel with the tokens


# ---------------------------------------------------------------------- helpers
def tagged_batch(device, batch_size=8, grid=4, num_frames=1, drop_rate=0.0, seed=0, **options):
    """A batch whose tokens carry their slot index in ``vision[..., 0]``, with saliency and alignment."""
    batch = example_batch(batch_size=batch_size, grid=grid, patch_dim=6, text_len=10,
                          num_frames=num_frames, with_saliency=True, with_alignment=True,
                          seed=seed, **options)
    tokens = batch.num_vision_tokens
    vision = batch.vision.clone()
    vision[..., 0] = torch.arange(tokens, dtype=vision.dtype)
    draw = torch.Generator().manual_seed(seed + 1)
    keep = torch.rand(batch_size, tokens, generator=draw) >= drop_rate
    masked = (torch.rand(batch_size, tokens, generator=draw) < 0.2) & keep
    return batch.replace(vision=vision, vision_mask=keep, vision_masked=masked).to(device)


def origin(out):
    """``[B, Nv]`` long: the input slot each output slot's token came from."""
    return out.vision[..., 0].round().long()


def take(tensor, index):
    """``tensor[b, index[b, j], ...]`` for ``[B, Nv, ...]`` tensors."""
    rows = torch.arange(tensor.shape[0], device=tensor.device).unsqueeze(1)
    return tensor[rows, index]


def assert_is_slot_permutation(source, tokens):
    """Each output slot holds exactly one input slot's token, and every input slot is used once."""
    expected = torch.arange(tokens, device=source.device).expand_as(source)
    assert torch.equal(source.sort(1).values, expected)


def assert_fields_follow(batch, out, move_positions):
    """Every per-slot field moved with its token; text, labels and positions as the op promises."""
    src = origin(out)
    assert_is_slot_permutation(src, batch.num_vision_tokens)
    assert torch.equal(out.vision, take(batch.vision, src))
    assert torch.equal(out.vision_mask, take(batch.vision_mask, src))
    assert torch.equal(out.vision_masked, take(batch.vision_masked, src))
    assert torch.equal(out.saliency, take(batch.saliency, src))
    assert torch.equal(out.alignment, batch.alignment.gather(
        2, src.unsqueeze(1).expand(-1, batch.num_text_tokens, -1)))
    expected_positions = take(batch.vision_positions, src) if move_positions else batch.vision_positions
    assert torch.equal(out.vision_positions, expected_positions)
    for name in ("text_ids", "text_mask", "text_special", "labels", "vision_first"):
        assert torch.equal(getattr(out, name), getattr(batch, name)), name
    return src


def binomial_bound(count, trials, probability):
    """|count - n p| <= 4 binomial standard deviations."""
    spread = 4 * math.sqrt(trials * probability * (1 - probability))
    assert abs(count - trials * probability) <= spread, (count, trials * probability, spread)


# Each op's documented magnitude map ("Magnitude → f in [0, high]" in its docstring), written out here
# rather than read back from `op.strength`, so an op whose range drifted from its documentation fails
# these tests instead of moving their targets along with it. Broken variants seen failing (the op's
# default_range changed): scramble [0, 1] or [0, 0.45], permute [0, 0.5], modality_order_swap [0, 1]
# (rate 0.6 for 0.3), frame_shuffle [0, 1].
DOCUMENTED_HIGH = {"vision_permute_order": 1.0, "vision_scramble_positions": 0.5, "frame_shuffle": 0.5,
                   "modality_order_swap": 0.5}


def documented(name, magnitude):
    """The fraction (or probability) the docstring of op ``name`` promises at ``magnitude``."""
    return DOCUMENTED_HIGH[name] * magnitude


def expected_count(fraction, available):
    """round(f * n), at least 2 when f > 0, at most n (the documented rule)."""
    count = math.floor(available * fraction + 0.5)
    if fraction > 0:
        count = max(count, 2)
    return min(count, available)


# ---------------------------------------------------------------------- the shared subset permutation
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.5, 1.0])
def test_subset_permutation_is_exact(fraction, device):
    eligible = torch.rand(300, 20, generator=torch.Generator().manual_seed(4)) < 0.6
    eligible[:5] = False          # rows with nothing eligible
    eligible[5:10, 1:] = False    # rows with one eligible item
    eligible = eligible.to(device)
    source, chosen = _permute_random_subset(generator(0, "cpu"), eligible, fraction)
    assert_is_slot_permutation(source, 20)
    identity = torch.arange(20, device=device).expand_as(source)
    counts = torch.tensor([expected_count(fraction, int(n)) for n in eligible.sum(1)], device=device)
    assert torch.equal(chosen.sum(1), counts)
    assert not (chosen & ~eligible).any()
    assert torch.equal(source[~chosen], identity[~chosen])          # unchosen items stay
    assert torch.equal(chosen.gather(1, source), chosen)             # chosen take from chosen only
    moved = (source != identity).any(1)
    assert torch.equal(moved, counts >= 2)                          # >= 2 chosen always changes order


def test_subset_permutation_is_uniform_with_the_identity_redrawn():
    """Three chosen items: the 4 non-cyclic orders have p = 1/6 each, the one-step cycle 1/6 + 1/6
    (the identity's share, since the identity is redrawn as that cycle) and the identity 0."""
    rows = 6000
    source, _ = _permute_random_subset(generator(5), torch.ones(rows, 3, dtype=torch.bool), 1.0)
    codes = source[:, 0] * 9 + source[:, 1] * 3 + source[:, 2]
    for perm in itertools.permutations(range(3)):
        count = int((codes == perm[0] * 9 + perm[1] * 3 + perm[2]).sum())
        if perm == (0, 1, 2):
            assert count == 0
        else:
            binomial_bound(count, rows, 2 / 6 if perm == (1, 2, 0) else 1 / 6)


def test_subset_selection_rate_is_the_fraction():
    """Each item of a full row is chosen with probability k / n (uniform choice of k of n)."""
    rows, length, fraction = 4000, 10, 0.3
    _, chosen = _permute_random_subset(generator(6), torch.ones(rows, length, dtype=torch.bool), fraction)
    probability = expected_count(fraction, length) / length
    for column in range(length):
        binomial_bound(int(chosen[:, column].sum()), rows, probability)


# ---------------------------------------------------------------------- vision_permute_order
@pytest.mark.parametrize("magnitude", [0.2, 1.0])
def test_permute_order_moves_tokens_with_their_positions(magnitude, device):
    op = ops.get("vision_permute_order")
    batch = tagged_batch(device, drop_rate=0.25)
    params = op.sample_params(batch, magnitude, generator(0))
    out = op.apply(batch, params)
    src = assert_fields_follow(batch, out, move_positions=True)
    identity = torch.arange(batch.num_vision_tokens, device=device).expand_as(src)
    moved = src != identity
    assert not (moved & ~batch.vision_mask).any()                    # dropped slots stay put
    assert torch.equal(batch.vision_mask.gather(1, src), batch.vision_mask)  # kept <-> kept only
    kept = batch.vision_mask.sum(1)
    limit = torch.tensor([expected_count(documented(op.name, magnitude), int(n)) for n in kept], device=device)
    assert (moved.sum(1) <= limit).all() and (moved.sum(1) >= 2).all()
    assert torch.equal(params["source"], src)
    assert out.augmented.all()


def test_permute_order_stays_inside_each_frame(device):
    op = ops.get("vision_permute_order")
    batch = tagged_batch(device, grid=3, num_frames=3)
    src = assert_fields_follow(batch, op(batch, 1.0, generator(2)), move_positions=True)
    slots = torch.arange(batch.num_vision_tokens, device=device)
    assert torch.equal(src // 9, (slots // 9).expand_as(src))
    assert (src != slots).view(8, 3, 9).any(2).all()                 # every frame reordered


# ---------------------------------------------------------------------- vision_scramble_positions
@pytest.mark.parametrize("magnitude", [0.3, 1.0])
def test_scramble_moves_content_to_other_positions(magnitude, device):
    op = ops.get("vision_scramble_positions")
    batch = tagged_batch(device, drop_rate=0.2)
    out = op(batch, magnitude, generator(1))
    src = assert_fields_follow(batch, out, move_positions=False)
    assert torch.equal(out.vision.sort(1).values, batch.vision.sort(1).values)  # same multiset
    identity = torch.arange(batch.num_vision_tokens, device=device).expand_as(src)
    moved = src != identity
    # each moved content now sits at a different grid position than it had
    assert (take(batch.vision_positions, src) != batch.vision_positions).any(-1)[moved].all()
    assert torch.equal(out.vision[~moved], batch.vision[~moved])  # unselected tokens untouched
    assert not (moved & ~batch.vision_mask).any()
    kept = batch.vision_mask.sum(1)
    limit = torch.tensor([expected_count(documented(op.name, magnitude), int(n)) for n in kept], device=device)
    assert (moved.sum(1) <= limit).all() and (moved.sum(1) >= 2).all()


@pytest.mark.parametrize("name, magnitude", [("vision_scramble_positions", 1.0), ("vision_permute_order", 0.5)])
def test_patch_moves_reach_every_kept_slot_at_the_documented_rate(name, magnitude):
    """Over many samples every slot moves at the rate the documented fraction gives (all 16 kept;
    k = 8 chosen per sample in both cases). The rate comes from the docstring's range, not from
    `op.strength`: broken variants seen failing here are scramble's range set to [0, 1] (k = 16) or
    [0, 0.45] (k = 7, P(moved) 0.375 instead of 0.4375: 125 of 2000 off, 4 SD = 89), and permute's
    range set to [0, 0.5] (k = 4)."""
    op = ops.get(name)
    batch = tagged_batch("cpu", batch_size=2000, grid=4)
    moved = origin(op(batch, magnitude, generator(8))) != torch.arange(16)
    # A slot moves when chosen (k / 16) and not a fixed point of the permutation of the k chosen.
    # A uniform permutation has 1 fixed point on average; the identity (p = 1/k!, k fixed points) is
    # redrawn as a cycle (none), so E[fixed] = 1 - k / k! and P(moved) = (k - E[fixed]) / 16.
    k = expected_count(documented(name, magnitude), 16)
    assert k == 8
    probability = (k - (1 - k / math.factorial(k))) / 16
    for slot in range(16):
        binomial_bound(int(moved[:, slot].sum()), 2000, probability)


# ---------------------------------------------------------------------- vision_block_shuffle
def block_check(batch, src, block_size):
    """Each moved slot takes content from the same within-block cell of another full block, whole
    blocks move together, and slots outside full blocks stay put."""
    positions = batch.vision_positions.long()
    rows, cols = batch.grid_shape
    full_rows, full_cols = rows // block_size * block_size, cols // block_size * block_size
    in_full = (positions[..., 0] < full_rows) & (positions[..., 1] < full_cols)
    came_from = take(positions, src)
    assert torch.equal(came_from % block_size, positions % block_size)   # within-block cell kept
    slots = torch.arange(batch.num_vision_tokens, device=src.device).expand_as(src)
    assert torch.equal(src[~in_full], slots[~in_full])                   # partial edge blocks stay
    block_shift = came_from // block_size - positions // block_size      # [B, Nv, 2]
    block_id = (positions[..., 0] // block_size) * cols + positions[..., 1] // block_size
    for b in range(src.shape[0]):  # test-side check: all cells of a block share one source block
        for block in block_id[b][in_full[b]].unique():
            cells = block_shift[b][block_id[b] == block]
            assert (cells == cells[0]).all()
    moved_blocks = (block_shift != 0).any(-1) & in_full
    return moved_blocks.sum(1) // (block_size * block_size)


@pytest.mark.parametrize("grid,block_size", [(6, 2), (5, 2), (7, 3)])
def test_block_shuffle_moves_whole_blocks(grid, block_size, device):
    op = ops.get("vision_block_shuffle", block_size=block_size)
    batch = tagged_batch(device, grid=grid, drop_rate=0.1)
    out = op(batch, 1.0, generator(3))
    src = assert_fields_follow(batch, out, move_positions=False)
    moved_blocks = block_check(batch, src, block_size)
    full_blocks = (grid // block_size) ** 2
    assert (moved_blocks >= 2).all() and (moved_blocks <= full_blocks).all()


def test_block_shuffle_fraction_and_any_slot_layout(device):
    """Blocks come from positions, not slot order: shuffle the slot layout first, same guarantees."""
    op = ops.get("vision_block_shuffle")
    batch = tagged_batch(device, grid=6)
    layout = torch.rand(8, 36, generator=torch.Generator().manual_seed(9)).argsort(1).to(device)
    shuffled = batch.replace(vision_positions=take(batch.vision_positions, layout))
    out = op(shuffled, 0.5, generator(4))
    moved_blocks = block_check(shuffled, assert_fields_follow(shuffled, out, False), 2)
    assert (moved_blocks >= 2).all() and (moved_blocks <= expected_count(0.5, 9)).all()


def test_block_shuffle_without_a_full_block_changes_nothing():
    op = ops.get("vision_block_shuffle", block_size=3)
    batch = tagged_batch("cpu", grid=2)
    out = op(batch, 1.0, generator(0))
    assert torch.equal(out.vision, batch.vision) and not out.augmented.any()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_block_shuffle_bad_block_size(bad):
    with pytest.raises(OpArgumentError, match=r"vision_block_shuffle: block_size must be an int >= 1"):
        ops.get("vision_block_shuffle", block_size=bad)


# ---------------------------------------------------------------------- vision_reversal
def test_full_reversal_reverses_the_whole_sequence(device):
    op = ops.get("vision_reversal")
    batch = tagged_batch(device, drop_rate=0.2)
    src = assert_fields_follow(batch, op(batch, 1.0, generator(0)), move_positions=True)
    assert torch.equal(src, torch.arange(15, -1, -1, device=device).expand_as(src))


def test_partial_reversal_is_one_contiguous_span_with_a_uniform_start(device):
    op = ops.get("vision_reversal", magnitude_range=(0.0, 0.5))
    samples, tokens = 1800, 16
    batch = tagged_batch(device, batch_size=samples)
    src = assert_fields_follow(batch, op(batch, 1.0, generator(5)), move_positions=True)
    length = expected_count(0.5, tokens)
    slots = torch.arange(tokens, device=device)
    start = (src != slots).int().argmax(1, keepdim=True)     # the span's ends always swap
    inside = (slots >= start) & (slots < start + length)
    assert torch.equal(src, torch.where(inside, 2 * start + length - 1 - slots, slots))
    for value in range(tokens - length + 1):
        binomial_bound(int((start == value).sum()), samples, 1 / (tokens - length + 1))


def test_reversal_of_video_stays_inside_frames(device):
    op = ops.get("vision_reversal")
    batch = tagged_batch(device, grid=2, num_frames=3)
    src = assert_fields_follow(batch, op(batch, 1.0, generator(0)), move_positions=True)
    slots = torch.arange(12, device=device)
    assert torch.equal(src, ((slots // 4) * 4 + 3 - slots % 4).expand_as(src))


# ---------------------------------------------------------------------- modality_order_swap
def test_modality_order_swap_rate_and_semantics(device):
    op = ops.get("modality_order_swap")
    batch = tagged_batch(device, batch_size=4000, grid=2)
    batch = batch.replace(vision_first=torch.arange(4000, device=device) % 3 == 0)
    magnitude = 0.6
    out = op(batch, magnitude, generator(7))
    flipped = out.vision_first != batch.vision_first
    binomial_bound(int(flipped.sum()), 4000, documented(op.name, magnitude))  # 0.3
    assert torch.equal(out.augmented, flipped)
    for name, tensor in batch.tensors().items():
        if name not in ("vision_first", "augmented"):
            assert torch.equal(getattr(out, name), tensor), name


# ---------------------------------------------------------------------- frame ops
def frame_map(src, patches_per_frame):
    """``[B, F]`` source frame of each output frame, after checking frames move whole."""
    batch, tokens = src.shape
    frames = src.view(batch, tokens // patches_per_frame, patches_per_frame)
    first = frames[..., :1]
    assert torch.equal(frames - first, torch.arange(patches_per_frame, device=src.device).expand_as(frames))
    assert (first % patches_per_frame == 0).all()
    return first.squeeze(2) // patches_per_frame


def test_frame_reversal_whole_clip(device):
    op = ops.get("frame_reversal")
    batch = tagged_batch(device, grid=2, num_frames=5, drop_rate=0.2)
    src = assert_fields_follow(batch, op(batch, 1.0, generator(0)), move_positions=False)
    assert torch.equal(frame_map(src, 4), torch.arange(4, -1, -1, device=device).expand(8, 5))


def test_frame_reversal_partial_span(device):
    op = ops.get("frame_reversal")
    batch = tagged_batch(device, batch_size=600, grid=2, num_frames=6)
    src = assert_fields_follow(batch, op(batch, 0.5, generator(1)), move_positions=False)
    frame_source = frame_map(src, 4)
    length = expected_count(0.5, 6)
    frames = torch.arange(6, device=device)
    start = (frame_source != frames).int().argmax(1, keepdim=True)
    inside = (frames >= start) & (frames < start + length)
    assert torch.equal(frame_source, torch.where(inside, 2 * start + length - 1 - frames, frames))
    for value in range(6 - length + 1):
        binomial_bound(int((start == value).sum()), 600, 1 / (6 - length + 1))


@pytest.mark.parametrize("name", ["frame_reversal", "frame_shuffle"])
def test_frame_ops_on_a_single_frame_change_nothing(name, device):
    op = ops.get(name)
    batch = tagged_batch(device, num_frames=1)
    out = op(batch, 1.0, generator(0))
    for field, tensor in batch.tensors().items():
        assert torch.equal(getattr(out, field), tensor), field
    assert not op.sample_params(batch, 1.0, generator(0))["active"].any()


@pytest.mark.parametrize("magnitude", [0.1, 1.0])
def test_frame_shuffle_permutes_whole_frames(magnitude, device):
    op = ops.get("frame_shuffle")
    batch = tagged_batch(device, grid=2, num_frames=8)
    src = assert_fields_follow(batch, op(batch, magnitude, generator(2)), move_positions=False)
    frame_source = frame_map(src, 4)
    assert_is_slot_permutation(frame_source, 8)
    moved = (frame_source != torch.arange(8, device=device)).sum(1)
    assert (moved >= 2).all() and (moved <= expected_count(documented(op.name, magnitude), 8)).all()


# ---------------------------------------------------------------------- errors and metadata
@pytest.mark.parametrize("name", SLOT_OPS + ["modality_order_swap"])
def test_missing_vision_is_a_clear_error(name):
    batch = example_batch(batch_size=2, image_size=8).replace(
        vision=None, vision_mask=None, vision_masked=None, vision_positions=None)
    with pytest.raises(BatchValidationError, match=rf"op '{name}' needs MultimodalBatch.vision"):
        ops.get(name)(batch, 0.5, generator(0))


@pytest.mark.parametrize("name", SLOT_OPS + ["modality_order_swap"])
def test_metadata_and_range(name):
    cls = ops.op_class(name)
    assert cls.stage == "token" and not cls.mixes_labels
    assert cls.default_range[0] == 0.0 and 0.0 < cls.default_range[1] <= 1.0
    assert cls.modality == ("cross" if name == "modality_order_swap" else "vision")
