"""The one batch type that travels through every op (docs/ARCHITECTURE.md).

A VLM consumes one joint sequence of image-patch tokens and text tokens. `MultimodalBatch` holds
both halves side by side, with everything an augmentation needs to act on them without Python loops
over samples: keep-masks, 2-D grid positions, soft labels (so mixing ops can mix labels), MLM labels,
per-sample loss weights and an "augmented" flag.

Stages (which fields are present):
- pixel stage: ``images`` ``[B, 3, H, W]`` and ``text_ids``; ``vision`` may still be ``None``;
- token stage: ``vision`` holds patch *pixels* ``[B, Nv, Dv]``;
- embedding stage: ``vision`` holds patch *embeddings* ``[B, Nv, D]`` and ``text_embeddings``
  ``[B, Nt, D]`` is filled.

Video: tokens are laid out frame-major, ``Nv = num_frames * patches_per_frame``; ``vision_positions``
are grid positions inside a frame and the frame of a slot is ``slot // patches_per_frame``.

Construction validates shapes, dtypes and devices (cheap metadata checks, no data scan) and fills the
optional per-sample bookkeeping with defaults, so a user's batch is checked at the boundary and an op
can trust what it receives.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from autoaug.errors import BatchValidationError

IGNORE_INDEX = -100  # Hugging Face convention for "no MLM target here"


@dataclass(frozen=True)
class TextVocabulary:
    """What text ops need to know about the tokenizer: its size and its special ids.

    ``vocab_size``: ids are in ``[0, vocab_size)`` (random replacements are drawn from there);
    ``pad_id``: padding; ``mask_id``: what ``text_mask`` writes over a masked token; ``special_ids``:
    ids no op may touch or draw (pad and mask are never drawn either). With a Hugging Face tokenizer,
    `from_tokenizer` fills all four, including for causal LMs, which have no mask token.
    """

    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not _is_int(self.vocab_size) or self.vocab_size < 1:
            raise BatchValidationError(
                f"TextVocabulary.vocab_size: expected a positive int (len(tokenizer) for a Hugging Face "
                f"tokenizer), got {self.vocab_size!r}")
        for name in ("pad_id", "mask_id"):
            value = getattr(self, name)
            if value is None:
                raise BatchValidationError(f"TextVocabulary.{name}: got None, {_MISSING_ID_HINTS[name]}")
            if not _is_int(value) or not 0 <= value < self.vocab_size:
                raise BatchValidationError(
                    f"TextVocabulary.{name}: expected an id in [0, {self.vocab_size}), got {value!r}"
                )
        special = tuple(self.special_ids)
        if not all(_is_int(value) for value in special):
            raise BatchValidationError(f"TextVocabulary.special_ids: expected int ids, got {self.special_ids!r}")
        # Plain ints in a tuple, whatever came in (a list, numpy ints): the vocabulary is hashed as a cache key.
        for name, value in (("vocab_size", int(self.vocab_size)), ("pad_id", int(self.pad_id)),
                            ("mask_id", int(self.mask_id)), ("special_ids", tuple(int(v) for v in special))):
            object.__setattr__(self, name, value)

    @classmethod
    def from_tokenizer(cls, tokenizer, *, mask_id: Optional[int] = None,
                       pad_id: Optional[int] = None) -> "TextVocabulary":
        """The vocabulary of a Hugging Face tokenizer (anything with its ``*_token_id`` attributes).

        - ``vocab_size`` is ``len(tokenizer)``: it counts added tokens (LLaVA's ``<image>``, an added
          ``<pad>``), which ``tokenizer.vocab_size`` leaves out, so their ids are in range.
        - ``pad_id``: the argument, else ``tokenizer.pad_token_id``; a tokenizer without a pad token
          (Llama's) is refused: set ``tokenizer.pad_token`` first, as batching needs anyway.
        - ``mask_id`` (what ``text_mask`` writes): the argument, else ``tokenizer.mask_token_id``, else the
          pad id. Causal LMs (every supported VLM) have no mask token; the pad id carries no content of
          its own, and it is what `autoaug.integrations.transformers.attach` writes too. For a
          dedicated id, add one (``tokenizer.add_special_tokens({"mask_token": "<mask>"})`` and
          ``model.resize_token_embeddings(len(tokenizer))``) before calling this, or pass ``mask_id=``
          (e.g. ``tokenizer.unk_token_id``; worth doing where the pad token is the end-of-text token, as
          ``tokenizer.pad_token = tokenizer.eos_token`` makes it, since masking then writes end-of-text).
        - ``special_ids``: ``tokenizer.all_special_ids`` plus added tokens marked special (``<image>``,
          which ``all_special_ids`` may leave out), plus the pad and mask ids.
        """
        size = len(tokenizer) if hasattr(tokenizer, "__len__") else getattr(tokenizer, "vocab_size", None)
        pad = pad_id if pad_id is not None else getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise BatchValidationError(
                "TextVocabulary.from_tokenizer: the tokenizer has no pad token (pad_token_id is None): set "
                "tokenizer.pad_token (e.g. tokenizer.pad_token = tokenizer.eos_token) or pass pad_id=")
        mask = mask_id if mask_id is not None else getattr(tokenizer, "mask_token_id", None)
        mask = pad if mask is None else mask
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        special = set(getattr(tokenizer, "all_special_ids", None) or ())
        special |= {index for index, token in added.items() if getattr(token, "special", False)}
        return cls(vocab_size=size, pad_id=pad, mask_id=mask, special_ids=tuple(sorted(special | {pad, mask})))


_MISSING_ID_HINTS = {
    "pad_id": "pass the id padding uses (a Hugging Face tokenizer without a pad token: set "
              "tokenizer.pad_token = tokenizer.eos_token first)",
    "mask_id": "pass the id text masking writes: causal-LM tokenizers have no mask token (mask_token_id is None), "
               "so pass their pad id, or use TextVocabulary.from_tokenizer(tokenizer), which does",
}


def _is_int(value) -> bool:
    """An integer id (Python or numpy/torch integer scalars), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class MirrorSwaps:
    """What mirroring the image left to right swaps in the question and the answer, as a task declares it.

    ``text_pairs``: token-id pairs whose meaning a horizontal mirror exchanges (the ids of "left" and
    "right"); ``label_pairs``: answer-class index pairs it exchanges (the classes "left" and "right").
    Each id and each class appears at most once, so a swap is a permutation. A batch without a
    declaration (``None``) claims no text or label depends on left/right.
    """

    text_pairs: tuple[tuple[int, int], ...] = ()
    label_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("text_pairs", "label_pairs"):
            pairs = getattr(self, name)
            flat = [value for pair in pairs for value in pair]
            if any(len(pair) != 2 for pair in pairs) or \
                    any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in flat):
                raise BatchValidationError(f"MirrorSwaps.{name}: expected pairs of non-negative ints, got {pairs!r}")
            if len(set(flat)) != len(flat):
                raise BatchValidationError(f"MirrorSwaps.{name}: an id appears twice in {pairs!r} (not a swap)")

    def __bool__(self) -> bool:
        return bool(self.text_pairs or self.label_pairs)


