"""Where a policy plugs into other training libraries (optional extras).

- `autoaug.integrations.transformers` (``pip install autoaug[transformers]``): a policy inside a Hugging
  Face vision-language model for training steps only, a pixel-stage collator wrapper, and the mixed
  language-modelling loss of label-mixing ops as a `transformers.Trainer` / TRL `SFTTrainer` subclass.
"""
