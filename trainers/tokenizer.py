"""The proxy task's text tokenizer, built with the Hugging Face ``tokenizers`` library.

A word-level (default) or BPE model behind a lowercase normaliser and a whitespace/punctuation
pre-tokenizer (``\\w+|[^\\w\\s]+``), fitted on the training texts only (BPE marks word-inner pieces
with ``##`` and a WordPiece decoder joins them back). Every encoding is
``[CLS] tokens... [SEP]`` right-padded with ``[PAD]`` (and truncated) to a fixed ``max_length``, so
every batch of a run has the same ``Nt``. Special ids are fixed by their order:
``[PAD]=0 [CLS]=1 [SEP]=2 [MASK]=3 [UNK]=4`` (the same layout as `autoaug.synthetic`).

The whole state (model, normaliser, post-processor, padding and truncation settings) round-trips
through one JSON file in the library's own format: ``TextTokenizer.load(path)`` gives back the same
ids, and the file can be loaded with ``tokenizers.Tokenizer.from_file`` in a user's script too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from autoaug.batch import TextVocabulary
from autoaug.errors import AutoaugInputError

PAD, CLS, SEP, MASK, UNK = "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, CLS, SEP, MASK, UNK)
TokenizerKind = Literal["wordlevel", "bpe"]
SUBWORD_PREFIX = "##"


class TextTokenizer:
    """A fitted ``tokenizers.Tokenizer`` with the fixed-length [CLS] ... [SEP] [PAD] layout.

    Build one with `TextTokenizer.fit` (training texts) or `TextTokenizer.load` (a saved JSON file).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
        if missing:
            raise AutoaugInputError(f"tokenizer: the vocabulary lacks the special tokens {missing}")
        if tokenizer.padding is None or tokenizer.padding.get("length") is None:
            raise AutoaugInputError("tokenizer: expected fixed-length padding (as TextTokenizer.fit sets)")
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        max_length: Optional[int] = None,
        kind: TokenizerKind = "wordlevel",
        vocab_size: int = 4096,
        min_frequency: int = 1,
    ) -> "TextTokenizer":
        """Fit on ``texts`` (the training split). ``max_length=None``: the longest training text
        (with [CLS] and [SEP]); longer texts met later are truncated."""
        texts = list(texts)
        if not texts:
            raise AutoaugInputError("tokenizer: cannot fit on an empty list of texts")
        if kind == "wordlevel":
            tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        elif kind == "bpe":
            tokenizer = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix=SUBWORD_PREFIX))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                          continuing_subword_prefix=SUBWORD_PREFIX)
        else:
            raise AutoaugInputError(f"tokenizer: kind must be one of wordlevel, bpe; got {kind!r}")
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        # Word pieces after the first carry "##", so decoding re-joins words; cleanup removes the
        # space the pre-tokenizer put before punctuation ("circle ?" -> "circle?").
        tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX, cleanup=True)
        tokenizer.train_from_iterator(texts, trainer=trainer)
        cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
        )
        if max_length is None:
            # At least one content position: texts that are all empty (an image-only task) still fit.
            max_length = max(3, max(len(e.ids) for e in tokenizer.encode_batch(texts)))
        if not isinstance(max_length, int) or max_length < 3:
            raise AutoaugInputError(f"tokenizer: max_length must be an int >= 3, got {max_length!r}")
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(direction="right", pad_id=tokenizer.token_to_id(PAD), pad_token=PAD,
                                 length=max_length)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        path = Path(path)
        if not path.is_file():
            raise AutoaugInputError(f"{path}: tokenizer file not found")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the library raises a bare Exception on a bad file
            raise AutoaugInputError(f"{path}: not a tokenizers JSON file ({error})") from error
        return cls(tokenizer)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> "TextTokenizer":
        return cls(Tokenizer.from_str(text))

    # ------------------------------------------------------------------ what ops and models need
    @property
    def max_length(self) -> int:
        return int(self.tokenizer.padding["length"])

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        return int(self.tokenizer.token_to_id(token))

    def single_token_id(self, word: str) -> Optional[int]:
        """The id of ``word`` when it encodes to exactly one known token (normalised as texts are),
        else ``None`` (unknown, or split into pieces)."""
        encoding = self.tokenizer.encode(word, add_special_tokens=False)
        ids = [i for i, keep in zip(encoding.ids, encoding.attention_mask) if keep]  # padding is fixed-length
        return int(ids[0]) if len(ids) == 1 and ids[0] != self.unk_id else None

    @property
    def pad_id(self) -> int:
        return self.token_id(PAD)

    @property
    def cls_id(self) -> int:
        return self.token_id(CLS)

    @property
    def sep_id(self) -> int:
        return self.token_id(SEP)

    @property
    def mask_id(self) -> int:
        return self.token_id(MASK)

    @property
    def unk_id(self) -> int:
        return self.token_id(UNK)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """[PAD] [CLS] [SEP] [MASK]: the ids no text op may rewrite ([UNK] is content)."""
        return (self.pad_id, self.cls_id, self.sep_id, self.mask_id)

    @property
    def vocabulary(self) -> TextVocabulary:
        return TextVocabulary(vocab_size=self.vocab_size, pad_id=self.pad_id, mask_id=self.mask_id,
                              special_ids=self.special_ids)

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``[B, max_length]`` (long) and keep-mask ``[B, max_length]`` (bool, False on padding)."""
        if isinstance(texts, str):
            raise AutoaugInputError("tokenizer.encode: expected a list of texts, got one string")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).view(len(texts), self.max_length)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool) \
            .view(len(texts), self.max_length)
        return ids, mask

    def special_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, Nt]`` bool: positions holding [PAD] [CLS] [SEP] or [MASK]."""
        return torch.isin(ids, torch.tensor(self.special_ids, device=ids.device))

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        rows = ids.tolist() if isinstance(ids, torch.Tensor) else [list(r) for r in ids]
        return self.tokenizer.decode_batch(rows, skip_special_tokens=skip_special)

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text (with [CLS]/[SEP], without padding), for inspection."""
        encoding = self.tokenizer.encode(text)
        return [t for t, m in zip(encoding.tokens, encoding.attention_mask) if m]

    def describe(self) -> dict:
        model = json.loads(self.tokenizer.to_str())["model"]["type"]
        return {"model": model, "vocab_size": self.vocab_size, "max_length": self.max_length,
                "special_ids": dict(zip(SPECIAL_TOKENS, (self.token_id(t) for t in SPECIAL_TOKENS)))}

    def __getstate__(self) -> dict:
        return {"json": self.to_json()}

    def __setstate__(self, state: dict) -> None:
        self.tokenizer = Tokenizer.from_str(state["json"])

    def __repr__(self) -> str:
        info = self.describe()
        return f"TextTokenizer({info['model']}, vocab_size={info['vocab_size']}, max_length={info['max_length']})"