@dataclass
class MultimodalBatch:
    """A batch of image-text samples as the joint token sequence a VLM consumes.

    Required: ``text_ids`` ``[B, Nt]`` (long), ``labels`` ``[B, C]`` (float soft labels) and at
    least one of ``images`` ``[B, 3, H, W]`` / ``vision`` ``[B, Nv, Dv]``.

    Masks are *keep* masks: ``True`` means the token is present and attended to.
    ``text_special`` marks positions no op may touch (CLS/SEP/padding); it defaults to the padding
    (``~text_mask``) plus any id listed in ``vocab.special_ids``.
    ``vision_masked`` marks patches whose content was replaced by the mask fill (still attended, so a
    model can swap in a learned [MASK] embedding), as opposed to dropped ones (``vision_mask`` False).
    ``alignment`` ``[B, Nt, Nv]`` (bool) marks text token ↔ patch pairs that must never both be erased.
    ``mirror_swaps`` (`MirrorSwaps`) says which text ids and answer classes a left-right mirror of the
    image exchanges (the task declares them; ``multimodal_horizontal_flip`` reads them).
    """

    text_ids: Tensor
    labels: Tensor
    vision: Optional[Tensor] = None
    images: Optional[Tensor] = None
    vision_mask: Optional[Tensor] = None
    vision_positions: Optional[Tensor] = None
    vision_masked: Optional[Tensor] = None
    text_mask: Optional[Tensor] = None
    text_special: Optional[Tensor] = None
    text_embeddings: Optional[Tensor] = None
    mlm_labels: Optional[Tensor] = None
    loss_weight: Optional[Tensor] = None
    augmented: Optional[Tensor] = None
    saliency: Optional[Tensor] = None
    alignment: Optional[Tensor] = None
    vision_first: Optional[Tensor] = None
    num_frames: int = 1
    vocab: Optional[TextVocabulary] = None
    text_embedding_table: Optional[Tensor] = field(default=None, repr=False)
    mirror_swaps: Optional[MirrorSwaps] = None

    def __post_init__(self) -> None:
        self._check_core()
        self._fill_defaults()
        self._check_optional()

    def validate(self) -> "MultimodalBatch":
        """Check every field's shape, dtype and device again (construction already did once)."""
        self._check_core()
        self._check_optional()
        return self

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        return self.text_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.text_ids.device

    @property
    def num_vision_tokens(self) -> int:
        return 0 if self.vision is None else self.vision.shape[1]

    @property
    def num_text_tokens(self) -> int:
        return self.text_ids.shape[1]

    @property
    def stage(self) -> str:
        """The pipeline stage the batch is at (module docstring): ``embedding`` (has text embeddings),
        ``token`` (has vision tokens) or ``pixel``."""
        if self.text_embeddings is not None:
            return "embedding"
        return "token" if self.vision is not None else "pixel"

    @property
    def text_content(self) -> Tensor:
        """``[B, Nt]`` bool: the text positions an op may edit — present and not special (never
        [CLS]/[SEP]/padding or a vocabulary's special ids)."""
        return self.text_mask & ~self.text_special

    @property
    def patches_per_frame(self) -> int:
        return self.num_vision_tokens // self.num_frames

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid, read off the positions."""
        if self.vision_positions is None or self.vision_positions.numel() == 0:
            return (0, 0)
        extent = self.vision_positions.reshape(-1, 2).amax(0) + 1
        return int(extent[0]), int(extent[1])

    # ------------------------------------------------------------------ helpers
    def replace(self, **changes) -> "MultimodalBatch":
        """A new batch with some fields changed (the input batch is never mutated by ops).

        Inside the library the batch was validated when the user built it, and ops are trusted to
        keep shapes (the contract tests call `validate` on every op's output), so this is a plain
        shallow copy: it runs once per op call and must cost microseconds, not a re-validation.
        """
        unknown = changes.keys() - self.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"MultimodalBatch has no field(s) {', '.join(sorted(unknown))}")
        clone = copy.copy(self)
        clone.__dict__.update(changes)
        return clone

    def to(self, device: torch.device | str) -> "MultimodalBatch":
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return self.replace(**moved)

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor field by name (what a test or a replay compares)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }

    def require(self, *names: str, op: str) -> None:
        """Raise a clear error when an op needs a field this batch does not have."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise BatchValidationError(
                f"op '{op}' needs MultimodalBatch.{', '.join(missing)}, which this batch does not have"
            )

    @staticmethod
    def soft_labels(class_indices: Tensor, num_classes: int) -> Tensor:
        """One-hot float labels ``[B, C]`` from class indices ``[B]``."""
        return torch.nn.functional.one_hot(class_indices.long(), num_classes).float()

    # ------------------------------------------------------------------ validation
    def _check_core(self) -> None:
        _expect(self.text_ids, "text_ids", ndim=2, dtypes=_INTEGER, shape_text="[B, Nt]")
        batch, device = self.text_ids.shape[0], self.text_ids.device
        _expect(self.labels, "labels", ndim=2, dtypes=_FLOAT, shape_text="[B, C]",
                sizes={0: batch}, device=device)
        if self.vision is None and self.images is None:
            raise BatchValidationError(
                "MultimodalBatch: expected `vision` [B, Nv, Dv] or `images` [B, 3, H, W], got neither"
            )
        if self.images is not None:
            _expect(self.images, "images", ndim=4, dtypes=_FLOAT, shape_text="[B, C, H, W]",
                    sizes={0: batch}, device=device)
        if self.vision is not None:
            _expect(self.vision, "vision", ndim=3, dtypes=_FLOAT, shape_text="[B, Nv, Dv]",
                    sizes={0: batch}, device=device)
        if not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise BatchValidationError(
                f"MultimodalBatch.num_frames: expected a positive int, got {self.num_frames!r}"
            )
        if self.vision is not None and self.vision.shape[1] % self.num_frames:
            raise BatchValidationError(
                f"MultimodalBatch.num_frames: Nv={self.vision.shape[1]} is not divisible by "
                f"num_frames={self.num_frames} (tokens must be laid out frame-major)"
            )

    def _fill_defaults(self) -> None:
        batch, device = self.batch_size, self.device
        text_shape = self.text_ids.shape
        if self.text_mask is None:
            self.text_mask = torch.ones(text_shape, dtype=torch.bool, device=device)
        if self.text_special is None:
            special = ~self.text_mask if self.text_mask.dtype == torch.bool else None
            if special is not None and self.vocab is not None and self.vocab.special_ids:
                ids = torch.tensor(self.vocab.special_ids, device=device)
                special = special | torch.isin(self.text_ids, ids)
            self.text_special = special
        if self.loss_weight is None:
            self.loss_weight = torch.ones(batch, device=device)
        if self.augmented is None:
            self.augmented = torch.zeros(batch, dtype=torch.bool, device=device)
        if self.vision_first is None:
            self.vision_first = torch.ones(batch, dtype=torch.bool, device=device)
        if self.vision is not None:
            tokens = self.vision.shape[1]
            if self.vision_mask is None:
                self.vision_mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
            if self.vision_masked is None:
                self.vision_masked = torch.zeros(batch, tokens, dtype=torch.bool, device=device)
            if self.vision_positions is None:
                self.vision_positions = raster_positions(tokens // self.num_frames, device) \
                    .repeat(self.num_frames, 1).expand(batch, -1, -1)

    def _check_optional(self) -> None:
        batch, device, nt = self.batch_size, self.device, self.num_text_tokens
        _expect(self.text_mask, "text_mask", ndim=2, dtypes=_BOOL, shape_text="[B, Nt]",
                sizes={0: batch, 1: nt}, device=device)
        _expect(self.text_special, "text_special", ndim=2, dtypes=_BOOL, shape_text="[B, Nt]",
                sizes={0: batch, 1: nt}, device=device)
        _expect(self.loss_weight, "loss_weight", ndim=1, dtypes=_FLOAT, shape_text="[B]",
                sizes={0: batch}, device=device)
        _expect(self.augmented, "augmented", ndim=1, dtypes=_BOOL, shape_text="[B]",
                sizes={0: batch}, device=device)
        _expect(self.vision_first, "vision_first", ndim=1, dtypes=_BOOL, shape_text="[B]",
                sizes={0: batch}, device=device)
        if self.mlm_labels is not None:
            _expect(self.mlm_labels, "mlm_labels", ndim=2, dtypes=_INTEGER, shape_text="[B, Nt]",
                    sizes={0: batch, 1: nt}, device=device)
        if self.text_embeddings is not None:
            _expect(self.text_embeddings, "text_embeddings", ndim=3, dtypes=_FLOAT,
                    shape_text="[B, Nt, D]", sizes={0: batch, 1: nt}, device=device)
        if self.text_embedding_table is not None:
            _expect(self.text_embedding_table, "text_embedding_table", ndim=2, dtypes=_FLOAT,
                    shape_text="[V, D]", device=device)
        if self.mirror_swaps is not None:
            self._check_mirror_swaps()
        if self.vision is None:
            for name in ("vision_mask", "vision_positions", "vision_masked", "saliency", "alignment"):
                if getattr(self, name) is not None:
                    raise BatchValidationError(
                        f"MultimodalBatch.{name}: given without `vision` tokens to describe"
                    )
            return
        nv = self.num_vision_tokens
        _expect(self.vision_mask, "vision_mask", ndim=2, dtypes=_BOOL, shape_text="[B, Nv]",
                sizes={0: batch, 1: nv}, device=device)
        _expect(self.vision_masked, "vision_masked", ndim=2, dtypes=_BOOL, shape_text="[B, Nv]",
                sizes={0: batch, 1: nv}, device=device)
        _expect(self.vision_positions, "vision_positions", ndim=3, dtypes=_INTEGER,
                shape_text="[B, Nv, 2]", sizes={0: batch, 1: nv, 2: 2}, device=device)
        if self.saliency is not None:
            _expect(self.saliency, "saliency", ndim=2, dtypes=_FLOAT, shape_text="[B, Nv]",
                    sizes={0: batch, 1: nv}, device=device)
        if self.alignment is not None:
            _expect(self.alignment, "alignment", ndim=3, dtypes=_BOOL, shape_text="[B, Nt, Nv]",
                    sizes={0: batch, 1: nt, 2: nv}, device=device)

    def _check_mirror_swaps(self) -> None:
        if not isinstance(self.mirror_swaps, MirrorSwaps):
            raise BatchValidationError(
                f"MultimodalBatch.mirror_swaps: expected a MirrorSwaps, got {type(self.mirror_swaps).__name__}")
        classes = self.labels.shape[1]
        if any(index >= classes for pair in self.mirror_swaps.label_pairs for index in pair):
            raise BatchValidationError(
                f"MultimodalBatch.mirror_swaps.label_pairs: class indices must be < C={classes}, "
                f"got {self.mirror_swaps.label_pairs!r}")
        if self.vocab is not None and any(i >= self.vocab.vocab_size for pair in self.mirror_swaps.text_pairs for i in pair):
            raise BatchValidationError(
                f"MultimodalBatch.mirror_swaps.text_pairs: token ids must be < vocab_size={self.vocab.vocab_size}, "
                f"got {self.mirror_swaps.text_pairs!r}")


def raster_positions(tokens: int, device: torch.device | str = "cpu") -> Tensor:
    """(row, col) of ``tokens`` patches in raster order on the squarest grid that holds them."""
    side = math.isqrt(tokens)
    cols = side if side * side == tokens else tokens
    index = torch.arange(tokens, device=device)
    return torch.stack((index // cols, index % cols), dim=-1)


_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTEGER = (torch.int32, torch.int64)
_BOOL = (torch.bool,)


def _expect(tensor, name, *, ndim, dtypes, shape_text, sizes=None, device=None) -> None:
    """Check one field's type, rank, sizes and device; the error names the field and what was expected."""
    expected = f"expected {shape_text} ({'/'.join(str(d).removeprefix('torch.') for d in dtypes)})"
    if not isinstance(tensor, Tensor):
        raise BatchValidationError(f"MultimodalBatch.{name}: {expected}, got {type(tensor).__name__}")
    got = f"got {list(tensor.shape)} ({str(tensor.dtype).removeprefix('torch.')}) on {tensor.device}"
    if tensor.dim() != ndim or tensor.dtype not in dtypes:
        raise BatchValidationError(f"MultimodalBatch.{name}: {expected}, {got}")
    for axis, size in (sizes or {}).items():
        if tensor.shape[axis] != size:
            wanted = shape_text.strip("[]").split(", ")[axis]
            raise BatchValidationError(
                f"MultimodalBatch.{name}: {expected} with {wanted}={size}, {got}"
            )
    if device is not None and tensor.device != device:
        raise BatchValidationError(
            f"MultimodalBatch.{name}: expected a tensor on {device} (the device of text_ids), {got}"
        )
