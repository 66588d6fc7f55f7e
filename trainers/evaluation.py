"""Clean and robust evaluation of a trained proxy model.

Robustness is measured on two seeded corruption suites (the same corrupted inputs every run), kept
apart because a search can *train* on one of them:

- **in-space** (``robust_accuracy``, ``robust_val_accuracy``): corruptions built from our own ops,
  applied to the token-stage batch. A search space can pick these ops (or near twins such as
  ``modality_dropout`` for image removal), so a policy can score well here by training on the test
  corruption itself;
- **held-out** (``heldout_robust_accuracy``): corruptions no registered op produces, applied to the
  pixels *before* patching or to the question's word order. No search space can train on them.

| corruption | suite | what the model sees |
|---|---|---|
| ``half_patches_missing`` | in-space (``vision_token_budget`` 1.0) | half the patches dropped |
| ``image_missing`` | in-space (like ``modality_dropout``) | the question alone |
| ``text_dropped`` | in-space (``text_token_dropout`` 1.0) | 30 % of the question's words dropped |
| ``patches_scrambled`` | in-space (``vision_scramble_positions`` 1.0) | half the patches moved to other positions |
| ``pixel_noise`` | held-out | Gaussian noise on every pixel (σ = 0.15 of the pixel range), before patching |
| ``occlusion`` | held-out | a grey square over a quarter of the image at a random pixel offset (not patch-aligned), before patching |
| ``words_swapped`` | held-out | 30 % of adjacent word pairs of the question swapped |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from torch.utils.data import DataLoader

from autoaug import ops
from autoaug.batch import MultimodalBatch

from .model import TinyVLM

CORRUPTION_SEED = 20260


@dataclass(frozen=True)
class Corruption:
    """One corruption of the robustness suites: where it applies, and whether a search space can
    produce it (``held_out`` False) or not (True)."""

    apply: Callable[[MultimodalBatch, torch.Generator], MultimodalBatch]
    stage: Literal["pixel", "token"]
    held_out: bool
    description: str


def _with_op(name: str, magnitude: float) -> Callable[[MultimodalBatch, torch.Generator], MultimodalBatch]:
    op = ops.get(name)
    return lambda batch, generator: op(batch, magnitude, generator)


def _drop_image(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    return batch.replace(vision_mask=torch.zeros_like(batch.vision_mask))


PIXEL_NOISE_SIGMA = 0.15
OCCLUSION_SIDE = 0.5  # side of the square as a fraction of the image side: a quarter of the area
SWAP_RATE = 0.3


def _pixel_range(images: torch.Tensor) -> tuple[float, float]:
    return (0.0, 255.0) if not images.is_floating_point() else (0.0, 1.0)


def _pixel_noise(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    images = batch.images
    low, high = _pixel_range(images)
    noise = torch.randn(images.shape, generator=generator).to(images.device) * PIXEL_NOISE_SIGMA * (high - low)
    noisy = (images.float() + noise).clamp(low, high)
    return batch.replace(images=noisy.round().to(images.dtype) if not images.is_floating_point() else noisy)


def _occlusion(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    images = batch.images.clone()
    count, _, height, width = images.shape
    low, high = _pixel_range(images)
    side_h, side_w = max(1, int(height * OCCLUSION_SIDE)), max(1, int(width * OCCLUSION_SIDE))
    tops = torch.randint(0, height - side_h + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - side_w + 1, (count,), generator=generator)
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = ((rows >= tops.view(-1, 1, 1)) & (rows < (tops + side_h).view(-1, 1, 1))
              & (cols >= lefts.view(-1, 1, 1)) & (cols < (lefts + side_w).view(-1, 1, 1)))
    grey = torch.tensor((low + high) / 2).to(images.dtype)
    images[inside.unsqueeze(1).expand_as(images).to(images.device)] = grey.to(images.device)
    return batch.replace(images=images)


def _swap_words(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    """Swap each adjacent pair of ordinary text tokens (position i, i+1; both kept and not special)
    with probability ``SWAP_RATE``; pairs are disjoint (even starts), so a token moves at most once."""
    ids = batch.text_ids.clone()
    movable = batch.text_content
    length = ids.shape[1] - ids.shape[1] % 2
    left, right = ids[:, 0:length:2], ids[:, 1:length:2]
    swap = (torch.rand(left.shape, generator=generator).to(ids.device) < SWAP_RATE) \
        & movable[:, 0:length:2] & movable[:, 1:length:2]
    ids[:, 0:length:2] = torch.where(swap, right, left)
    ids[:, 1:length:2] = torch.where(swap, left, right)
    return batch.replace(text_ids=ids)


CORRUPTIONS: dict[str, Corruption] = {
    "half_patches_missing": Corruption(_with_op("vision_token_budget", 1.0), "token", False, "half the patches dropped"),
    "image_missing": Corruption(_drop_image, "token", False, "every patch dropped: the question alone"),
    "text_dropped": Corruption(_with_op("text_token_dropout", 1.0), "token", False, "30 % of the question's words dropped"),
    "patches_scrambled": Corruption(_with_op("vision_scramble_positions", 1.0), "token", False,
                                     "half the patches moved to other positions"),
    "pixel_noise": Corruption(_pixel_noise, "pixel", True, "Gaussian pixel noise before patching"),
    "occlusion": Corruption(_occlusion, "pixel", True, "a grey square over a quarter of the image, before patching"),
    "words_swapped": Corruption(_swap_words, "token", True, "30 % of adjacent word pairs swapped"),
}
IN_SPACE = tuple(name for name, corruption in CORRUPTIONS.items() if not corruption.held_out)
HELD_OUT = tuple(name for name, corruption in CORRUPTIONS.items() if corruption.held_out)


@torch.no_grad()
def accuracy(model: TinyVLM, loader: DataLoader, corruption: Optional[str] = None,
             device: torch.device | str = "cpu") -> float:
    """Accuracy over a loader of pixel-stage batches, clean or under one named corruption."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(CORRUPTION_SEED)
    correct = total = 0
    try:
        for batch in loader:
            batch = batch.to(device)
            chosen = CORRUPTIONS[corruption] if corruption is not None else None
            if chosen is not None and chosen.stage == "pixel":
                batch = chosen.apply(batch, generator)
            tokens = model.to_token_stage(batch)
            if chosen is not None and chosen.stage == "token":
                tokens = chosen.apply(tokens, generator)
            logits = model.predict(tokens).logits
            correct += int((logits.argmax(-1) == tokens.labels.argmax(-1)).sum())
            total += tokens.batch_size
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def robust_accuracies(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy under each in-space corruption, by name (their mean is ``robust_accuracy``)."""
    return {name: accuracy(model, loader, name, device) for name in IN_SPACE}


def heldout_robust_accuracies(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy under each held-out corruption, by name (their mean is ``heldout_robust_accuracy``)."""
    return {name: accuracy(model, loader, name, device) for name in HELD_OUT}
