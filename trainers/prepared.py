"""A task tokenised and stacked into tensors once: what every trial of a search trains on.

`run_training` used to collate Python `Example` objects into a batch at every step (tokenising the
texts again each time) and every search trial regenerated the task and refitted the tokenizer. A
`PreparedTask` does that work once — per search in the driver, shipped to the trial workers through
Ray's object store — and a step's batch is a handful of ``index_select`` calls on stacked tensors.

A search that holds out a confirm part (`PreparedTask.with_confirm_split`) splits the validation split
once, by the data seed, into ``val`` (what calibration and trials validate on) and ``confirm`` (what
only the confirmation validates on), so the final decision is made on examples selection never saw.

Data order is part of the run's seed and of the epoch only (`TensorBatches`): epoch ``e`` of a run
with seed ``s`` always sees the same permutation, whatever policy trains and whether the run was
restored from a checkpoint (Population Based Training) — the common random numbers a paired
comparison of policies needs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor

from autoaug.batch import MirrorSwaps, MultimodalBatch
from autoaug.errors import ParameterError

from .records import SPLITS, Example, TaskData
from .tokenizer import TextTokenizer

QUESTION_ONLY_GREY = 128  # the constant image a question-only run sees (uint8)
VALIDATION_SPLIT = "val"  # what `autoaug train`, calibration and search trials validate on
CONFIRM_SPLIT = "confirm"  # the held-out part of validation only the confirmation validates on
DEFAULT_CONFIRM_FRACTION = 0.5
TRAIN_HOLDOUT_SPLIT = "train_holdout"  # training examples a calibration run holds out (`with_train_holdout`)


@dataclass(frozen=True)
class TensorSplit:
    """One split as stacked tensors (CPU): images uint8 ``[N, 3, S, S]``, text ids / keep-mask /
    special-position mask ``[N, L]`` and class indices ``[N]``."""

    images: Tensor
    text_ids: Tensor
    text_mask: Tensor
    text_special: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: Tensor, num_classes: int, vocabulary,
              mirror_swaps: Optional[MirrorSwaps] = None) -> MultimodalBatch:
        """The pixel-stage batch of the rows ``index`` (float images in [0, 1], one-hot labels)."""
        images = self.images.index_select(0, index)
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        return MultimodalBatch(
            text_ids=self.text_ids.index_select(0, index),
            text_mask=self.text_mask.index_select(0, index),
            text_special=self.text_special.index_select(0, index),
            labels=MultimodalBatch.soft_labels(self.labels.index_select(0, index), num_classes),
            images=images,
            vocab=vocabulary,
            mirror_swaps=mirror_swaps,
        )


@dataclass
class PreparedTask:
    """A `TaskData` with its fitted tokenizer and every split stacked as tensors.

    ``build_model`` is a plug-in's own model builder (``None``: the tiny VLM)."""

    data: TaskData
    tokenizer: TextTokenizer
    splits: dict[str, TensorSplit]
    build_model: Optional[Callable] = None
    question_only: bool = False
    mirror_swaps: Optional[MirrorSwaps] = None  # None: resolved from the task's mirror words
    confirm_record: Optional[dict] = None  # how validation was carved (`with_confirm_split`); None: not carved

    def __post_init__(self) -> None:
        if self.mirror_swaps is None:
            self.mirror_swaps = self.data.mirror_swaps(self.tokenizer)

    @classmethod
    def build(cls, data: TaskData, build_model: Optional[Callable] = None) -> "PreparedTask":
        """Fit the tokenizer on the training texts and stack every split."""
        tokenizer = TextTokenizer.fit(data.texts("train"))
        return cls(data, tokenizer, {split: stack_examples(data.split(split), tokenizer) for split in SPLITS},
                   build_model)

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def without_images(self) -> "PreparedTask":
        """The same task with every image (all splits) replaced by one constant grey image: a model
        trained and evaluated on it can only use the question (the calibration's question-only run)."""
        splits = {name: replace(split, images=torch.full_like(split.images, QUESTION_ONLY_GREY))
                  for name, split in self.splits.items()}
        return replace(self, splits=splits, question_only=True)

    def with_confirm_split(self, fraction: float = DEFAULT_CONFIRM_FRACTION, seed: int = 0) -> "PreparedTask":
        """The same task with its validation split carved in two: ``confirm`` (``fraction`` of the
        validation examples, in (0, 1)) and ``val`` (the rest, what selection validates on).

        Stratified by label (each class splits in the same proportion, rounded per class) and
        deterministic in ``seed`` (the data seed: a resumed search carves the same examples). Every other
        split, the tokenizer and `data` (the full validation split, its fingerprint) are unchanged."""
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
            raise ParameterError("confirm_fraction", f"expected a fraction in (0, 1), got {fraction!r}")
        if self.confirm_record is not None:
            raise ParameterError("confirm_fraction", "the validation split is already carved")
        validation = self.splits[VALIDATION_SPLIT]
        confirm, select = _stratified_carve(validation.labels, fraction, _order_seed(seed, -1))  # epoch -1: no training order uses it
        if len(confirm) == 0 or len(select) == 0:
            raise ParameterError("confirm_fraction", f"{fraction:g} of {len(validation)} validation examples leaves "
                                 f"{len(select)} to select on and {len(confirm)} to confirm on; both need at least one")
        splits = {**self.splits, VALIDATION_SPLIT: _rows(validation, select), CONFIRM_SPLIT: _rows(validation, confirm)}
        record = {"fraction": fraction, "seed": seed, "val": len(select), "confirm": len(confirm),
                  "confirm_rows": confirm.tolist()}
        return replace(self, splits=splits, confirm_record=record)

    def with_train_holdout(self, fraction: float, seed: int = 0) -> "PreparedTask":
        """The same task with ``fraction`` of its training examples (stratified by label, deterministic
        in ``seed``) moved to `TRAIN_HOLDOUT_SPLIT`: data from the training distribution the model never
        trains on. Calibration compares training accuracy with it, not with validation, so a shift
        between training and validation data is not read as overfitting (`autoaug.search.calibration`)."""
        train = self.splits["train"]
        held, kept = self.train_holdout_rows(fraction, seed)
        return replace(self, splits={**self.splits, "train": _rows(train, kept), TRAIN_HOLDOUT_SPLIT: _rows(train, held)})

    def train_holdout_rows(self, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Rows ``(held out, kept)`` of the training split that `with_train_holdout` carves."""
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
            raise ParameterError("holdout_fraction", f"expected a fraction in (0, 1), got {fraction!r}")
        labels = self.splits["train"].labels
        held, kept = _stratified_carve(labels, fraction, _order_seed(seed, -2))  # epoch -2: apart from the confirm carve
        if len(held) == 0 or len(kept) == 0:
            raise ParameterError("holdout_fraction", f"{fraction:g} of {len(labels)} training examples leaves "
                                 f"{len(kept)} to train on and {len(held)} to hold out; both need at least one")
        return held, kept

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                epoch: Callable[[], int] = lambda: 0) -> "TensorBatches":
        return TensorBatches(self, split, batch_size, shuffle=shuffle, seed=seed, epoch=epoch)


class TensorBatches:
    """An iterable of pixel-stage batches of one split (what Lightning gets as a dataloader).

    With ``shuffle``, epoch ``e`` (read from ``epoch()`` when iteration starts) is ordered by a
    permutation drawn from a generator seeded with ``(seed, e)`` only."""

    def __init__(self, task: PreparedTask, split: str, batch_size: int, *, shuffle: bool, seed: int,
                 epoch: Callable[[], int]) -> None:
        self.task = task
        self.split = task.splits[split]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[MultimodalBatch]:
        rows = len(self.split)
        if self.shuffle:
            generator = torch.Generator().manual_seed(_order_seed(self.seed, int(self.epoch())))
            order = torch.randperm(rows, generator=generator)
        else:
            order = torch.arange(rows)
        vocabulary = self.task.tokenizer.vocabulary
        for start in range(0, rows, self.batch_size):
            yield self.split.batch(order[start:start + self.batch_size], self.task.num_classes, vocabulary,
                                   self.task.mirror_swaps)


def _rows(split: TensorSplit, rows: Tensor) -> TensorSplit:
    return TensorSplit(*(tensor.index_select(0, rows) for tensor in
                         (split.images, split.text_ids, split.text_mask, split.text_special, split.labels)))


def _order_seed(seed: int, epoch: int) -> int:
    # Distinct streams per (seed, epoch); the large odd multiplier keeps nearby seeds from sharing orders.
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def stack_examples(examples: Sequence[Example], tokenizer: TextTokenizer) -> TensorSplit:
    """Examples as one `TensorSplit`: images stacked as they are, texts tokenised (``text_special`` is
    the padding plus the tokenizer's special ids, positions no op may touch)."""
    if not examples:
        size = (0, tokenizer.max_length)
        return TensorSplit(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(size, dtype=torch.long),
                           torch.zeros(size, dtype=torch.bool), torch.zeros(size, dtype=torch.bool),
                           torch.zeros(0, dtype=torch.long))
    ids, mask = tokenizer.encode([example.text for example in examples])
    return TensorSplit(
        images=torch.stack([example.image for example in examples]),
        text_ids=ids,
        text_mask=mask,
        text_special=~mask | tokenizer.special_mask(ids),
        labels=torch.tensor([example.label for example in examples], dtype=torch.long),
    )


def _stratified_carve(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Rows ``(carved, rest)`` (each sorted): ``fraction`` of each class's rows (rounded per class),
    drawn by a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    carved_rows = []
    for label in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        carved_rows.append(rows[:round(fraction * len(rows))])
    carved = torch.sort(torch.cat(carved_rows)).values if carved_rows else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[carved] = False
    return carved, torch.nonzero(keep).flatten()
