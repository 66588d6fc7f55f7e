"""A user's data (``--data PATH``) as a `TaskData`: find the files, read them with the registered
reader of their format, then the steps every format shares.

- **Files**: one file, or every file under a folder whose suffix a reader is registered for
  (`autoaug.trainers.readers`: ``*.parquet``, ``*.tar`` built in); one format per folder.
- **Splits**: a folder in the Hugging Face Hub's layout — one file or folder per split, named
  ``train``, ``validation`` / ``val`` / ``dev``, ``test`` (``data/train-00000-of-00001.parquet``,
  ``test/part-0.parquet``) — keeps those splits (``split_record["method"] == "files"``); a split no
  file names is drawn from the train files. A folder whose names name some splits but not train, or
  name a split for some files only, is refused. Otherwise a split column / field the rows carry is
  used (``"column"``); without one the rows are split by a seeded, stratified draw
  (``"stratified"``, with the seed, the fractions and the counts).
- **Images** are decoded with Pillow, converted to RGB and resized (bilinear, no aspect-preserving
  crop) to the model's ``image_size``.
- **Fingerprint**: a sha256 over the rows used: raw image bytes, text, label and split, in file order.

Bad input raises `AutoaugInputError` with one line naming the file, the column or row, and what was
expected.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from autoaug.errors import AutoaugInputError, ParameterError

from . import readers
from .reader_base import Reader, Row, short_error
from .records import SPLITS, Example, TaskData


def load_data(
    path: str | Path,
    image_size: int = 32,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> TaskData:
    """Read a file or folder of a registered format into a `TaskData` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise AutoaugInputError(f"{path}: no such file or folder (expected a {readers.formats()}, "
                                "or a folder of them)")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ParameterError(name, f"expected a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise AutoaugInputError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    reader, files = _reader_and_files(path)
    named = _splits_named_by_files(path, files) if path.is_dir() else None
    if named is None:
        rows, by_files = reader().read(files), None
    else:
        rows = []
        for split, group in named.items():
            rows += _with_file_split(reader().read(group), split)
        by_files = {split: [str(file.relative_to(path)) for file in group] for split, group in named.items()}
    if not rows:
        raise AutoaugInputError(f"{path}: no rows found")
    return _build_task(path, reader.name, rows, image_size, seed, val_fraction, test_fraction, by_files)


def _reader_and_files(path: Path) -> tuple[type[Reader], list[Path]]:
    """The one registered reader of ``path``'s files, and the files (sorted) it reads."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and readers.reader_for(p) is not None)
        if not files:
            raise AutoaugInputError(f"{path}: the folder holds no file of a known format (expected a "
                                    f"{readers.formats()})")
    found = {readers.reader_for(p) for p in files}
    if found == {None}:
        raise AutoaugInputError(f"{path}: expected a {readers.formats()}")
    if len(found) > 1:
        first = {reader.name: next(p for p in files if readers.reader_for(p) is reader) for reader in found}
        mixed = ", ".join(f"{file.relative_to(path)} ({name})" for name, file in sorted(first.items()))
        raise AutoaugInputError(f"{path}: the folder mixes formats ({mixed}); keep one format")
    return found.pop(), files


# ---------------------------------------------------------------------- splits named by file names
# The Hugging Face Hub's layout: one file (or folder) per split, e.g. data/train-00000-of-00001.parquet.
_FILE_SPLIT_WORDS = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
                     "dev": "val", "test": "test", "testing": "test"}


def _split_named_by(relative: Path) -> Optional[str]:
    """The split a file's path names: a folder called after a split, or a split word as the first
    ``-``/``_``/``.``-separated part of the file name (``validation-00000-of-00001.parquet``)."""
    for folder in relative.parent.parts:
        if folder.lower() in _FILE_SPLIT_WORDS:
            return _FILE_SPLIT_WORDS[folder.lower()]
    first = re.split(r"[-_.]", relative.name.lower(), maxsplit=1)[0]
    return _FILE_SPLIT_WORDS.get(first)


def _splits_named_by_files(root: Path, files: list[Path]) -> Optional[dict[str, list[Path]]]:
    """``{split: files}`` when the folder's file names name the splits, ``None`` when none does.

    Names that name some splits but not train, or files that name no split beside files that do,
    are refused: which rows to train on would be a guess.
    """
    named = {file: _split_named_by(file.relative_to(root)) for file in files}
    if not any(named.values()):
        return None
    unnamed = [str(file.relative_to(root)) for file, split in named.items() if split is None]
    if unnamed:
        raise AutoaugInputError(
            f"{root}: some file names name a split (train, validation/val/dev, test) and {unnamed[0]} does not; "
            "name every file after its split or none")
    groups: dict[str, list[Path]] = {}
    for file, split in named.items():
        groups.setdefault(split, []).append(file)
    if "train" not in groups:
        found = ", ".join(f"{split}: {groups[split][0].relative_to(root)}" for split in SPLITS if split in groups)
        raise AutoaugInputError(
            f"{root}: the file names name the splits {found} but not train; name the training files "
            "train-*.parquet (or put them in a train/ folder)")
    return {split: groups[split] for split in SPLITS if split in groups}


def _with_file_split(rows: list[Row], split: str) -> list[Row]:
    """Rows of files named after ``split``; a split column or field that says otherwise is refused."""
    for row in rows:
        if row.split is not None and row.split != split:
            raise AutoaugInputError(f"{row.source}: split is {row.split!r} but the file name says {split!r}")
        row.split = split
    return rows


def _file_split_assignment(rows: list[Row], seed: int, fractions: dict[str, float]) -> tuple[list[str], dict]:
    """The files' splits; a split no file names is drawn from the train files (seeded, stratified)."""
    assignment = [row.split for row in rows]
    missing = {split: fractions[split] for split in ("val", "test") if split not in assignment}
    record: dict = {"method": "files"}
    if missing:
        train = [index for index, split in enumerate(assignment) if split == "train"]
        drawn = _stratified_split([rows[i].label for i in train], seed, missing.get("val", 0.0), missing.get("test", 0.0))
        for index, split in zip(train, drawn):
            assignment[index] = split
        record["drawn_from_train"] = {"splits": sorted(missing), "seed": seed,
                                      **{f"{split}_fraction": value for split, value in missing.items()}}
    return assignment, record


# ---------------------------------------------------------------------- building the task
def _build_task(path: Path, kind: str, rows: list[Row], image_size: int, seed: int,
                val_fraction: float, test_fraction: float, by_files: Optional[dict] = None) -> TaskData:
    if by_files is not None:
        assignment, split_record = _file_split_assignment(rows, seed, {"val": val_fraction, "test": test_fraction})
        split_record["files"] = by_files
    elif rows[0].split is not None:
        assignment = [row.split for row in rows]
        split_record: dict = {"method": "column", "column": "split"}
    else:
        assignment = _stratified_split([row.label for row in rows], seed, val_fraction, test_fraction)
        split_record = {"method": "stratified", "seed": seed, "val_fraction": val_fraction,
                        "test_fraction": test_fraction}
    counts = {split: assignment.count(split) for split in SPLITS}
    split_record["counts"] = counts
    for split in SPLITS:
        if counts[split] == 0:
            raise AutoaugInputError(
                f"{path}: the {split} split is empty ({len(rows)} rows: " +
                ", ".join(f"{s} {counts[s]}" for s in SPLITS) + "); every split needs rows")
    train_labels = {row.label for row, split in zip(rows, assignment) if split == "train"}
    for row, split in zip(rows, assignment):
        if row.label not in train_labels:
            raise AutoaugInputError(
                f"{row.source}: label {row.label!r} appears in the {split} split but never in train "
                "(every class needs training examples)")
    classes = tuple(sorted(train_labels, key=_label_sort_key))
    class_index = {name: i for i, name in enumerate(classes)}
    digest = hashlib.sha256()
    splits: dict[str, list[Example]] = {split: [] for split in SPLITS}
    for row, split in zip(rows, assignment):
        data = row.image if row.image is not None else _read_bytes(row)
        image = _decode_image(data, image_size, row.source)
        for part in (data, row.text.encode(), row.label.encode(), split.encode()):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
        splits[split].append(Example(image=image, text=row.text, label=class_index[row.label],
                                     source=row.source))
    return TaskData(
        name=path.name,
        classes=classes,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        image_size=image_size,
        fingerprint=digest.hexdigest(),
        split_record=split_record,
        source=f"{kind}:{path}",
    )


def _stratified_split(labels: list[str], seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Per label, a seeded shuffle; the first ``round(n * test)`` go to test, the next
    ``round(n * val)`` to val, the rest to train (at least one per class stays in train)."""
    rng = np.random.default_rng(seed)
    assignment = ["train"] * len(labels)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    for label in sorted(by_label, key=_label_sort_key):
        indices = np.asarray(by_label[label])[rng.permutation(len(by_label[label]))]
        n = len(indices)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        while n_test + n_val > n - 1 and (n_test or n_val):  # keep one for training
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for index in indices[:n_test]:
            assignment[index] = "test"
        for index in indices[n_test:n_test + n_val]:
            assignment[index] = "val"
    return assignment


def _label_sort_key(label: str):
    """Numeric labels sort as numbers ("2" < "10"), others alphabetically after them."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _read_bytes(row: Row) -> bytes:
    try:
        return row.image_path.read_bytes()
    except OSError as error:
        raise AutoaugInputError(
            f"{row.source}: cannot read image file {row.image_path} ({short_error(error)})") from error


def _decode_image(data: bytes, image_size: int, where: str) -> Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # UnidentifiedImageError, OSError on truncated data, ...
        raise AutoaugInputError(
            f"{where}: the image could not be decoded (expected PNG/JPEG bytes; {short_error(error)})") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
