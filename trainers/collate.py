"""Examples into a pixel-stage `MultimodalBatch`: `to_batch`, and `Collator` for a ``DataLoader``.

A batch of `Example` is stacked and tokenised exactly as a `PreparedTask` stacks a whole split
(`stack_examples`), so a batch built here and the same rows drawn from a prepared task are equal.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from autoaug.batch import MirrorSwaps, MultimodalBatch
from autoaug.errors import AutoaugInputError

from .prepared import stack_examples
from .records import Example


def to_batch(
    examples: Sequence[Example],
    tokenizer,
    num_classes: int,
    device: torch.device | str | None = None,
    mirror_swaps: Optional[MirrorSwaps] = None,
) -> MultimodalBatch:
    """A pixel-stage `MultimodalBatch`: images float ``[B, 3, S, S]`` in [0, 1], text ids and
    keep-mask from ``tokenizer`` (a `TextTokenizer`), one-hot soft labels ``[B, C]``, the vocabulary,
    ``text_special`` ([CLS] / [SEP] / [PAD] / [MASK] positions, which no op may touch) and the task's
    ``mirror_swaps`` (`TaskData.mirror_swaps`)."""
    if not examples:
        raise AutoaugInputError("to_batch: expected at least one example")
    stacked = stack_examples(examples, tokenizer)
    batch = stacked.batch(torch.arange(len(stacked)), num_classes, tokenizer.vocabulary, mirror_swaps)
    return batch if device is None else batch.to(device)


class Collator:
    """``collate_fn`` for a ``torch.utils.data.DataLoader`` over a list of `Example` (picklable)."""

    def __init__(self, tokenizer, num_classes: int, mirror_swaps: Optional[MirrorSwaps] = None) -> None:
        self.tokenizer = tokenizer
        self.num_classes = num_classes
        self.mirror_swaps = mirror_swaps

    def __call__(self, examples: Sequence[Example]) -> MultimodalBatch:
        return to_batch(examples, self.tokenizer, self.num_classes, mirror_swaps=self.mirror_swaps)
