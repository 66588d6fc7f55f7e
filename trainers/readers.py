"""The reader registry: a file's suffix maps to the `Reader` of its data format, never an if-chain.

Built in: `ParquetReader` (``*.parquet``, the Hugging Face ``datasets`` image layout) and
`WebDatasetReader` (``*.tar`` shards). A new format is one module with a `Reader` subclass
(`autoaug.trainers.reader_base`) plus one line in `BUILT_IN` below; a format that lives in the
user's own installed package registers through the ``autoaug.readers`` entry point group instead::

    # the user's pyproject.toml
    [project.entry-points."autoaug.readers"]
    csv_images = "my_package.csv_reader:CsvImagesReader"

Entry points are loaded the first time a file's reader is looked up (`reader_for`), so
``autoaug train --data images.csv`` finds the format without any change to autoaug.
(``importlib.metadata`` entry points: https://packaging.python.org/en/latest/specifications/entry-points/.)
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugError

from .parquet_reader import ParquetReader
from .reader_base import Reader
from .webdataset_reader import WebDatasetReader

ENTRY_POINT_GROUP = "autoaug.readers"
BUILT_IN: tuple[type[Reader], ...] = (ParquetReader, WebDatasetReader)

_REGISTRY: dict[str, type[Reader]] = {}
_BY_SUFFIX: dict[str, type[Reader]] = {}
_entry_points_loaded = False


def register(cls: type[Reader]) -> type[Reader]:
    """Add a reader under ``cls.name`` (usable as a class decorator). Names and suffixes are unique."""
    if not (isinstance(cls, type) and issubclass(cls, Reader)):
        raise TypeError(f"a data reader must be a subclass of autoaug.trainers.reader_base.Reader, got {cls!r}")
    for attribute in ("name", "suffixes", "kind"):
        if not hasattr(cls, attribute):
            raise TypeError(f"reader class {cls.__name__} does not declare `{attribute}`")
    if not (cls.__doc__ or "").strip():
        raise TypeError(f"reader {cls.name}: needs a docstring stating the layout it reads")
    if not cls.suffixes or not all(isinstance(s, str) and s.startswith(".") for s in cls.suffixes):
        raise TypeError(f"reader {cls.name}: suffixes must be file endings such as '.parquet', got {cls.suffixes!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"reader name '{cls.name}' is registered twice")
    for suffix in cls.suffixes:
        owner = _BY_SUFFIX.get(suffix)
        if owner is not None and owner is not cls:
            raise TypeError(f"reader {cls.name}: suffix {suffix} is already read by '{owner.name}'")
    _REGISTRY[cls.name] = cls
    _BY_SUFFIX.update(dict.fromkeys(cls.suffixes, cls))
    return cls


def reader_for(path: Path) -> Optional[type[Reader]]:
    """The reader of ``path``'s format by its suffix (None: no registered format ends so)."""
    _load_entry_points()
    return _BY_SUFFIX.get(Path(path).suffix)


def names() -> list[str]:
    """Registered reader names in registration order (built-ins first)."""
    _load_entry_points()
    return list(_REGISTRY)


def formats() -> str:
    """The registered formats for a message: ``Parquet file (*.parquet) or WebDataset shard (*.tar)``."""
    _load_entry_points()
    phrases = [cls.phrase() for cls in _REGISTRY.values()]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _load_entry_points() -> None:
    """Register the readers installed packages declare (once per process). A plug-in that cannot be
    imported or is not a valid reader stops the run (exit 1): it is the installation, not the input."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register(entry.load())
        except Exception as error:  # noqa: BLE001 - an installed plug-in's import error or bad class
            raise AutoaugError(f"data reader plug-in '{entry.name}' ({entry.value}, entry point group "
                               f"{ENTRY_POINT_GROUP}) cannot be used: {type(error).__name__}: "
                               f"{str(error).strip()}") from error
    _entry_points_loaded = True


for _reader in BUILT_IN:
    register(_reader)
