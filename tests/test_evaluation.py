"""The robustness suites (issue 16 item 8): in-space corruptions, which a search can train on, and
held-out ones, which no registered op produces."""

from __future__ import annotations

import pytest
import torch

from autoaug.trainers import evaluation
from autoaug.trainers.data import to_batch
from autoaug.trainers.model import build_model
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from autoaug.trainers.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def setting():
    task = make_shapes_vqa(seed=0, train_size=32, val_size=16, test_size=16)
    tokenizer = TextTokenizer.fit(task.texts("train"))
    torch.manual_seed(0)
    model = build_model(tokenizer, task.num_classes)
    batch = to_batch(task.train[:16], tokenizer, task.num_classes)
    return model, batch


def test_suites_keep_the_contract_names_and_split_in_space_from_held_out():
    assert evaluation.IN_SPACE == ("half_patches_missing", "image_missing", "text_dropped", "patches_scrambled")
    assert set(evaluation.HELD_OUT) == {"pixel_noise", "occlusion", "words_swapped"}
    assert not set(evaluation.IN_SPACE) & set(evaluation.HELD_OUT)


@pytest.mark.parametrize("name", list(evaluation.CORRUPTIONS))
def test_each_corruption_changes_the_inputs_and_replays(name, setting):
    model, batch = setting
    corruption = evaluation.CORRUPTIONS[name]

    def corrupted(seed: int):
        generator = torch.Generator().manual_seed(seed)
        start = batch if corruption.stage == "pixel" else model.to_token_stage(batch)
        return model.to_token_stage(corruption.apply(start, generator)) if corruption.stage == "pixel" \
            else corruption.apply(start, generator)

    clean = model.to_token_stage(batch)
    first, again = corrupted(evaluation.CORRUPTION_SEED), corrupted(evaluation.CORRUPTION_SEED)
    changed = [key for key in ("vision", "vision_mask", "vision_positions", "text_ids", "text_mask")
               if not torch.equal(getattr(first, key), getattr(clean, key))]
    assert changed, f"{name} left the inputs as they were"
    for key in ("vision", "vision_mask", "text_ids", "text_mask"):
        assert torch.equal(getattr(first, key), getattr(again, key))  # seeded: the same corrupted inputs every run


def test_occlusion_covers_at_most_its_square_and_noise_keeps_the_pixel_range(setting):
    model, batch = setting
    occluded = evaluation.CORRUPTIONS["occlusion"].apply(batch, torch.Generator().manual_seed(3)).images
    touched = (occluded != batch.images).any(1)  # [B, H, W]
    side = int(batch.images.shape[-1] * evaluation.OCCLUSION_SIDE)
    assert touched.any() and (touched.flatten(1).sum(1) <= side * side).all()
    noisy = evaluation.CORRUPTIONS["pixel_noise"].apply(batch, torch.Generator().manual_seed(3)).images
    assert noisy.dtype == batch.images.dtype
    low, high = (0, 255) if not batch.images.is_floating_point() else (0.0, 1.0)
    assert noisy.min() >= low and noisy.max() <= high


def test_accuracies_per_suite(setting):
    model, batch = setting
    loader = [batch]
    in_space = evaluation.robust_accuracies(model, loader)
    held_out = evaluation.heldout_robust_accuracies(model, loader)
    assert list(in_space) == list(evaluation.IN_SPACE)
    assert list(held_out) == list(evaluation.HELD_OUT)
    assert all(0.0 <= value <= 1.0 for value in [*in_space.values(), *held_out.values()])
