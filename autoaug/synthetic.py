"""Synthetic batches of any size, for tests, benchmarks and trying an op in three lines.

Text rows look like a tokenizer's output: ``[CLS] w w ... w [SEP] [PAD] ...`` with per-sample
lengths, so padding and special tokens are present for the ops to protect.
"""

from __future__ import annotations

from typing import Optional

import torch

from autoaug.batch import MultimodalBatch, TextVocabulary

PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3
FIRST_WORD_ID = 4


def example_vocabulary(vocab_size: int = 128) -> TextVocabulary:
    return TextVocabulary(vocab_size=vocab_size, pad_id=PAD_ID, mask_id=MASK_ID,
                          special_ids=(PAD_ID, CLS_ID, SEP_ID, MASK_ID))


def example_batch(
    batch_size: int = 8,
    grid: int = 4,
    patch_dim: int = 48,
    text_len: int = 12,
    num_classes: int = 5,
    vocab_size: int = 128,
    num_frames: int = 1,
    embed_dim: Optional[int] = None,
    image_size: Optional[int] = None,
    with_saliency: bool = False,
    with_alignment: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> MultimodalBatch:
    """A random but well-formed batch.

    ``embed_dim`` set: an embedding-stage batch (``vision`` is ``[B, Nv, embed_dim]`` and
    ``text_embeddings`` is filled). ``image_size`` set: ``images`` ``[B, 3, S, S]`` in [0, 1] are
    included for the pixel stage. ``text_len`` must be at least 3 (CLS, one word, SEP).
    """
    generator = torch.Generator().manual_seed(seed)
    tokens = num_frames * grid * grid
    width = embed_dim if embed_dim is not None else patch_dim
    vision = torch.randn(batch_size, tokens, width, generator=generator)

    lengths = torch.randint(3, text_len + 1, (batch_size,), generator=generator)
    lengths[0] = text_len  # one full row, so no column is all padding
    words = torch.randint(FIRST_WORD_ID, vocab_size, (batch_size, text_len), generator=generator)
    position = torch.arange(text_len).expand(batch_size, -1)
    text_ids = torch.where(position < lengths.unsqueeze(1) - 1, words, torch.full_like(words, PAD_ID))
    text_ids[:, 0] = CLS_ID
    text_ids[torch.arange(batch_size), lengths - 1] = SEP_ID
    text_mask = position < lengths.unsqueeze(1)

    classes = torch.randint(0, num_classes, (batch_size,), generator=generator)
    fields: dict = dict(
        vision=vision,
        text_ids=text_ids,
        text_mask=text_mask,
        labels=MultimodalBatch.soft_labels(classes, num_classes),
        num_frames=num_frames,
        vocab=example_vocabulary(vocab_size),
        text_embedding_table=torch.randn(vocab_size, width, generator=generator),
    )
    if embed_dim is not None:
        fields["text_embeddings"] = torch.randn(batch_size, text_len, embed_dim, generator=generator)
    if image_size is not None:
        fields["images"] = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
    if with_saliency:
        fields["saliency"] = torch.rand(batch_size, tokens, generator=generator)
    if with_alignment:
        # Each content word is aligned with one random patch, as a grounding annotation would be.
        patch = torch.randint(0, tokens, (batch_size, text_len), generator=generator)
        is_word = text_mask & (text_ids >= FIRST_WORD_ID)
        alignment = torch.zeros(batch_size, text_len, tokens, dtype=torch.bool)
        alignment.scatter_(2, patch.unsqueeze(2), is_word.unsqueeze(2))
        fields["alignment"] = alignment
    batch = MultimodalBatch(**fields)
    return batch.to(device)
