"""The WebDataset reader: ``.tar`` shards read with the ``webdataset`` library.

Per sample: an image member ``png`` / ``jpg`` / ``jpeg``, ``txt`` (the text), and ``cls`` (the label
as text) or ``json`` (``{"label": ..., "split": ...}``); a ``split`` member also gives the split.
Every sample has a split or none does.
"""

from __future__ import annotations

import json
from pathlib import Path

from autoaug.errors import AutoaugInputError

from .reader_base import Reader, Row, clip, require_all_or_no_splits, short_error, split_value

IMAGE_KEYS: tuple[str, ...] = ("png", "jpg", "jpeg")


class WebDatasetReader(Reader):
    """WebDataset ``.tar`` shards: ``png``/``jpg`` + ``txt`` + ``cls`` or ``json`` per sample."""

    name = "webdataset"
    suffixes = (".tar",)
    kind = "WebDataset shard"

    def read(self, files: list[Path]) -> list[Row]:
        rows = [_row_of(sample, f"{shard}: sample {sample.get('__key__', '?')!r}")
                for shard in files for sample in _samples(shard)]
        require_all_or_no_splits(rows, "every sample a split (a .split member or 'split' in its .json)")
        return rows


def _samples(shard: Path) -> list[dict]:
    import webdataset as wds

    # One process reads every shard in order: no shuffling, no splitting across nodes or workers.
    dataset = wds.WebDataset(str(shard), shardshuffle=False, nodesplitter=None,
                             workersplitter=None, empty_check=False)
    try:
        return list(dataset)
    except Exception as error:  # tarfile.ReadError and friends
        raise AutoaugInputError(
            f"{shard}: not a readable WebDataset tar shard ({short_error(error)})") from error


def _row_of(sample: dict, where: str) -> Row:
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if image_key is None:
        raise AutoaugInputError(f"{where}: no image (expected a .png or .jpg member); "
                                f"found {', '.join(_members(sample)) or 'nothing'}")
    if "txt" not in sample:
        raise AutoaugInputError(f"{where}: no .txt member (the text); found "
                                f"{', '.join(_members(sample))}")
    meta = _json_member(sample, where)
    label = _label(sample, meta, where)
    split = meta.get("split")
    if split is None and "split" in sample:
        split = _utf8(sample["split"], where, ".split").strip()
    return Row(
        image=sample[image_key], image_path=None,
        text=_utf8(sample["txt"], where, ".txt"), label=label,
        split=split_value(split, where, "split") if split is not None else None,
        source=where,
    )


def _json_member(sample: dict, where: str) -> dict:
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
    except ValueError as error:
        raise AutoaugInputError(f"{where}: .json member is not valid JSON ({short_error(error)})") from error
    if not isinstance(meta, dict):
        raise AutoaugInputError(f"{where}: .json member must be an object with 'label'")
    return meta


def _label(sample: dict, meta: dict, where: str) -> str:
    """The ``cls`` member, else the ``json`` member's ``label`` (a string or an integer), as text."""
    if "cls" in sample:
        label = _utf8(sample["cls"], where, ".cls").strip()
    elif "label" in meta:
        label = meta["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise AutoaugInputError(f"{where}: .json 'label' is {clip(json.dumps(label))}; "
                                    "expected a string or an integer")
        label = str(label)
    else:
        raise AutoaugInputError(f"{where}: no label (expected a .cls member or a .json "
                                "member with 'label')")
    if label == "":
        raise AutoaugInputError(f"{where}: the label is empty")
    return label


def _members(sample: dict) -> list[str]:
    return sorted(k for k in sample if not k.startswith("__"))


def _utf8(data: bytes, where: str, member: str) -> str:
    try:
        return data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
    except UnicodeDecodeError as error:
        raise AutoaugInputError(f"{where}: {member} member is not UTF-8 text ({short_error(error)})") from error
