"""Clean and robust evaluation of a trained proxy model.

``robust_accuracy`` is the mean accuracy on a split under a fixed, seeded corruption suite, so a search
can trade clean accuracy against robustness. Each corruption is one of our own ops at a fixed
magnitude with a fixed seed, applied to the token-stage batch (the same corrupted inputs every run):

| corruption | op (magnitude) | what the model sees |
|---|---|---|
| ``half_patches_missing`` | ``vision_token_budget`` (1.0) | half the patches dropped |
| ``image_missing`` | every patch dropped | the question alone |
| ``text_dropped`` | ``text_token_dropout`` (1.0) | 30 % of the question's words dropped |
| ``patches_scrambled`` | ``vision_scramble_positions`` (1.0) | half the patches moved to other positions |
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader

from autoaug import ops
from autoaug.batch import MultimodalBatch

from .model import TinyVLM

Corruption = Callable[[MultimodalBatch, torch.Generator], MultimodalBatch]
CORRUPTION_SEED = 20260


def _with_op(name: str, magnitude: float) -> Corruption:
    op = ops.get(name)
    return lambda batch, generator: op(batch, magnitude, generator)


def _drop_image(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    return batch.replace(vision_mask=torch.zeros_like(batch.vision_mask))


CORRUPTIONS: dict[str, Corruption] = {
    "half_patches_missing": _with_op("vision_token_budget", 1.0),
    "image_missing": _drop_image,
    "text_dropped": _with_op("text_token_dropout", 1.0),
    "patches_scrambled": _with_op("vision_scramble_positions", 1.0),
}


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
            tokens = model.to_token_stage(batch.to(device))
            if corruption is not None:
                tokens = CORRUPTIONS[corruption](tokens, generator)
            logits = model.predict(tokens).logits
            correct += int((logits.argmax(-1) == tokens.labels.argmax(-1)).sum())
            total += tokens.batch_size
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def robust_accuracies(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy under each corruption of the suite, by name."""
    return {name: accuracy(model, loader, name, device) for name in CORRUPTIONS}
