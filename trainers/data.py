"""The data API in one import: records, built-in tasks, a user's data and the collate step.

Every task, built-in or the user's, becomes a `TaskData`: ``train`` / ``val`` / ``test`` lists of
`Example` (a uint8 image ``[3, S, S]``, a text, a class index) plus the class names, a record of how
the split was made and a data fingerprint. The training loop only ever sees `TaskData` and calls
`to_batch` (or a `Collator` in a ``DataLoader``) to get a pixel-stage `MultimodalBatch`.

Where each part lives (each module imports only the ones above it; none imports this one):

- `autoaug.trainers.records`: `Example`, `TaskData`, `SPLITS`;
- `autoaug.trainers.reader_base`, `autoaug.trainers.readers` and one module per format
  (`parquet_reader`, `webdataset_reader`): the reader registry of ``--data`` formats;
- `autoaug.trainers.user_data`: `load_data` (files -> rows -> splits, decoded images, fingerprint);
- `autoaug.trainers.shapes_vqa`: the built-in task; `autoaug.trainers.tasks`: `load_task`,
  `load_task_or_data`, `require_task_or_data`, `import_task_plugin`;
- `autoaug.trainers.collate`: `to_batch`, `Collator`.
"""

from __future__ import annotations

from .collate import Collator, to_batch
from .reader_base import Row
from .records import DEFAULT_MIRROR_WORDS, SPLITS, Example, TaskData
from .tasks import TASKS, load_task, load_task_or_data, require_task_or_data
from .user_data import load_data
from .webdataset_reader import IMAGE_KEYS

__all__ = [
    "Collator", "to_batch", "Row", "DEFAULT_MIRROR_WORDS", "SPLITS", "Example", "TaskData", "TASKS",
    "load_task", "load_task_or_data", "require_task_or_data", "load_data", "IMAGE_KEYS",
]
