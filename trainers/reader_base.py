"""What a data format's reader is: a `Reader` class that turns files into `Row`s.

A reader only parses its format: for each file it yields one `Row` per example (the image as
encoded bytes or a file path, the text, the label as text, the split if the data names one, and a
``source`` such as ``data.parquet: row 3`` that every later error quotes). Everything after that —
splits named by file names, the seeded stratified split, checking labels, decoding and resizing
images, the fingerprint — is shared (`autoaug.trainers.user_data`), so a new format gets it for free.

Register a reader in `autoaug.trainers.readers` (or, from an installed package, through the
``autoaug.readers`` entry point group); docs/ARCHITECTURE.md, "A data format", walks through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

from autoaug.errors import AutoaugInputError

# What a split column or field may say, lower-cased; every spelling maps to one of SPLITS.
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


@dataclass
class Row:
    """One example as a reader found it, before the shared checks and decoding.

    ``image`` holds the encoded image bytes (PNG, JPEG, anything Pillow opens), or is ``None`` when
    ``image_path`` names a file to read them from; ``label`` is the class name as text; ``split`` is
    ``train`` / ``val`` / ``test`` (`split_value`) or ``None`` when the data does not say."""

    image: Optional[bytes]
    image_path: Optional[Path]
    text: str
    label: str
    split: Optional[str]
    source: str  # "FILE: row N" / "SHARD: sample KEY": where an error about this row points


class Reader:
    """Base of a data format. A subclass declares ``name`` (``parquet``), ``suffixes`` (the file
    endings it reads, ``(".parquet",)``) and ``kind`` (how a message names one file, ``Parquet
    file``), has a docstring saying the layout it expects, and implements `read`.

    `read` gets the format's files in sorted order (one file, or every file of a ``--data`` folder
    with one of the suffixes) and returns their rows in file order. Bad input raises
    `AutoaugInputError` with one line naming the file, the row or sample, and what was expected. A
    format whose rows can carry a split ends `read` with `require_all_or_no_splits`.
    """

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    kind: ClassVar[str]

    def read(self, files: list[Path]) -> list[Row]:  # pragma: no cover - every reader overrides
        raise NotImplementedError

    @classmethod
    def phrase(cls) -> str:
        """How messages name this format: ``Parquet file (*.parquet)``."""
        return f"{cls.kind} ({', '.join('*' + suffix for suffix in cls.suffixes)})"


def split_value(value: Any, where: str, what: str) -> str:
    """``value`` as one of train / val / test (`SPLIT_ALIASES`); anything else is refused."""
    split = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
    if split is None:
        raise AutoaugInputError(f"{where}: {what} is {value!r}; expected one of train, val, test")
    return split


def require_all_or_no_splits(rows: Sequence[Row], how: str) -> None:
    """Every row names its split or none does; ``how`` says how the format gives a row its split
    (``"every file a 'split' column"``), for the message.

    Why one rule for every format: with some rows split and others not, there is no honest split —
    the data's own split cannot cover the unsplit rows, and a seeded draw over all rows would
    overrule the split the data names. The first unsplit row is named beside the first split one, so
    the user sees both places."""
    split = next((row for row in rows if row.split is not None), None)
    unsplit = next((row for row in rows if row.split is None), None)
    if split is not None and unsplit is not None:
        raise AutoaugInputError(f"{unsplit.source}: no split, but {split.source} has one; give {how} or none")


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (a quoted value in a message stays short)."""
    return text if len(text) <= limit else text[:limit] + "…"


def short_error(error: BaseException) -> str:
    """One line about an exception from a library (some wrap their message in a tuple of args)."""
    first = error.args[0] if error.args else ""
    while isinstance(first, tuple) and first:
        first = first[0]
    text = str(first) if first else str(error)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
