"""Semantics of the length ops (autoaug/ops/length.py): what each changes, what it must leave alone.

Counts are checked exactly against floor/ceil of the documented fraction (computed here with exact
rationals), random choices against their distribution (4 standard deviations at a fixed seed).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from autoaug import ops
from autoaug.batch import IGNORE_INDEX
from autoaug.errors import OpArgumentError
from autoaug.ops.alignment import erased_text, erased_vision
from autoaug.ops.saliency import distinctiveness
from autoaug.synthetic import example_batch
from conftest import assert_batches_equal, generator


def assert_within_binomial(successes: int, trials: int, probability: float, sds: float = 4.0) -> None:
    spread = math.sqrt(trials * probability * (1 - probability))
    assert spread >= 3, "too few trials for a meaningful rate test"
    assert abs(successes - trials * probability) <= sds * spread, (successes, trials, probability)


def fraction_of(magnitude: str, high: str = "1/2") -> Fraction:
    """The op's parameter at ``magnitude`` as an exact rational (range [0, high])."""
    return Fraction(magnitude) * Fraction(high)


def predrop_text(batch, seed: int = 5, rate: float = 0.2):
    """Drop some content tokens beforehand, as an earlier op would."""
    noise = torch.rand(batch.text_ids.shape, generator=torch.Generator().manual_seed(seed)).to(batch.device)
    gone = (noise < rate) & ~batch.text_special
    return batch.replace(text_mask=batch.text_mask & ~gone)


def predrop_vision(batch, seed: int = 6, rate: float = 0.2):
    noise = torch.rand(batch.vision_mask.shape, generator=torch.Generator().manual_seed(seed)).to(batch.device)
    return batch.replace(vision_mask=batch.vision_mask & ~(noise < rate))


def unchanged_except(before, after, *changed: str) -> None:
    for name, tensor in before.tensors().items():
        if name not in changed and name != "augmented":
            assert torch.equal(tensor, after.tensors()[name]), f"{name} changed"


def no_aligned_pair_erased_on_both_sides(batch) -> bool:
    both = batch.alignment & erased_text(batch).unsqueeze(2) & erased_vision(batch).unsqueeze(1)
    return not bool(both.any())


# ---------------------------------------------------------------------------- random_truncation
@pytest.mark.parametrize("magnitude", ["1", "3/5"])
def test_random_truncation_cuts_a_prefix_or_suffix_of_the_kept_content(device, magnitude):
    op = ops.get("random_truncation")
    batch = predrop_text(example_batch(batch_size=64, text_len=20, seed=1, device=device))
    params = op.sample_params(batch, float(Fraction(magnitude)), generator(2))
    out = op.apply(batch, params)
    unchanged_except(batch, out, "text_mask")
    fraction = fraction_of(magnitude)
    content = batch.text_content.cpu()
    dropped = (content & ~out.text_mask.cpu())
    assert torch.equal(out.text_mask.cpu() & ~content, batch.text_mask.cpu() & ~content)  # rest untouched
    sides = params["suffix"].cpu()
    for row in range(batch.batch_size):
        positions = content[row].nonzero().flatten().tolist()
        count = math.floor(fraction * len(positions))
        expected = positions[len(positions) - count:] if sides[row] else positions[:count]
        assert dropped[row].nonzero().flatten().tolist() == expected, row
        assert bool(out.augmented[row]) == (count > 0)


def test_random_truncation_draws_each_side_with_equal_chance():
    op = ops.get("random_truncation")
    batch = example_batch(batch_size=2000, grid=2, text_len=8, seed=3)
    suffix = op.sample_params(batch, 1.0, generator(4))["suffix"]
    assert_within_binomial(int(suffix.sum()), batch.batch_size, 0.5)


