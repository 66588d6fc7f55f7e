"""Semantics of the masking ops (autoaug/ops/masking.py): text MLM masking and four vision patterns."""

from __future__ import annotations

import math

import pytest
import torch

from autoaug import ops
from autoaug.batch import IGNORE_INDEX, TextVocabulary
from autoaug.errors import BatchValidationError, OpArgumentError
from autoaug.ops.saliency import vision_saliency
from autoaug.synthetic import FIRST_WORD_ID, MASK_ID, example_batch
from conftest import generator

VISION_MASK_OPS = ["vision_random_mask", "vision_block_mask", "vision_grid_mask", "vision_attention_mask"]
# Expected rates and ratios come from each op's documented magnitude map ("Magnitude → ratio in [0, 0.25]"),
# written out, never read back from `op.strength`, so a range that drifts from the docstring fails here.
# Broken variants seen failing (default_range changed): text_mask [0, 0.2], vision_random_mask [0, 0.3],
# vision_grid_mask [0, 0.25], vision_attention_mask [0, 0.3].


def within_binomial(count: int, trials: int, probability: float, sds: float = 4.0) -> bool:
    """|count - n p| <= sds * sqrt(n p (1 - p))."""
    return abs(count - trials * probability) <= sds * math.sqrt(trials * probability * (1 - probability))


def with_some_dropped_and_masked(batch, seed: int = 5):
    """The batch with ~20% of patches dropped and ~20% already masked (disjoint), as earlier ops would."""
    draw = torch.rand(batch.vision_mask.shape, generator=torch.Generator().manual_seed(seed)).to(batch.device)
    return batch.replace(vision_mask=draw >= 0.2, vision_masked=(draw >= 0.2) & (draw < 0.4))


# ------------------------------------------------------------------------------------------ text_mask
def test_text_mask_rate_and_80_10_10_split(device):
    op = ops.get("text_mask")
    batch = example_batch(batch_size=128, text_len=64, vocab_size=1000, device=device)
    params = op.sample_params(batch, 0.6, generator(0))
    out = op.apply(batch, params)
    rate = 0.25 * 0.6  # documented: magnitude -> rate in [0, 0.25] (not read back from op.strength)

    maskable = batch.text_mask & ~batch.text_special
    selected = out.mlm_labels != IGNORE_INDEX
    n, k = int(maskable.sum()), int(selected.sum())
    assert n > 3000
    assert within_binomial(k, n, rate)

    became_mask = selected & (out.text_ids == MASK_ID)
    changed_other = selected & (out.text_ids != MASK_ID) & (out.text_ids != batch.text_ids)
    unchanged = selected & (out.text_ids == batch.text_ids)
    assert within_binomial(int(became_mask.sum()), k, 0.8)
    # A random replacement equals the original with probability 1/(V - 4): count both via params.
    random_ids = params["to_random_id"] & selected
    assert within_binomial(int(random_ids.sum()), k, 0.1)
    assert within_binomial(int((unchanged & ~random_ids).sum()), k, 0.1)
    assert int(changed_other.sum()) <= int(random_ids.sum())
    assert torch.equal(out.text_ids[random_ids], params["random_ids"][random_ids].to(out.text_ids.dtype))
    assert (out.text_ids[random_ids] >= FIRST_WORD_ID).all()  # never a special id
    # Nothing outside the selection changed.
    assert torch.equal(out.text_ids[~selected], batch.text_ids[~selected])
    assert torch.equal(out.text_mask, batch.text_mask) and torch.equal(out.vision, batch.vision)


