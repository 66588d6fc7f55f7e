"""Proxy trials (installed as ``autoaug.trainers``).

- `autoaug.trainers.records`: `Example` / `TaskData`, what every task becomes;
- `autoaug.trainers.readers`: the registry of ``--data`` formats (`reader_base.Reader` subclasses:
  `parquet_reader`, `webdataset_reader`, or a user's through the ``autoaug.readers`` entry points),
  and `autoaug.trainers.user_data.load_data`, which reads a file or folder with them;
- `autoaug.trainers.shapes_vqa`: the built-in task ``shapes-vqa`` (generated shape scenes, templated
  questions, answers computed from the scene); `autoaug.trainers.tasks`: what ``--task`` / ``--data``
  name (built-in tasks, ``module:function`` plug-ins);
- `autoaug.trainers.collate`: `to_batch` / `Collator` (examples -> pixel-stage `MultimodalBatch`);
  `autoaug.trainers.data` re-exports the data API in one import;
- `autoaug.trainers.tokenizer`: `TextTokenizer`, a ``tokenizers`` word-level/BPE tokenizer fitted on
  the training texts;
- `autoaug.trainers.model`: `TinyVLM`, one joint transformer over patch and text tokens
  (``encoder`` or ``causal``), with its stages ``to_token_stage`` -> ``embed`` -> ``forward``.

The Lightning module and the Ray Tune trainable build on these (docs/ARCHITECTURE.md).
"""
