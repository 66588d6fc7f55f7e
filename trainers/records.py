"""The records every task becomes: `Example` (one image-text example) and `TaskData` (a task's splits).

Built-in tasks (`autoaug.trainers.shapes_vqa`), a user's data (`autoaug.trainers.user_data`) and a
``--task module:function`` plug-in all produce a `TaskData`; the training loop only ever sees that.
This module imports nothing else of the trainers, so every producer can import it without a circle
(docs/ARCHITECTURE.md, "Where to add things").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from autoaug.batch import MirrorSwaps
from autoaug.errors import AutoaugInputError

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Words whose meaning a left-right mirror of the image exchanges. English questions and answers use
# these; a task in another language, or one where "left" means something else, declares its own.
DEFAULT_MIRROR_WORDS: tuple[tuple[str, str], ...] = (("left", "right"),)


@dataclass(frozen=True, eq=False)
class Example:
    """One image-text example: ``image`` uint8 ``[3, S, S]``, ``text``, ``label`` (index into the
    task's ``classes``). Generated tasks keep their ``scene``; ``source`` says where it came from
    (``file: row N`` for user data); ``meta`` holds anything else (the question spec of shapes-vqa)."""

    image: Tensor
    text: str
    label: int
    scene: Any = None
    source: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class TaskData:
    """A task's three splits of `Example`, its class names and where the data came from."""

    name: str
    classes: tuple[str, ...]
    train: list[Example]
    val: list[Example]
    test: list[Example]
    image_size: int
    fingerprint: str
    split_record: dict
    source: str = ""
    mirror_words: tuple[tuple[str, str], ...] = DEFAULT_MIRROR_WORDS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def mirror_swaps(self, tokenizer) -> MirrorSwaps:
        """The text ids and answer classes that mirroring an image exchanges (``mirror_words``).

        A pair counts for the text only when both words are single tokens of ``tokenizer`` (a word
        split into pieces cannot be swapped in place), and for the answers only when both are class
        names (compared case-insensitively)."""
        classes = {name.lower(): index for index, name in enumerate(self.classes)}
        text_pairs, label_pairs = [], []
        for first, second in self.mirror_words:
            ids = tokenizer.single_token_id(first), tokenizer.single_token_id(second)
            if None not in ids and ids[0] != ids[1]:
                text_pairs.append(ids)
            if first.lower() in classes and second.lower() in classes:
                label_pairs.append((classes[first.lower()], classes[second.lower()]))
        return MirrorSwaps(text_pairs=tuple(text_pairs), label_pairs=tuple(label_pairs))

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise AutoaugInputError(f"split must be one of {', '.join(SPLITS)}; got {name!r}")
        return getattr(self, name)

    def texts(self, split: str = "train") -> list[str]:
        """The texts of one split (fit the tokenizer on ``texts("train")``)."""
        return [example.text for example in self.split(split)]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "sizes": {split: len(self.split(split)) for split in SPLITS},
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
            "split_record": self.split_record,
        }
