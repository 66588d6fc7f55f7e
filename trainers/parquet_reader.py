"""The Parquet reader: the Hugging Face ``datasets`` image layout, read with pyarrow.

Columns ``image`` = ``struct{bytes, path}`` (``bytes`` may be null when ``path`` names a file,
relative to the Parquet file; a plain binary column is read as the bytes), ``text`` (string),
``label`` (string, or int — with the ``ClassLabel`` names of the ``huggingface`` schema metadata when
present), optional ``split`` with values ``train`` / ``val`` / ``test`` (``validation`` is read as
``val``). Every file has a split column or none does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugInputError

from .reader_base import Reader, Row, clip, require_all_or_no_splits, short_error, split_value

# Arrow type checks (pyarrow.types.<name>) a struct field of `image` may pass; null: every value is null.
_BINARY_TYPES = ("is_binary", "is_large_binary", "is_fixed_size_binary", "is_binary_view", "is_null")
_STRING_TYPES = ("is_string", "is_large_string", "is_string_view", "is_null")


class ParquetReader(Reader):
    """Parquet files in the Hugging Face ``datasets`` image layout (see the module docstring)."""

    name = "parquet"
    suffixes = (".parquet",)
    kind = "Parquet file"

    def read(self, files: list[Path]) -> list[Row]:
        rows: list[Row] = []
        for file in files:
            rows += _rows_of(_read_table(file), file)
        require_all_or_no_splits(rows, "every file a 'split' column")
        return rows


def _read_table(file: Path):
    """The file's table, its schema checked column by column (one clear line per mistake)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError on a bad file
        raise AutoaugInputError(f"{file}: not a readable Parquet file ({short_error(error)})") from error
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
    return table


def _rows_of(table, file: Path) -> list[Row]:
    """The rows of one checked table; a null cell, a missing image file or a label outside the
    ``ClassLabel`` names is refused with its row number."""
    import pyarrow as pa

    label_names = _class_label_names(table.schema, file) if pa.types.is_integer(table.schema.field("label").type) \
        else None
    has_split = "split" in table.schema.names
    images = table.column("image").to_pylist()
    texts = table.column("text").to_pylist()
    labels = table.column("label").to_pylist()
    splits = table.column("split").to_pylist() if has_split else [None] * table.num_rows
    rows: list[Row] = []
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
        rows.append(Row(image=data, image_path=image_path, text=text, label=str(label),
                        split=split_value(split, where, "column 'split'") if has_split else None,
                        source=where))
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
                                f"must be a list of strings, got {clip(repr(names))}")
    return [str(name) for name in names]