def test_text_mask_labels_hold_original_ids(device):
    op = ops.get("text_mask")
    batch = example_batch(batch_size=16, text_len=32, device=device)
    out = op(batch, 1.0, generator(1))
    selected = out.mlm_labels != IGNORE_INDEX
    assert selected.any()
    assert out.mlm_labels.dtype == torch.long
    assert torch.equal(out.mlm_labels[selected], batch.text_ids[selected].long())
    assert (out.mlm_labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(out.augmented, selected.any(1))


def test_text_mask_never_touches_special_padding_or_dropped(device):
    op = ops.get("text_mask", magnitude_range=(0.0, 1.0))  # rate 1: every maskable token is selected
    batch = example_batch(batch_size=16, text_len=20, device=device)
    dropped = torch.zeros_like(batch.text_mask)
    dropped[:, 1:4] = True  # first words dropped by an earlier op (not special)
    batch = batch.replace(text_mask=batch.text_mask & ~dropped)
    out = op(batch, 1.0, generator(2))
    protected = batch.text_special | ~batch.text_mask
    assert torch.equal(out.text_ids[protected], batch.text_ids[protected])
    assert (out.mlm_labels[protected] == IGNORE_INDEX).all()
    assert torch.equal(out.mlm_labels != IGNORE_INDEX, batch.text_mask & ~batch.text_special)


def test_text_mask_merges_with_existing_labels(device):
    op = ops.get("text_mask", magnitude_range=(0.0, 1.0))
    batch = example_batch(batch_size=8, text_len=16, device=device)
    earlier = torch.zeros_like(batch.text_mask)
    earlier[:, 1] = True  # an earlier MLM pass labelled position 1 and replaced it by [MASK]
    labels = torch.where(earlier, batch.text_ids, torch.full_like(batch.text_ids, IGNORE_INDEX))
    batch = batch.replace(mlm_labels=labels, text_ids=torch.where(earlier, MASK_ID, batch.text_ids))
    out = op(batch, 1.0, generator(3))
    assert torch.equal(out.mlm_labels[earlier], labels[earlier])  # kept, not overwritten by [MASK]
    assert torch.equal(out.text_ids[earlier], batch.text_ids[earlier])
    newly = (out.mlm_labels != IGNORE_INDEX) & ~earlier
    assert torch.equal(newly, batch.text_mask & ~batch.text_special & ~earlier)


def test_text_mask_random_ids_are_uniform_over_ordinary_ids():
    vocab = TextVocabulary(vocab_size=20, pad_id=0, mask_id=7, special_ids=(0, 1, 2, 5, 19))
    op = ops.get("text_mask", magnitude_range=(0.0, 1.0), mask_token_fraction=0.0, random_token_fraction=1.0)
    batch = example_batch(batch_size=400, text_len=64, vocab_size=20).replace(vocab=vocab)
    params = op.sample_params(batch, 1.0, generator(4))
    ids = op.apply(batch, params).text_ids[params["select"]]
    ordinary = [i for i in range(20) if i not in (0, 1, 2, 5, 7, 19)]
    counts = torch.bincount(ids, minlength=20)
    assert counts[[0, 1, 2, 5, 7, 19]].sum() == 0
    for i in ordinary:
        assert within_binomial(int(counts[i]), ids.numel(), 1 / len(ordinary)), (i, counts)


def test_text_mask_respects_alignment(device):
    op = ops.get("text_mask", magnitude_range=(0.0, 1.0))
    batch = example_batch(batch_size=8, text_len=16, with_alignment=True, device=device)
    batch = batch.replace(vision_masked=torch.ones_like(batch.vision_mask))  # every patch erased
    out = op(batch, 1.0, generator(5))
    aligned = batch.alignment.any(2)
    selected = out.mlm_labels != IGNORE_INDEX
    assert aligned.any() and not (selected & aligned).any()
    assert torch.equal(selected, batch.text_mask & ~batch.text_special & ~aligned)


def test_text_mask_needs_an_ordinary_id():
    vocab = TextVocabulary(vocab_size=4, pad_id=0, mask_id=3, special_ids=(1, 2))
    batch = example_batch(vocab_size=8).replace(vocab=vocab)
    with pytest.raises(BatchValidationError, match="'text_mask' needs a vocabulary with at least one"):
        ops.get("text_mask")(batch, 0.5, generator(0))


def test_text_mask_needs_vocab():
    op = ops.get("text_mask")
    batch = example_batch().replace(vocab=None)
    with pytest.raises(BatchValidationError, match="'text_mask' needs MultimodalBatch.vocab"):
        op(batch, 0.5, generator(0))


@pytest.mark.parametrize("options, option", [
    ({"mask_token_fraction": 1.2}, "mask_token_fraction"),
    ({"random_token_fraction": -0.1}, "random_token_fraction"),
    ({"mask_token_fraction": "0.8"}, "mask_token_fraction"),
    ({"mask_token_fraction": 0.8, "random_token_fraction": 0.3}, "mask_token_fraction"),
])
def test_text_mask_bad_options(options, option):
    with pytest.raises(OpArgumentError, match=rf"text_mask: option.*'{option}'"):
        ops.get("text_mask", **options)


# ------------------------------------------------------------------------------------------ shared vision
@pytest.mark.parametrize("name", VISION_MASK_OPS)
def test_vision_masking_semantics(name, device):
    """Masked = content is fill and flagged; dropped and already masked patches untouched; rest identical."""
    op = ops.get(name, fill=-3.5)
    batch = example_batch(batch_size=16, grid=8, with_saliency=True, device=device)
    batch = with_some_dropped_and_masked(batch)
    out = op(batch, 1.0, generator(6))
    newly = out.vision_masked & ~batch.vision_masked
    assert newly.any()
    assert not (newly & ~batch.vision_mask).any()
    assert torch.equal(out.vision_masked & batch.vision_masked, batch.vision_masked)
    assert (out.vision[newly] == -3.5).all()
    assert torch.equal(out.vision[~newly], batch.vision[~newly])
    for field in ("vision_mask", "vision_positions", "text_ids", "text_mask", "labels", "saliency"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field
    assert out.mlm_labels is None
    assert torch.equal(out.augmented, newly.any(1))


@pytest.mark.parametrize("name", VISION_MASK_OPS)
def test_vision_masking_respects_alignment(name, device):
    op = ops.get(name)
    batch = example_batch(batch_size=16, grid=4, with_alignment=True, with_saliency=True, device=device)
    words = batch.text_mask & ~batch.text_special
    labels = torch.where(words, batch.text_ids, torch.full_like(batch.text_ids, IGNORE_INDEX))
    batch = batch.replace(mlm_labels=labels)  # every word already MLM-masked
    aligned = batch.alignment.any(1)
    out = op(batch, 1.0, generator(7))
    assert aligned.any() and not (out.vision_masked & aligned).any()


@pytest.mark.parametrize("name", VISION_MASK_OPS)
def test_vision_masking_bad_fill(name):
    with pytest.raises(OpArgumentError, match=rf"{name}: option 'fill' must be a finite number"):
        ops.get(name, fill=float("nan"))


# ------------------------------------------------------------------------------------------ random
def test_vision_random_mask_exact_counts(device):
    op = ops.get("vision_random_mask")
    batch = with_some_dropped_and_masked(example_batch(batch_size=32, grid=8, device=device))
    for magnitude in (0.2, 0.6, 1.0):
        params = op.sample_params(batch, magnitude, generator(8))
        out = op.apply(batch, params)
        newly = out.vision_masked & ~batch.vision_masked
        kept = batch.vision_mask.sum(1).double()
        expected = torch.round(kept * 0.25 * magnitude).long()  # documented: ratio in [0, 0.25]
        assert torch.equal(newly.sum(1), expected)
        assert torch.equal(params["count"], expected)


def test_vision_random_mask_is_uniform_over_slots():
    op = ops.get("vision_random_mask")
    batch = example_batch(batch_size=4000, grid=4, patch_dim=2, text_len=3)
    newly = op(batch, 1.0, generator(9)).vision_masked  # 4 of 16 patches per sample
    assert (newly.sum(1) == 4).all()
    for count in newly.sum(0).tolist():
        assert within_binomial(count, batch.batch_size, 4 / 16)


# ------------------------------------------------------------------------------------------ block
def test_vision_block_mask_is_one_rectangle_of_the_target_area(device):
    op = ops.get("vision_block_mask")
    grid = 14
    batch = example_batch(batch_size=256, grid=grid, patch_dim=2, device=device)
    params = op.sample_params(batch, 1.0, generator(10))
    out = op.apply(batch, params)
    top, left, height, width = (params[k].cpu() for k in ("top", "left", "height", "width"))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= grid).all() and (left + width <= grid).all()
    target = 0.25 * grid * grid
    # height = round(sqrt(area * aspect)), width = round(area / height): area is off by <= height / 2.
    assert ((height * width - target).abs() <= height / 2 + 1e-9).all()
    aspect = height / width
    assert (aspect >= 0.5 * 0.7).all() and (aspect <= 2.0 / 0.7).all()
    assert aspect.min() < 0.8 and aspect.max() > 1.25  # the aspect ratio does vary
    position = batch.vision_positions.cpu()
    expected = ((position[..., 0] >= top[:, None]) & (position[..., 0] < (top + height)[:, None])
                & (position[..., 1] >= left[:, None]) & (position[..., 1] < (left + width)[:, None]))
    assert torch.equal(out.vision_masked.cpu(), expected)
    assert len(set(top.tolist())) > 3 and len(set(left.tolist())) > 3


def test_vision_block_mask_below_one_patch_masks_one_patch_with_probability_area():
    """Continuity at magnitude 0 (issue 24 item 10): a target area of a patches (a < 1) masks a 1 x 1
    block with probability a, so the expected masked area stays a and vanishes with the magnitude.
    Catches the old rule (block clamped to 1 x 1 on every sample: 4000 of 4000 masked at 1e-4)."""
    op = ops.get("vision_block_mask")
    samples, patches = 4000, 16
    batch = example_batch(batch_size=samples, grid=4, patch_dim=2, text_len=3)
    assert batch.vision_mask.all()
    area = 0.3  # patches; the documented map: area ratio = 0.25 * magnitude of the 16-patch grid
    params = op.sample_params(batch, area / patches / 0.25, generator(17))
    masked = op.apply(batch, params).vision_masked
    hit = masked.any(1)
    assert torch.equal(params["active"], hit)
    assert (masked.sum(1)[hit] == 1).all()  # the rectangle is 1 x 1
    assert within_binomial(int(hit.sum()), samples, area)  # 4 SD = 116 of the expected 1200
    tiny = op.sample_params(batch, 1e-4, generator(18))  # 4e-4 patches: 1.6 samples expected
    assert int(tiny["active"].sum()) <= 1.6 + 4 * math.sqrt(1.6)


def test_vision_block_mask_follows_positions_not_slots():
    op = ops.get("vision_block_mask")
    batch = example_batch(batch_size=8, grid=6, patch_dim=2)
    permutation = torch.randperm(36, generator=torch.Generator().manual_seed(0))
    scrambled = batch.replace(vision=batch.vision[:, permutation],
                              vision_positions=batch.vision_positions[:, permutation])
    plain, moved = op(batch, 1.0, generator(11)), op(scrambled, 1.0, generator(11))
    assert torch.equal(moved.vision_masked, plain.vision_masked[:, permutation])


def test_vision_block_mask_covers_the_same_rectangle_in_every_frame():
    op = ops.get("vision_block_mask")
    batch = example_batch(batch_size=8, grid=6, patch_dim=2, num_frames=3)
    frames = op(batch, 1.0, generator(12)).vision_masked.view(8, 3, 36)
    assert frames.any()
    assert torch.equal(frames[:, 0], frames[:, 1]) and torch.equal(frames[:, 0], frames[:, 2])


@pytest.mark.parametrize("aspect", [(2.0, 0.5), (0.0, 1.0), (1.0,), "wide"])
def test_vision_block_mask_bad_aspect_ratio(aspect):
    with pytest.raises(OpArgumentError, match="vision_block_mask: option 'aspect_ratio' must be"):
        ops.get("vision_block_mask", aspect_ratio=aspect)


# ------------------------------------------------------------------------------------------ grid
def test_vision_grid_mask_matches_the_lattice(device):
    op = ops.get("vision_grid_mask")
    batch = example_batch(batch_size=600, grid=12, patch_dim=2, text_len=3, device=device)
    params = op.sample_params(batch, 0.8, generator(13))
    out = op.apply(batch, params)
    period, oy, ox, side = (params[k].cpu() for k in ("period", "offset_row", "offset_col", "size"))
    ratio = 0.5 * 0.8  # documented: target fraction in [0, 0.5]
    assert torch.equal(side, torch.round(period.double() * math.sqrt(ratio)).long().clamp(max=period - 1))
    for d in (2, 3, 4):  # each period drawn with probability 1/3
        assert within_binomial(int((period == d).sum()), batch.batch_size, 1 / 3)
    assert ((oy >= 0) & (oy < period) & (ox >= 0) & (ox < period)).all()
    row, col = batch.vision_positions[..., 0].cpu(), batch.vision_positions[..., 1].cpu()
    for b in range(0, batch.batch_size, 37):  # an independent per-sample reference
        d, s = int(period[b]), int(side[b])
        expected = [((int(r) + int(oy[b])) % d < s) and ((int(c) + int(ox[b])) % d < s)
                    for r, c in zip(row[b], col[b])]
        assert out.vision_masked[b].cpu().tolist() == expected
    # 12 is a multiple of every period, so each sample masks exactly (s / d)^2 of its grid.
    assert torch.equal(out.vision_masked.sum(1).cpu(), (144 // period**2) * side**2)


def test_vision_grid_mask_quantisation_and_zero():
    op = ops.get("vision_grid_mask", periods=[2])
    batch = example_batch(batch_size=8, grid=4)
    # ratio 0.03 < 1/16: s = round(2 * sqrt(0.03)) = 0, nothing is masked and nothing is augmented.
    out = op(batch, 0.03 / 0.5, generator(14))
    assert not out.vision_masked.any() and not out.augmented.any()
    assert torch.equal(out.vision, batch.vision)
    full = op(batch, 1.0, generator(14)).vision_masked
    assert (full.sum(1) == 4).all()  # s = 1 out of d = 2 on a 4 x 4 grid: a quarter
    # Past the default range the block side is capped at d - 1, so some of every cell stays visible.
    capped = ops.get("vision_grid_mask", magnitude_range=(0.0, 1.0), periods=[3])
    masked = capped(example_batch(batch_size=8, grid=6), 1.0, generator(14)).vision_masked
    assert (masked.sum(1) == 16).all()  # s = 2 of d = 3 on a 6 x 6 grid: 4 cells x 4 patches


@pytest.mark.parametrize("periods", [[], [1], [2, 2.5], (True,), 3])
def test_vision_grid_mask_bad_periods(periods):
    with pytest.raises(OpArgumentError, match="vision_grid_mask: option 'periods' must be"):
        ops.get("vision_grid_mask", periods=periods)


# ------------------------------------------------------------------------------------------ attention
def test_vision_attention_mask_takes_the_most_salient_with_saliency(device):
    op = ops.get("vision_attention_mask")
    batch = example_batch(batch_size=32, grid=8, with_saliency=True, device=device)
    batch = with_some_dropped_and_masked(batch)
    batch = batch.replace(saliency=batch.saliency.masked_fill(~batch.vision_mask, 1e6))  # dropped: ignored
    out = op(batch, 0.8, generator(15))
    newly = out.vision_masked & ~batch.vision_masked
    expected_count = torch.round(batch.vision_mask.sum(1).double() * 0.25 * 0.8).long()  # ratio in [0, 0.25]
    assert torch.equal(newly.sum(1), expected_count)
    candidates = batch.vision_mask & ~batch.vision_masked
    for b in range(batch.batch_size):
        chosen = batch.saliency[b][newly[b]]
        passed = batch.saliency[b][candidates[b] & ~newly[b]]
        assert chosen.numel() and chosen.min() > passed.max()


def test_vision_attention_mask_uses_the_proxy_without_saliency(device):
    op = ops.get("vision_attention_mask")
    batch = example_batch(batch_size=8, grid=4, device=device)
    assert batch.saliency is None
    standouts = torch.zeros_like(batch.vision_mask)
    standouts[:, [2, 9, 13, 14]] = True  # 4 = round(0.25 * 16) patches far from the mean patch
    batch = batch.replace(vision=torch.where(standouts.unsqueeze(-1), batch.vision * 10, batch.vision))
    out = op(batch, 1.0, generator(16))
    assert torch.equal(out.vision_masked, standouts)
    # The same choice as the shared saliency helper's top-k.
    top = vision_saliency(batch).topk(4, dim=1).indices
    assert torch.equal(out.vision_masked, torch.zeros_like(standouts).scatter(1, top, True))
