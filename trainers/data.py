"""Example records, the readers of a user's data, and the collate step into a `MultimodalBatch`.

Every task, built-in or the user's, becomes a `TaskData`: ``train`` / ``val`` / ``test`` lists of
`Example` (a uint8 image ``[3, S, S]``, a text, a class index) plus the class names, a record of how
the split was made and a data fingerprint. The training loop only ever sees `TaskData` and calls
`to_batch` (or a `Collator` in a ``DataLoader``) to get a pixel-stage `MultimodalBatch`.

User data (DESIGN §9, §11 ``--data PATH``):

- **Parquet** in the Hugging Face ``datasets`` image layout, one file or a folder of ``*.parquet``:
  columns ``image`` = ``struct{bytes, path}`` (``bytes`` may be null when ``path`` names a file,
  relative to the Parquet file), ``text`` (string), ``label`` (string, or int — with the
  ``ClassLabel`` names of the ``huggingface`` schema metadata when present), optional ``split`` with
  values ``train`` / ``val`` / ``test`` (``validation`` is read as ``val``). Read with pyarrow.
  A folder in the Hub's layout — one file or folder per split, named ``train``, ``validation`` /
  ``val`` / ``dev``, ``test`` (``data/train-00000-of-00001.parquet``, ``test/part-0.parquet``) — keeps
  those splits (``split_record["method"] == "files"``); a split no file names is drawn from the train
  files. A folder whose names name some splits but not train, or name a split for some files only,
  is refused.
- **WebDataset** ``.tar`` shards (a folder of them, or one shard): per sample ``png`` / ``jpg`` /
  ``jpeg``, ``txt``, and ``cls`` (the label as text) or ``json`` (``{"label": ..., "split": ...}``).
  Read with the ``webdataset`` library.

Images are decoded with Pillow, converted to RGB and resized (bilinear, no aspect-preserving crop)
to the model's ``image_size``. Without split-named files or a split column the rows are split by a seeded, stratified draw
(``split_record`` says so, with the seed, the fractions and the counts). The fingerprint is a sha256
over the rows used: raw image bytes, text, label and split, in file order.

Bad input raises `AutoaugInputError` with one line naming the file, the column or row, and what was
expected.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from autoaug.batch import MirrorSwaps, MultimodalBatch
from autoaug.errors import AutoaugInputError

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
IMAGE_KEYS: tuple[str, ...] = ("png", "jpg", "jpeg")
# Words whose meaning a left-right mirror of the image exchanges. English questions and answers use
# these; a task in another language, or one where "left" means something else, declares its own.
DEFAULT_MIRROR_WORDS: tuple[tuple[str, str], ...] = (("left", "right"),)


# ---------------------------------------------------------------------- records
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


# ---------------------------------------------------------------------- entry points
TASKS: tuple[str, ...] = ("shapes-vqa",)


def load_task(name: str, seed: int = 0, image_size: int = 32, **options) -> TaskData:
    """A built-in task by name (``shapes-vqa``); ``options`` go to its generator (split sizes...)."""
    if name == "shapes-vqa":
        from .shapes_vqa import make_shapes_vqa

        return make_shapes_vqa(seed=seed, image_size=image_size, **options)
    raise AutoaugInputError(f"--task: unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")


def load_task_or_data(
    task: Optional[str] = None,
    data: Optional[str | Path] = None,
    seed: int = 0,
    image_size: int = 32,
    **options,
) -> TaskData:
    """What ``--task NAME`` / ``--data PATH`` resolve to (exactly one of them)."""
    if (task is None) == (data is None):
        raise AutoaugInputError("give exactly one of --task NAME or --data PATH")
    if task is not None:
        return load_task(task, seed=seed, image_size=image_size, **options)
    return load_data(data, image_size=image_size, seed=seed, **options)


def load_data(
    path: str | Path,
    image_size: int = 32,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> TaskData:
    """Read a Parquet file/folder or WebDataset shards into a `TaskData` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise AutoaugInputError(f"{path}: no such file or folder (--data expects a Parquet file or "
                                "folder, or a folder of WebDataset .tar shards)")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise AutoaugInputError(f"{name}: expected a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise AutoaugInputError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and _reader_of(p) is not None)
        if not files:
            raise AutoaugInputError(f"{path}: the folder holds no *.parquet file and no *.tar shard")
    kinds = {_reader_of(p) for p in files}
    if kinds == {None}:
        raise AutoaugInputError(f"{path}: expected a .parquet file or a .tar WebDataset shard")
    if len(kinds) > 1:
        raise AutoaugInputError(f"{path}: the folder mixes Parquet files and .tar shards; keep one format")
    kind = kinds.pop()
    read = _read_parquet if kind == "parquet" else _read_webdataset
    named = _splits_named_by_files(path, files) if path.is_dir() else None
    if named is None:
        rows, by_files = read(files), None
    else:
        rows = []
        for split, group in named.items():
            rows += _with_file_split(read(group), split)
        by_files = {split: [str(file.relative_to(path)) for file in group] for split, group in named.items()}
    if not rows:
        raise AutoaugInputError(f"{path}: no rows found")
    return _build_task(path, kind, rows, image_size, seed, val_fraction, test_fraction, by_files)


# ---------------------------------------------------------------------- collate
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
    images = torch.stack([example.image for example in examples])
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    ids, mask = tokenizer.encode([example.text for example in examples])
    labels = torch.tensor([example.label for example in examples], dtype=torch.long)
    batch = MultimodalBatch(
        text_ids=ids,
        text_mask=mask,
        text_special=~mask | tokenizer.special_mask(ids),
        labels=MultimodalBatch.soft_labels(labels, num_classes),
        images=images,
        vocab=tokenizer.vocabulary,
        mirror_swaps=mirror_swaps,
    )
    return batch if device is None else batch.to(device)


class Collator:
    """``collate_fn`` for a ``torch.utils.data.DataLoader`` over a list of `Example` (picklable)."""

    def __init__(self, tokenizer, num_classes: int, mirror_swaps: Optional[MirrorSwaps] = None) -> None:
        self.tokenizer = tokenizer
        self.num_classes = num_classes
        self.mirror_swaps = mirror_swaps

    def __call__(self, examples: Sequence[Example]) -> MultimodalBatch:
        return to_batch(examples, self.tokenizer, self.num_classes, mirror_swaps=self.mirror_swaps)


# ---------------------------------------------------------------------- reading rows
@dataclass
class _Row:
    image: Optional[bytes]
    image_path: Optional[Path]
    text: str
    label: str
    split: Optional[str]
    source: str  # "FILE: row N" / "SHARD: sample KEY"


def _reader_of(path: Path) -> Optional[str]:
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix == ".tar":
        return "webdataset"
    return None


def _read_parquet(files: list[Path]) -> list[_Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[_Row] = []
    with_split: dict[Path, bool] = {}
    for file in files:
        try:
            table = pq.read_table(file)
        except Exception as error:  # pyarrow raises ArrowInvalid / OSError on a bad file
            raise AutoaugInputError(f"{file}: not a readable Parquet file ({_short(error)})") from error
        names = table.schema.names
        for column in ("image", "text", "label"):
            if column not in names:
                raise AutoaugInputError(
                    f"{file}: missing column '{column}' (expected image = struct{{bytes, path}}, "
                    f"text, label, optional split; found {', '.join(names) or 'no columns'})")
        image_type = table.schema.field("image").type
        if pa.types.is_struct(image_type):
            fields = {image_type.field(i).name: image_type.field(i).type for i in range(image_type.num_fields)}
            if not fields.keys() & {"bytes", "path"}:
                raise AutoaugInputError(
                    f"{file}: column 'image' must be struct{{bytes, path}}, got {image_type}")
            # A path held as a number, or bytes held as text, would fail row by row far from here.
            for name, allowed, expected in (("bytes", _BINARY_TYPES, "binary"), ("path", _STRING_TYPES, "string")):
                if name in fields and not any(getattr(pa.types, check)(fields[name]) for check in allowed):
                    raise AutoaugInputError(f"{file}: column 'image' field '{name}' must be {expected}, "
                                            f"got {fields[name]} (expected image = struct{{bytes: binary, path: string}})")
        elif not pa.types.is_binary(image_type) and not pa.types.is_large_binary(image_type):
            raise AutoaugInputError(f"{file}: column 'image' must be struct{{bytes, path}}, got {image_type}")
        text_type = table.schema.field("text").type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            raise AutoaugInputError(f"{file}: column 'text' must hold strings, got {text_type}")
        label_type = table.schema.field("label").type
        if not (pa.types.is_integer(label_type) or pa.types.is_string(label_type)
                or pa.types.is_large_string(label_type)):
            raise AutoaugInputError(f"{file}: column 'label' must hold strings or ints, got {label_type}")
        label_names = _class_label_names(table.schema, file) if pa.types.is_integer(label_type) else None
        has_split = "split" in names
        with_split[file] = has_split
        images = table.column("image").to_pylist()
        texts = table.column("text").to_pylist()
        labels = table.column("label").to_pylist()
        splits = table.column("split").to_pylist() if has_split else [None] * table.num_rows
        for index, (image, text, label, split) in enumerate(zip(images, texts, labels, splits)):
            where = f"{file}: row {index}"
            if isinstance(image, dict):
                data, ref = image.get("bytes"), image.get("path")
            else:
                data, ref = image, None
            image_path = None
            if data is None:
                if not ref:
                    raise AutoaugInputError(f"{where}: column 'image' has neither bytes nor a path")
                image_path = Path(ref) if Path(ref).is_absolute() else file.parent / ref
                if not image_path.is_file():
                    raise AutoaugInputError(f"{where}: column 'image' path {ref!r} is not a file")
            if text is None:
                raise AutoaugInputError(f"{where}: column 'text' is null (expected a string)")
            if label is None:
                raise AutoaugInputError(f"{where}: column 'label' is null (expected a string or int)")
            if label_names is not None:
                if not 0 <= label < len(label_names):
                    raise AutoaugInputError(
                        f"{where}: column 'label' {label} is outside the ClassLabel names "
                        f"(0..{len(label_names) - 1})")
                label = label_names[label]
            rows.append(_Row(image=data, image_path=image_path, text=text, label=str(label),
                             split=_split_value(split, where, "column 'split'") if has_split else None,
                             source=where))
    if len(set(with_split.values())) > 1:
        lacking = next(f for f, has in with_split.items() if not has)
        raise AutoaugInputError(
            f"{lacking}: missing column 'split' (other files have one; give every file a split "
            "column or none)")
    return rows


def _class_label_names(schema, file: Path) -> Optional[list[str]]:
    """``ClassLabel`` names of ``label`` from the Hugging Face schema metadata, if any."""
    metadata = schema.metadata or {}
    raw = metadata.get(b"huggingface")
    if not raw:
        return None
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
        label = features.get("label", {})
        names = label.get("names")
        is_class_label = label.get("_type") == "ClassLabel"
    except (ValueError, AttributeError):
        return None
    if not is_class_label or not names:
        return None
    if not isinstance(names, list) or not all(isinstance(name, (str, int)) and not isinstance(name, bool)
                                              for name in names):
        raise AutoaugInputError(f"{file}: column 'label': the ClassLabel names in the Hugging Face metadata "
                                f"must be a list of strings, got {_clip(repr(names))}")
    return [str(name) for name in names]


def _read_webdataset(shards: list[Path]) -> list[_Row]:
    import webdataset as wds

    rows: list[_Row] = []
    any_split, no_split = None, None
    for shard in shards:
        dataset = wds.WebDataset(str(shard), shardshuffle=False, nodesplitter=None,
                                 workersplitter=None, empty_check=False)
        try:
            samples = list(dataset)
        except Exception as error:  # tarfile.ReadError and friends
            raise AutoaugInputError(
                f"{shard}: not a readable WebDataset tar shard ({_short(error)})") from error
        for sample in samples:
            key = sample.get("__key__", "?")
            where = f"{shard}: sample {key!r}"
            image_key = next((k for k in IMAGE_KEYS if k in sample), None)
            if image_key is None:
                raise AutoaugInputError(f"{where}: no image (expected a .png or .jpg member); "
                                        f"found {', '.join(_members(sample)) or 'nothing'}")
            if "txt" not in sample:
                raise AutoaugInputError(f"{where}: no .txt member (the text); found "
                                        f"{', '.join(_members(sample))}")
            meta: dict = {}
            if "json" in sample:
                try:
                    meta = json.loads(sample["json"])
                except ValueError as error:
                    raise AutoaugInputError(
                        f"{where}: .json member is not valid JSON ({_short(error)})") from error
                if not isinstance(meta, dict):
                    raise AutoaugInputError(f"{where}: .json member must be an object with 'label'")
            if "cls" in sample:
                label = _utf8(sample["cls"], where, ".cls").strip()
            elif "label" in meta:
                label = meta["label"]
                if isinstance(label, bool) or not isinstance(label, (str, int)):
                    raise AutoaugInputError(f"{where}: .json 'label' is {_clip(json.dumps(label))}; "
                                            "expected a string or an integer")
                label = str(label)
            else:
                raise AutoaugInputError(f"{where}: no label (expected a .cls member or a .json "
                                        "member with 'label')")
            if label == "":
                raise AutoaugInputError(f"{where}: the label is empty")
            split = meta.get("split")
            if split is None and "split" in sample:
                split = _utf8(sample["split"], where, ".split").strip()
            if split is None:
                no_split = no_split or where
            else:
                any_split = any_split or where
            rows.append(_Row(
                image=sample[image_key], image_path=None,
                text=_utf8(sample["txt"], where, ".txt"), label=label,
                split=_split_value(split, where, "split") if split is not None else None,
                source=where,
            ))
    if any_split and no_split:
        raise AutoaugInputError(f"{no_split}: no split (other samples have one; give every sample a "
                                "split or none)")
    return rows


# Arrow type checks (pyarrow.types.<name>) a struct field of `image` may pass; null: every value is null.
_BINARY_TYPES = ("is_binary", "is_large_binary", "is_fixed_size_binary", "is_binary_view", "is_null")
_STRING_TYPES = ("is_string", "is_large_string", "is_string_view", "is_null")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _members(sample: dict) -> list[str]:
    return sorted(k for k in sample if not k.startswith("__"))


def _utf8(data: bytes, where: str, member: str) -> str:
    try:
        return data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
    except UnicodeDecodeError as error:
        raise AutoaugInputError(f"{where}: {member} member is not UTF-8 text ({_short(error)})") from error


def _split_value(value: Any, where: str, what: str) -> str:
    split = _SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
    if split is None:
        raise AutoaugInputError(f"{where}: {what} is {value!r}; expected one of train, val, test")
    return split


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


def _with_file_split(rows: list["_Row"], split: str) -> list["_Row"]:
    """Rows of files named after ``split``; a split column or field that says otherwise is refused."""
    for row in rows:
        if row.split is not None and row.split != split:
            raise AutoaugInputError(f"{row.source}: split is {row.split!r} but the file name says {split!r}")
        row.split = split
    return rows


def _file_split_assignment(rows: list["_Row"], seed: int, fractions: dict[str, float]) -> tuple[list[str], dict]:
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
def _build_task(path: Path, kind: str, rows: list[_Row], image_size: int, seed: int,
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


def _read_bytes(row: _Row) -> bytes:
    try:
        return row.image_path.read_bytes()
    except OSError as error:
        raise AutoaugInputError(
            f"{row.source}: cannot read image file {row.image_path} ({_short(error)})") from error


def _decode_image(data: bytes, image_size: int, where: str) -> Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # UnidentifiedImageError, OSError on truncated data, ...
        raise AutoaugInputError(
            f"{where}: the image could not be decoded (expected PNG/JPEG bytes; {_short(error)})") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _short(error: BaseException) -> str:
    """One line about an exception from a library (some wrap their message in a tuple of args)."""
    first = error.args[0] if error.args else ""
    while isinstance(first, tuple) and first:
        first = first[0]
    text = str(first) if first else str(error)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
