"""`TextVocabulary` at the boundary: a missing id is one line naming the field, and `from_tokenizer` makes
a working vocabulary from a Hugging Face tokenizer, causal ones (no mask token) included."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from autoaug import MultimodalBatch, TextVocabulary, ops
from autoaug.batch import IGNORE_INDEX
from autoaug.errors import AutoaugInputError, BatchValidationError
from conftest import generator


def causal_tokenizer(**overrides) -> SimpleNamespace:
    """The attributes a causal LM's tokenizer has: no mask token; 50 ids of which 0-2 are special."""
    fields = dict(vocab_size=50, pad_token_id=0, mask_token_id=None, unk_token_id=1, eos_token_id=2,
                  all_special_ids=[0, 1, 2], added_tokens_decoder={})
    fields.update(overrides)
    return SimpleNamespace(**fields)


def masked_everything(vocab: TextVocabulary, ids: torch.Tensor):
    """``text_mask`` at full rate, every selected token turned into the mask id (no random/kept ones)."""
    batch = MultimodalBatch(vision=torch.rand(ids.shape[0], 4, 6), text_ids=ids,
                            labels=torch.eye(2)[torch.zeros(ids.shape[0], dtype=torch.long)], vocab=vocab)
    op = ops.get("text_mask", magnitude_range=(0.0, 1.0), mask_token_fraction=1.0, random_token_fraction=0.0)
    return batch, op(batch, 1.0, generator(0))


# ---------------------------------------------------------------------- one line for a missing id
@pytest.mark.parametrize("field, arguments, hint", [
    ("mask_id", dict(vocab_size=50, pad_id=0, mask_id=None), r"causal-LM tokenizers have no mask token.*from_tokenizer"),
    ("pad_id", dict(vocab_size=50, pad_id=None, mask_id=3), r"pad_token = tokenizer.eos_token"),
    ("vocab_size", dict(vocab_size=None, pad_id=0, mask_id=3), r"positive int \(len\(tokenizer\)"),
])
def test_a_missing_id_is_one_line_naming_the_field(field, arguments, hint):
    # Catches the old TypeError ("'<=' not supported between 'int' and 'NoneType'"), which names no field,
    # is not an input error (the CLI would print a traceback) and says nothing of what to pass.
    with pytest.raises(BatchValidationError, match=rf"^TextVocabulary\.{field}: .*{hint}") as raised:
        TextVocabulary(**arguments)
    assert isinstance(raised.value, AutoaugInputError) and "\n" not in str(raised.value)


@pytest.mark.parametrize("value", [3.0, True, "3"])
def test_an_id_that_is_not_an_int_is_refused(value):
    # Catches a range-only check: 3.0 and True pass `0 <= value < 50` and would be written into long ids.
    with pytest.raises(BatchValidationError, match=r"^TextVocabulary\.mask_id: expected an id in \[0, 50\)"):
        TextVocabulary(vocab_size=50, pad_id=0, mask_id=value)


def test_ids_are_stored_as_plain_ints_in_a_tuple():
    # A list of special ids made the vocabulary unhashable (masking caches per vocabulary: TypeError).
    import numpy as np

    vocab = TextVocabulary(vocab_size=np.int64(50), pad_id=np.int64(0), mask_id=3, special_ids=[0, np.int32(2)])
    assert vocab.special_ids == (0, 2) and type(vocab.pad_id) is int and type(vocab.vocab_size) is int
    assert hash(vocab) == hash(TextVocabulary(50, 0, 3, (0, 2)))


# ---------------------------------------------------------------------- from_tokenizer
def test_a_causal_tokenizer_masks_with_its_pad_id():
    # The decision: no mask token -> masking writes the pad id (as attach() in integrations.transformers).
    # Catches writing unk/eos, keeping a None, or writing some ordinary id.
    vocab = TextVocabulary.from_tokenizer(causal_tokenizer(pad_token_id=2))
    assert (vocab.vocab_size, vocab.pad_id, vocab.mask_id) == (50, 2, 2)
    ids = torch.randint(3, 50, (4, 10), generator=generator(1))
    batch, out = masked_everything(vocab, ids)
    selected = out.mlm_labels != IGNORE_INDEX
    assert selected.all()  # full rate, no special ids among 3..49
    assert (out.text_ids == 2).all() and torch.equal(out.mlm_labels, ids)


def test_a_mask_token_or_an_explicit_id_wins_over_the_pad():
    assert TextVocabulary.from_tokenizer(causal_tokenizer(mask_token_id=7)).mask_id == 7  # BERT-like
    assert TextVocabulary.from_tokenizer(causal_tokenizer(mask_token_id=7), mask_id=1).mask_id == 1
    assert TextVocabulary.from_tokenizer(causal_tokenizer(pad_token_id=None), pad_id=2).pad_id == 2


def test_a_tokenizer_without_a_pad_token_is_one_line():
    # Catches a silent fallback to id 0 (Llama's <unk>, or an ordinary word elsewhere) as the pad/mask id.
    with pytest.raises(BatchValidationError, match=r"no pad token .*tokenizer\.pad_token = tokenizer\.eos_token"):
        TextVocabulary.from_tokenizer(causal_tokenizer(pad_token_id=None))


def test_a_real_llava_style_tokenizer_built_offline():
    """A PreTrainedTokenizerFast (word level, made here, nothing downloaded) shaped like LLaVA-1.5's:
    no mask token, and ``<image>`` and ``<pad>`` added after the base vocabulary, so ``tok.vocab_size``
    (7) leaves out the pad id (8)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "what", "shape", "is", "it"]
    word_level = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    image, pad = tok.convert_tokens_to_ids(["<image>", "<pad>"])
    assert (tok.vocab_size, len(tok), image, pad, tok.mask_token_id) == (7, 9, 7, 8, None)

    # The README's old hint fails on it, now with the field named instead of a TypeError.
    with pytest.raises(BatchValidationError, match=r"^TextVocabulary\.mask_id: got None"):
        TextVocabulary(len(tok), tok.pad_token_id, tok.mask_token_id, tuple(tok.all_special_ids))

    vocab = TextVocabulary.from_tokenizer(tok)
    # Catches tok.vocab_size (pad 8 out of range) and all_special_ids alone (which leaves out <image>).
    assert (vocab.vocab_size, vocab.pad_id, vocab.mask_id) == (9, pad, pad)
    assert {0, 1, 2, image, pad} <= set(vocab.special_ids)

    ids = torch.tensor(tok(["<s> <image> what shape is it </s>"] * 64, add_special_tokens=False)["input_ids"])
    _, out = masked_everything(vocab, ids)
    words_at = ids >= 3
    words_at &= ids != image
    assert torch.equal(out.text_ids[words_at], torch.full_like(ids[words_at], pad))  # words masked with <pad>
    assert torch.equal(out.text_ids[~words_at], ids[~words_at])  # <s>, <image>, </s> untouched

    random_op = ops.get("text_mask", magnitude_range=(0.0, 1.0), mask_token_fraction=0.0, random_token_fraction=1.0)
    batch = MultimodalBatch(vision=torch.rand(64, 4, 6), text_ids=ids, labels=torch.ones(64, 1), vocab=vocab)
    drawn = random_op(batch, 1.0, generator(2)).text_ids[words_at]
    assert set(drawn.unique().tolist()) == {3, 4, 5, 6}  # only ordinary words: never <image>, <pad> or specials