def test_random_truncation_spares_text_aligned_with_erased_patches(device):
    op = ops.get("random_truncation")
    batch = example_batch(batch_size=64, text_len=16, with_alignment=True, seed=7, device=device)
    batch = batch.replace(vision_mask=torch.zeros_like(batch.vision_mask))  # every patch gone
    out = op(batch, 1.0, generator(0))
    aligned_text = batch.alignment.any(dim=2)
    assert torch.equal(out.text_mask[aligned_text], batch.text_mask[aligned_text])
    assert no_aligned_pair_erased_on_both_sides(out)
    assert not out.augmented.any()  # every content word is aligned: nothing to cut, nothing augmented
    # Without the alignment the same draw would have cut aligned words (so the test can fail).
    unaligned = op(batch.replace(alignment=None), 1.0, generator(0))
    assert not torch.equal(unaligned.text_mask[aligned_text], batch.text_mask[aligned_text])
    # Replaying params drawn before the patches were erased still spares the aligned words.
    params = op.sample_params(batch.replace(vision_mask=torch.ones_like(batch.vision_mask)), 1.0, generator(0))
    assert torch.equal(op.apply(batch, params).text_mask[aligned_text], batch.text_mask[aligned_text])


# ---------------------------------------------------------------------------- saliency_truncation
@pytest.mark.parametrize("magnitude", ["1", "2/5"])
def test_saliency_truncation_drops_the_least_salient_kept_patches(device, magnitude):
    op = ops.get("saliency_truncation")
    batch = predrop_vision(example_batch(batch_size=32, grid=6, with_saliency=True, seed=2, device=device))
    out = op(batch, float(Fraction(magnitude)), generator(0))
    unchanged_except(batch, out, "vision_mask")
    assert not (out.vision_mask & ~batch.vision_mask).any()  # nothing comes back
    dropped = batch.vision_mask & ~out.vision_mask
    kept_before = batch.vision_mask.sum(1).tolist()
    for row, kept in enumerate(kept_before):
        assert int(dropped[row].sum()) == math.floor(fraction_of(magnitude) * kept)
        if dropped[row].any():
            assert batch.saliency[row][dropped[row]].max() <= batch.saliency[row][out.vision_mask[row]].min()


def test_saliency_truncation_uses_the_distinctiveness_proxy_without_saliency(device):
    op = ops.get("saliency_truncation")
    batch = example_batch(batch_size=16, grid=5, seed=4, device=device)
    out = op(batch, 1.0, generator(0))
    proxy = distinctiveness(batch.vision, batch.vision_mask)
    dropped = ~out.vision_mask
    for row in range(batch.batch_size):
        assert int(dropped[row].sum()) == 12  # floor(0.5 * 25)
        assert proxy[row][dropped[row]].max() <= proxy[row][out.vision_mask[row]].min()


