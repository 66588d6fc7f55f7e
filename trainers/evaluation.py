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

**Modality reliance** (`modality_reliance`; ``val_accuracy_image_blanked`` / ``val_accuracy_text_blanked``
at the end of every searched and baseline trial) is apart from both suites: each input loses one modality's
content while keeping its shape, so the accuracy says how much the finished model still gets right without
it. Near the clean accuracy: the model ignores that modality (a policy that drops or masks it heavily can
teach that); near chance (or the question-only accuracy, for the image): it relies on it.

| blank | what the model sees |
|---|---|
| ``image_blanked`` | every image one constant grey (``QUESTION_ONLY_GREY``, as the calibration's question-only check), before patching |
| ``text_blanked`` | every word of the question replaced by the vocabulary's mask id (special tokens, padding and length kept) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional, Sequence

import numpy as np

import torch
from torch.utils.data import DataLoader

from autoaug import ops
from autoaug.batch import MultimodalBatch

from .model import TinyVLM
from .prepared import QUESTION_ONLY_GREY

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
    # Read the pairs from the input, not from `ids`: views of `ids` would see the first write below,
    # and the second would then copy the right word back instead of the left (a duplicate, not a swap).
    left, right = batch.text_ids[:, 0:length:2], batch.text_ids[:, 1:length:2]
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


def _grey_image(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    """Every image one constant grey: the pixels the calibration's question-only run trains on
    (``QUESTION_ONLY_GREY`` of 255, in the batch's own pixel range and dtype)."""
    low, high = _pixel_range(batch.images)
    grey = QUESTION_ONLY_GREY if not batch.images.is_floating_point() else QUESTION_ONLY_GREY / 255.0 * (high - low) + low
    return batch.replace(images=torch.full_like(batch.images, grey))


def _masked_text(batch: MultimodalBatch, generator: torch.Generator) -> MultimodalBatch:
    """Every word of the question (``text_content``: kept, not special) replaced by the vocabulary's
    mask id; special tokens, padding, the keep-mask and so the length stay as they were."""
    if batch.vocab is None:
        raise ValueError("text_blanked: the batch has no vocabulary (TextVocabulary), so no mask id to write")
    ids = torch.where(batch.text_content, torch.full_like(batch.text_ids, batch.vocab.mask_id), batch.text_ids)
    return batch.replace(text_ids=ids)


# Not corruptions of the robustness suites (neither in IN_SPACE nor HELD_OUT): the reliance probes.
MODALITY_BLANKS: dict[str, Corruption] = {
    "image_blanked": Corruption(_grey_image, "pixel", True, "every image one constant grey"),
    "text_blanked": Corruption(_masked_text, "pixel", True, "every word of the question masked"),
}
_INPUT_CHANGES = {**CORRUPTIONS, **MODALITY_BLANKS}  # by name: what `accuracy` can apply
IN_SPACE = tuple(name for name, corruption in CORRUPTIONS.items() if not corruption.held_out)
HELD_OUT = tuple(name for name, corruption in CORRUPTIONS.items() if corruption.held_out)


@torch.no_grad()
def _correct_batches(model: TinyVLM, loader: DataLoader, corruption: Optional[str] = None,
                     device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Per batch of ``loader`` (in its order), a bool tensor: which examples the model gets right,
    clean or under one named corruption or modality blank. The model is in eval mode while this runs."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(CORRUPTION_SEED)
    chosen = _INPUT_CHANGES[corruption] if corruption is not None else None
    try:
        for batch in loader:
            batch = batch.to(device)
            if chosen is not None and chosen.stage == "pixel":
                batch = chosen.apply(batch, generator)
            tokens = model.to_token_stage(batch)
            if chosen is not None and chosen.stage == "token":
                tokens = chosen.apply(tokens, generator)
            logits = model.predict(tokens).logits
            yield (logits.argmax(-1) == tokens.labels.argmax(-1)).cpu()
    finally:
        model.train(was_training)


def accuracy(model: TinyVLM, loader: DataLoader, corruption: Optional[str] = None,
             device: torch.device | str = "cpu") -> float:
    """Accuracy over a loader of pixel-stage batches, clean or under one named corruption
    (`CORRUPTIONS`) or modality blank (`MODALITY_BLANKS`)."""
    correct = total = 0
    for right in _correct_batches(model, loader, corruption, device):
        correct += int(right.sum())
        total += int(right.numel())
    return correct / max(total, 1)


def per_example_correct(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> torch.Tensor:
    """Clean correctness of every example of an in-order ``loader`` (bool ``[N]``, example order):
    the per-example evidence a confirmation run reports (`encode_correct`). Its mean is the accuracy."""
    parts = list(_correct_batches(model, loader, None, device))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def encode_correct(correct: Sequence[bool] | torch.Tensor | np.ndarray) -> str:
    """Per-example correctness as ``"<n>:<hex>"``: the bits in example order, packed 8 to a byte
    (first example = the most significant bit of the first byte, padded with zeros to a whole byte).
    About n/4 characters: 1250 for 5000 examples, small enough for a Tune result and a study attribute.
    The count makes the string self-checking (`decode_correct` refuses a hex part of the wrong length)."""
    bits = np.asarray(correct.cpu() if isinstance(correct, torch.Tensor) else correct, dtype=bool).reshape(-1)
    return f"{bits.size}:{np.packbits(bits).tobytes().hex()}"


def decode_correct(text: str) -> np.ndarray:
    """The bool array ``[n]`` `encode_correct` wrote; ValueError naming the problem on a malformed string."""
    count, separator, digits = str(text).partition(":")
    if not separator or not count.isdigit():
        raise ValueError(f"per-example correctness: expected '<count>:<hex>', got {str(text)[:40]!r}")
    n = int(count)
    if len(digits) != 2 * ((n + 7) // 8):
        raise ValueError(f"per-example correctness: {n} examples need {2 * ((n + 7) // 8)} hex digits, got {len(digits)}")
    return np.unpackbits(np.frombuffer(bytes.fromhex(digits), dtype=np.uint8))[:n].astype(bool)


def robust_accuracies(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy under each in-space corruption, by name (their mean is ``robust_accuracy``)."""
    return {name: accuracy(model, loader, name, device) for name in IN_SPACE}


def heldout_robust_accuracies(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy under each held-out corruption, by name (their mean is ``heldout_robust_accuracy``)."""
    return {name: accuracy(model, loader, name, device) for name in HELD_OUT}


def modality_reliance(model: TinyVLM, loader: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Accuracy with each modality blanked, by blank name (``image_blanked``, ``text_blanked``; see the
    module docstring): one extra pass over ``loader`` per modality."""
    return {name: accuracy(model, loader, name, device) for name in MODALITY_BLANKS}
