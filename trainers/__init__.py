"""Proxy trials (installed as ``autoaug.trainers``).

- `autoaug.trainers.shapes_vqa`: the built-in task ``shapes-vqa`` (generated shape scenes, templated
  questions, answers computed from the scene);
- `autoaug.trainers.data`: `Example` / `TaskData` records, the Parquet (Hugging Face image layout) and
  WebDataset readers of a user's data, and `to_batch` / `Collator` (examples -> pixel-stage
  `MultimodalBatch`);
- `autoaug.trainers.tokenizer`: `TextTokenizer`, a ``tokenizers`` word-level/BPE tokenizer fitted on
  the training texts;
- `autoaug.trainers.model`: `TinyVLM`, one joint transformer over patch and text tokens
  (``encoder`` or ``causal``), with its stages ``to_token_stage`` -> ``embed`` -> ``forward``.

The Lightning module and the Ray Tune trainable build on these.
"""