def test_saliency_truncation_breaks_ties_by_slot(device):
    op = ops.get("saliency_truncation")
    batch = predrop_vision(example_batch(batch_size=8, grid=4, with_saliency=True, seed=5, device=device))
    batch = batch.replace(saliency=torch.full_like(batch.saliency, 0.25))  # every patch equally salient
    out = op(batch, 1.0, generator(0))
    for row, kept in enumerate(batch.vision_mask.sum(1).tolist()):
        slots = batch.vision_mask[row].nonzero().flatten()
        expected = torch.zeros_like(batch.vision_mask[row])
        expected[slots[: kept // 2]] = True
        assert torch.equal(batch.vision_mask[row] & ~out.vision_mask[row], expected)


def test_saliency_truncation_is_deterministic_given_the_batch():
    op = ops.get("saliency_truncation")
    batch = example_batch(batch_size=8, grid=4, with_saliency=True, seed=5)
    assert_batches_equal(op(batch, 0.8, generator(1)), op(batch, 0.8, generator(99)))


def test_saliency_truncation_keeps_patches_aligned_with_erased_text_and_its_count(device):
    op = ops.get("saliency_truncation")
    batch = example_batch(batch_size=32, grid=6, text_len=10, with_saliency=True, with_alignment=True,
                          seed=6, device=device)
    batch = batch.replace(text_mask=batch.text_mask & batch.text_special)  # all content text dropped
    out = op(batch, 1.0, generator(0))
    protected = batch.alignment.any(dim=1)
    assert out.vision_mask[protected].all()
    assert no_aligned_pair_erased_on_both_sides(out)
    assert torch.equal((~out.vision_mask).sum(1), torch.full((32,), 18, device=device))  # floor(36 / 2)


# ---------------------------------------------------------------------------- vision_token_budget
@pytest.mark.parametrize("magnitude", ["1", "7/10", "1/5"])
def test_vision_token_budget_keeps_exactly_the_budget(device, magnitude):
    op = ops.get("vision_token_budget")
    batch = predrop_vision(example_batch(batch_size=32, grid=7, seed=3, device=device))
    out = op(batch, float(Fraction(magnitude)), generator(0))
    unchanged_except(batch, out, "vision_mask")
    assert not (out.vision_mask & ~batch.vision_mask).any()
    for row, kept in enumerate(batch.vision_mask.sum(1).tolist()):
        assert int(out.vision_mask[row].sum()) == math.ceil((1 - fraction_of(magnitude)) * kept)


def test_vision_token_budget_random_subset_is_uniform_over_slots():
    # Dropped patches landing in the first half of the slots follow a hypergeometric law per sample.
    op = ops.get("vision_token_budget")
    batch = predrop_vision(example_batch(batch_size=512, grid=6, seed=8), rate=0.3)
    out = op(batch, 0.6, generator(1))
    half = batch.num_vision_tokens // 2
    dropped = batch.vision_mask & ~out.vision_mask
    kept = batch.vision_mask.sum(1).double()
    drops = dropped.sum(1).double()
    in_first = batch.vision_mask[:, :half].sum(1).double()
    share = in_first / kept
    mean = (drops * share).sum()
    variance = (drops * share * (1 - share) * (kept - drops) / (kept - 1).clamp(min=1)).sum()
    observed = dropped[:, :half].sum()
    assert variance > 9
    assert abs(float(observed - mean)) <= 4 * math.sqrt(float(variance))
    # Different seeds pick different subsets.
    assert not torch.equal(out.vision_mask, op(batch, 0.6, generator(2)).vision_mask)


@pytest.mark.parametrize("magnitude", [1.0, 0.5, 0.2])
def test_vision_token_budget_grid_keeps_an_evenly_spaced_sub_grid(device, magnitude):
    op = ops.get("vision_token_budget", mode="grid")
    batch = example_batch(batch_size=16, grid=14, seed=2, device=device)
    out = op(batch, magnitude, generator(3))
    unchanged_except(batch, out, "vision_mask")
    budget = math.ceil((1 - 0.5 * magnitude) * 196)
    for row in range(batch.batch_size):
        positions = batch.vision_positions[row][out.vision_mask[row]].cpu()
        rows, cols = positions[:, 0].unique(), positions[:, 1].unique()
        assert len(positions) == len(rows) * len(cols)  # a product set: a sub-grid
        assert abs(len(positions) - budget) <= 0.05 * budget
        for axis in (rows, cols):
            gaps = axis.diff()
            assert gaps.numel() == 0 or int(gaps.max() - gaps.min()) <= 1  # evenly spaced


def test_vision_token_budget_grid_phase_varies_and_respects_alignment():
    op = ops.get("vision_token_budget", mode="grid")
    batch = example_batch(batch_size=64, grid=8, text_len=10, with_alignment=True, seed=9)
    batch = batch.replace(text_mask=batch.text_mask & batch.text_special)
    out = op(batch, 1.0, generator(0))
    assert out.vision_mask[batch.alignment.any(dim=1)].all()
    assert no_aligned_pair_erased_on_both_sides(out)
    plain = op(batch.replace(alignment=None), 1.0, generator(0))
    assert len({tuple(row.tolist()) for row in plain.vision_mask}) > 1  # the phase differs per sample


def test_vision_token_budget_random_keeps_the_budget_exact_around_protected_patches(device):
    op = ops.get("vision_token_budget")
    batch = example_batch(batch_size=64, grid=8, text_len=10, with_alignment=True, seed=9, device=device)
    batch = batch.replace(text_mask=batch.text_mask & batch.text_special)
    out = op(batch, 1.0, generator(0))
    assert out.vision_mask[batch.alignment.any(dim=1)].all()
    assert no_aligned_pair_erased_on_both_sides(out)
    assert torch.equal(out.vision_mask.sum(1), torch.full((64,), 32, device=device))  # ceil(64 / 2)


def test_vision_token_budget_rejects_unknown_mode():
    with pytest.raises(OpArgumentError, match=r"vision_token_budget: option mode must be one of 'random', 'grid', got 'blocks'"):
        ops.get("vision_token_budget", mode="blocks")


# ---------------------------------------------------------------------------- padding_side
def text_batch_with_everything(device, batch_size=32, text_len=12, seed=0):
    batch = example_batch(batch_size=batch_size, text_len=text_len, embed_dim=8, with_alignment=True,
                          seed=seed, device=device)
    targets = torch.randint(4, 100, batch.text_ids.shape, generator=torch.Generator().manual_seed(seed))
    chosen = torch.rand(batch.text_ids.shape, generator=torch.Generator().manual_seed(seed + 1)) < 0.3
    mlm = torch.where(chosen.to(device) & ~batch.text_special, targets.to(device), IGNORE_INDEX)
    return batch.replace(mlm_labels=mlm)


def test_padding_side_moves_right_padding_to_the_left_consistently(device):
    op = ops.get("padding_side")
    batch = text_batch_with_everything(device)
    out = op(batch, 1.0, generator(0))
    pads = (batch.text_special & ~batch.text_mask).sum(1)
    for row in range(batch.batch_size):
        shift = int(pads[row])
        for name in ("text_ids", "text_mask", "text_special", "text_embeddings", "mlm_labels", "alignment"):
            expected = torch.roll(getattr(batch, name)[row], shift, dims=0)
            assert torch.equal(getattr(out, name)[row], expected), (name, row)
        assert not out.text_mask[row, :shift].any() and out.text_mask[row, shift:].all()  # left-padded
        assert bool(out.augmented[row]) == (shift > 0)
    unchanged_except(batch, out, "text_ids", "text_mask", "text_special", "text_embeddings",
                     "mlm_labels", "alignment")


def test_padding_side_twice_at_full_magnitude_is_the_identity(device):
    op = ops.get("padding_side")
    batch = text_batch_with_everything(device, seed=3)
    left = op(batch, 1.0, generator(0))
    assert not torch.equal(left.text_ids, batch.text_ids)
    back = op(left, 1.0, generator(1))
    assert_batches_equal(back.replace(augmented=batch.augmented), batch)


def test_padding_side_flips_each_padded_row_with_probability_p():
    op = ops.get("padding_side")
    batch = example_batch(batch_size=3000, grid=2, text_len=8, seed=4)
    padded = (~batch.text_mask).any(1)
    shift = op.sample_params(batch, 0.3, generator(5))["shift"]
    assert not shift[~padded].any()
    assert_within_binomial(int((shift != 0).sum()), int(padded.sum()), 0.3)


def test_padding_side_leaves_rows_with_padding_on_both_sides_or_none():
    op = ops.get("padding_side")
    batch = example_batch(batch_size=4, text_len=8, seed=1)
    mask = torch.tensor([[True] * 8, [False, True, True, True, True, True, True, False],
                         [False] * 8, [True, True, True, False, False, False, False, False]])
    batch = batch.replace(text_mask=mask, text_special=~mask | batch.text_special)
    out = op(batch, 1.0, generator(0))
    assert torch.equal(out.augmented, torch.tensor([False, False, False, True]))
    assert torch.equal(out.text_ids[:3], batch.text_ids[:3])
    assert torch.equal(out.text_mask[3], torch.tensor([False] * 5 + [True] * 3))
