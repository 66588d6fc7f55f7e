"""Semantics of the dropout ops (autoaug/ops/dropout.py).

Rates are checked at a fixed seed within 4 binomial standard deviations on batches large enough
for the bound to be tight; invariants (what is never dropped, what content is never changed) exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from autoaug import ops
from autoaug.ops.alignment import erased_text, erased_vision
from autoaug.synthetic import example_batch
from conftest import generator


def assert_within_binomial(successes: int, trials: int, probability: float, sds: float = 4.0) -> None:
    spread = math.sqrt(trials * probability * (1 - probability))
    assert spread >= 3, "too few trials for a meaningful rate test"
    assert abs(successes - trials * probability) <= sds * spread, (successes, trials, probability)


def unchanged_except(before, after, *changed: str) -> None:
    for name, tensor in before.tensors().items():
        if name not in changed and name != "augmented":
            assert torch.equal(tensor, after.tensors()[name]), f"{name} changed"


def predropped(batch, seed: int = 11, rate: float = 0.2):
    """The batch with some patches and some content words dropped beforehand (as earlier ops would)."""
    noise = torch.Generator().manual_seed(seed)
    vision_gone = (torch.rand(batch.vision_mask.shape, generator=noise) < rate).to(batch.device)
    text_gone = (torch.rand(batch.text_ids.shape, generator=noise) < rate).to(batch.device) & ~batch.text_special
    return batch.replace(vision_mask=batch.vision_mask & ~vision_gone, text_mask=batch.text_mask & ~text_gone)


def aligned_pairs_erased_on_both_sides(batch, alignment) -> int:
    both = alignment & erased_text(batch).unsqueeze(2) & erased_vision(batch).unsqueeze(1)
    return int(both.sum())


# ---------------------------------------------------------------------------- vision_token_dropout
@pytest.mark.parametrize("magnitude", [1.0, 0.5])
def test_vision_token_dropout_rate_and_untouched_content(device, magnitude):
    op = ops.get("vision_token_dropout")
    batch = predropped(example_batch(batch_size=256, grid=8, seed=1, device=device))
    out = op(batch, magnitude, generator(2))
    unchanged_except(batch, out, "vision_mask")
    assert not (out.vision_mask & ~batch.vision_mask).any()  # already-dropped patches stay dropped
    newly_dropped = batch.vision_mask & ~out.vision_mask
    assert_within_binomial(int(newly_dropped.sum()), int(batch.vision_mask.sum()), 0.30 * magnitude)


# ---------------------------------------------------------------------------- text_token_dropout
@pytest.mark.parametrize("magnitude", [1.0, 0.5])
def test_text_token_dropout_rate_and_protected_tokens(device, magnitude):
    op = ops.get("text_token_dropout")
    batch = predropped(example_batch(batch_size=512, text_len=24, seed=3, device=device))
    out = op(batch, magnitude, generator(4))
    unchanged_except(batch, out, "text_mask")
    assert not (out.text_mask & ~batch.text_mask).any()
    special = batch.text_special
    assert torch.equal(out.text_mask[special], batch.text_mask[special])  # CLS/SEP/padding untouched
    droppable = batch.text_content
    newly_dropped = batch.text_mask & ~out.text_mask
    assert not (newly_dropped & ~droppable).any()
    assert_within_binomial(int(newly_dropped.sum()), int(droppable.sum()), 0.30 * magnitude)


# ---------------------------------------------------------------------------- modality_dropout
def test_modality_dropout_drops_one_whole_modality_at_the_documented_rate(device):
    op = ops.get("modality_dropout")
    batch = example_batch(batch_size=4000, grid=2, text_len=6, seed=5, device=device)
    params = op.sample_params(batch, 1.0, generator(6))
    out = op.apply(batch, params)
    unchanged_except(batch, out, "vision_mask", "text_mask")
    content = batch.text_content
    assert content.any(1).all()  # every sample has text content to lose
    vision_gone = ~out.vision_mask.any(1)
    text_gone = ~(out.text_mask & content).any(1)
    assert not (vision_gone & text_gone).any()  # never both modalities of a sample
    # Image drop: every patch gone, text untouched. Text drop: every content token gone, specials kept.
    assert torch.equal(vision_gone, params["drop_vision"] & params["active"])
    assert torch.equal(text_gone, params["drop_text"] & params["active"])
    assert torch.equal(out.text_mask[vision_gone], batch.text_mask[vision_gone])
    assert torch.equal(out.vision_mask[text_gone], batch.vision_mask[text_gone])
    assert torch.equal(out.text_mask & batch.text_special, batch.text_mask & batch.text_special)
    untouched = ~vision_gone & ~text_gone
    assert torch.equal(out.vision_mask[untouched], batch.vision_mask[untouched])
    assert torch.equal(out.text_mask[untouched], batch.text_mask[untouched])
    assert torch.equal(out.augmented, vision_gone | text_gone)
    samples, p = batch.batch_size, 0.20
    assert_within_binomial(int((vision_gone | text_gone).sum()), samples, p)
    assert_within_binomial(int(vision_gone.sum()), samples, p / 2)
    assert_within_binomial(int(text_gone.sum()), samples, p / 2)


def test_modality_dropout_rate_scales_with_magnitude():
    op = ops.get("modality_dropout")
    batch = example_batch(batch_size=4000, grid=2, text_len=6, seed=7)
    out = op(batch, 0.5, generator(8))
    dropped = ~out.vision_mask.any(1) | ~(out.text_mask & batch.text_content).any(1)
    assert_within_binomial(int(dropped.sum()), batch.batch_size, 0.10)


# ---------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("order", [("text_token_dropout", "vision_token_dropout"),
                                   ("vision_token_dropout", "text_token_dropout")])
def test_chained_dropout_never_erases_both_sides_of_an_aligned_pair(device, order):
    batch = example_batch(batch_size=256, grid=4, text_len=16, with_alignment=True, seed=9, device=device)
    alignment = batch.alignment

    def chain(start):
        for seed, name in enumerate(order):
            start = ops.get(name)(start, 1.0, generator(seed))
        return start

    assert aligned_pairs_erased_on_both_sides(chain(batch), alignment) == 0
    # The same draws without the alignment annotation do erase aligned pairs: the check has teeth.
    assert aligned_pairs_erased_on_both_sides(chain(batch.replace(alignment=None)), alignment) > 10


def test_modality_dropout_spares_text_aligned_with_erased_patches(device):
    batch = example_batch(batch_size=512, grid=4, text_len=16, with_alignment=True, seed=10, device=device)
    batch = ops.get("vision_token_dropout")(batch, 1.0, generator(0))
    out = ops.get("modality_dropout")(batch, 1.0, generator(1))
    assert aligned_pairs_erased_on_both_sides(out, batch.alignment) == 0
