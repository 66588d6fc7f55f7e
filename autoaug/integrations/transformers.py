"""A policy inside a Hugging Face vision-language model, for training steps only.

    from autoaug import Policy
    from autoaug.integrations.transformers import PolicySFTTrainer
    trainer = PolicySFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor,
                               policy=Policy.load("policy.yaml"))
    trainer.train()

or, in a hand-written loop, ``attached = attach(policy, model)`` and ``attached.collator(collate_fn)``.

Where each stage runs (docs/ARCHITECTURE.md, pixel → token → embedding):

- **pixel** entries run in a collator wrapper (`PolicyDataCollator`) on ``pixel_values``: the
  processor's normalisation is undone (ops work on [0, 1] images), the ops applied, and the result
  normalised again; samples the policy leaves clean keep their exact bits.
- **token** and **embedding** entries run inside the forward of a training step. A forward pre-hook
  on the model computes the vision tokens exactly as the model does (vision tower, feature layer,
  projector: ``get_image_features``), builds one `MultimodalBatch` of them with the text ids, the
  attention mask and the text embeddings, applies the token-stage entries, embeds the (possibly
  rewritten) ids, applies the embedding-stage entries, and hands the model ``inputs_embeds`` (vision
  tokens written at the image placeholder positions, as the model's own ``masked_scatter`` does) and
  the new ``attention_mask`` instead of ``input_ids``/``pixel_values``. The number of placeholders
  must equal the number of vision tokens, so dropping vision tokens goes through the attention mask,
  never through shorter features.

What ops may touch: image placeholders are vision tokens (never text); the supervised answer tokens
(``labels != -100``), padding and the tokenizer's special tokens are protected from text ops, so the
targets the loss reads are never corrupted (``augment_text=False`` protects all text: then only vision
tokens change). Text masking replaces ids by ``mask_token_id`` (default: the pad id; causal LMs have
no [MASK]); its MLM labels are not used, the language-modelling labels stay the targets.

Evaluation is untouched: the hook returns at once when the model is not in training mode, so
``model.eval()`` forwards and ``generate`` are the model's own, bit for bit.

Label-mixing ops (``token_mixup``, ``token_cutmix``, ``mergemix``) mix the targets too, so the model's
built-in loss would train on the unmixed labels: such a policy attaches only with ``mixed_loss=True``
(what `PolicyTrainer`/`PolicySFTTrainer` pass), whose loss is `mixed_lm_loss`, and a forward that
mixed samples while ``labels`` went to the model's own loss raises.
"""

from __future__ import annotations

import itertools
import multiprocessing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from autoaug.batch import IGNORE_INDEX, MultimodalBatch, TextVocabulary
from autoaug.errors import AutoaugInputError
from autoaug.policy.policy import Policy

try:  # the extra: pip install autoaug[transformers]
    import transformers
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "autoaug.integrations.transformers needs the Hugging Face libraries: pip install 'autoaug[transformers]'"
    ) from error

__all__ = [
    "AttachedPolicy", "PolicyDataCollator", "PolicySFTTrainer", "PolicyTrainer", "UnsupportedModelError",
    "attach", "mixed_lm_loss", "supported_families",
]


class UnsupportedModelError(AutoaugInputError):
    """A model family, or an op for a family, that this integration cannot run faithfully."""


# ---------------------------------------------------------------------- model families
def _llava_feature_kwargs(config, kwargs: Mapping[str, Any]) -> dict:
    """LLaVA picks a hidden layer and drops CLIP's CLS token per its config (forward kwargs win)."""
    layer = kwargs.get("vision_feature_layer")
    strategy = kwargs.get("vision_feature_select_strategy")
    chosen = {
        "vision_feature_layer": config.vision_feature_layer if layer is None else layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy if strategy is None else strategy,
    }
    if kwargs.get("image_sizes") is not None:
        chosen["image_sizes"] = kwargs["image_sizes"]
    return chosen


def _no_feature_kwargs(config, kwargs: Mapping[str, Any]) -> dict:
    return {}


def _idefics3_feature_kwargs(config, kwargs: Mapping[str, Any]) -> dict:
    mask = kwargs.get("pixel_attention_mask")
    return {} if mask is None else {"pixel_attention_mask": mask}


# Ops no family here can honour: the image's place in the sequence is fixed by the chat template in
# ``input_ids``, and a padding roll would move the text away from its labels.
_REFUSED_EVERYWHERE = {
    "modality_order_swap": "the image's place in the sequence is fixed by the chat template in input_ids",
    "padding_side": "rolling the text would move input tokens away from their labels (the collator sets padding)",
    "frame_reversal": "these image models have no video frame axis",
    "frame_shuffle": "these image models have no video frame axis",
}


@dataclass(frozen=True)
class ModelFamily:
    """How one Hugging Face VLM family exposes its vision tokens, and what it cannot take.

    ``feature_kwargs`` picks the forward kwargs ``get_image_features`` needs; ``consumed`` are the
    forward kwargs that only feed the image features (dropped once ``inputs_embeds`` replaces them).
    """

    model_types: tuple[str, ...]
    feature_kwargs: Callable[[Any, Mapping[str, Any]], dict]
    consumed: tuple[str, ...] = ()
    refused_ops: Mapping[str, str] = field(default_factory=dict)


_FAMILIES: dict[str, ModelFamily] = {}


def _register_family(family: ModelFamily) -> None:
    for model_type in family.model_types:
        _FAMILIES[model_type] = family


_register_family(ModelFamily(
    model_types=("llava",),
    feature_kwargs=_llava_feature_kwargs,
    consumed=("vision_feature_layer", "vision_feature_select_strategy", "image_sizes"),
    refused_ops=_REFUSED_EVERYWHERE,
))
_register_family(ModelFamily(
    model_types=("paligemma",),
    feature_kwargs=_no_feature_kwargs,
    refused_ops=_REFUSED_EVERYWHERE,
))
_register_family(ModelFamily(
    model_types=("idefics3", "smolvlm"),
    feature_kwargs=_idefics3_feature_kwargs,
    consumed=("pixel_attention_mask",),
    refused_ops=_REFUSED_EVERYWHERE,
))

_QWEN_ORDER_OPS = ("vision_permute_order", "vision_scramble_positions", "vision_block_shuffle", "vision_reversal")
_QWEN_LENGTH_OPS = ("vision_token_dropout", "modality_dropout", "saliency_truncation", "vision_token_budget")
# Families we refuse as a whole, with what is missing.
_REFUSED_FAMILIES: dict[str, str] = {
    model_type: (
        "Qwen2-VL computes its 3-D rotary positions inside forward from input_ids, image_grid_thw and "
        "attention_mask, which this integration replaces by inputs_embeds (position_ids would have to be "
        "rebuilt with get_rope_index); even then order ops (" + ", ".join(_QWEN_ORDER_OPS) + ") are refused "
        "because positions follow image_grid_thw's raster order, and vision length/dropout ops ("
        + ", ".join(_QWEN_LENGTH_OPS) + ") because get_rope_index counts image tokens through attention_mask "
        "and must find image_grid_thw's count"
    )
    for model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
}


def supported_families() -> list[str]:
    """Model types (``config.model_type``) a policy can attach to."""
    return sorted(_FAMILIES)


def _family_of(model) -> ModelFamily:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in _REFUSED_FAMILIES:
        raise UnsupportedModelError(f"model type '{model_type}' is not supported: {_REFUSED_FAMILIES[model_type]}")
    if model_type not in _FAMILIES or not hasattr(getattr(model, "model", None), "get_image_features"):
        raise UnsupportedModelError(
            f"model {type(model).__name__} (model_type {model_type!r}) is not supported: expected a "
            f"*ForConditionalGeneration of model_type {', '.join(supported_families())}"
        )
    return _FAMILIES[model_type]


def _image_token_id(config) -> int:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UnsupportedModelError(f"{type(config).__name__}: has no image_token_id, so image placeholders cannot be found")


# ---------------------------------------------------------------------- the attached policy
class AttachedPolicy:
    """A policy installed into one HF VLM: a forward pre-hook for training steps; `detach` removes it.

    ``step``/``total_steps`` (`set_progress`) drive the policy's schedules and key its randomness, so
    the same step of a seeded policy augments the same way. After each training forward,
    ``last_label_mix`` ``[B, B]`` holds how much of each sample's targets every row now carries (the
    identity when nothing mixed) and ``last_loss_weight`` ``[B]`` the per-sample loss weights:
    `mixed_lm_loss` reads both.
    """

    def __init__(self, policy: Policy, model, *, mixed_loss: bool = False, augment_text: bool = True,
                 mask_token_id: Optional[int] = None, special_token_ids: tuple[int, ...] = ()) -> None:
        if not isinstance(policy, Policy):
            raise AutoaugInputError(f"attach: policy must be an autoaug Policy, got {type(policy).__name__}")
        self.family = _family_of(model)
        refused = [(entry.op, self.family.refused_ops[entry.op]) for entry in policy.config.entries
                   if entry.op in self.family.refused_ops]
        if refused:
            op, reason = refused[0]
            raise UnsupportedModelError(
                f"{policy.source}: op '{op}' cannot run inside {type(model).__name__}: {reason}"
            )
        mixing = [op.name for op in policy.ops if op.mixes_labels]
        if mixing and not mixed_loss:
            raise AutoaugInputError(
                f"{policy.source}: op(s) {', '.join(mixing)} mix labels, and the model's own loss would train "
                "on the unmixed labels: use PolicyTrainer / PolicySFTTrainer (or attach(..., mixed_loss=True) "
                "and autoaug.integrations.transformers.mixed_lm_loss as your loss)"
            )
        self.policy = policy
        self.model = model
        self.mixes_labels = bool(mixing)
        self.augment_text = augment_text
        config = model.config
        self.image_token_id = _image_token_id(config)
        text_config = getattr(config, "text_config", config)
        vocab_size = model.get_input_embeddings().num_embeddings
        pad_id = getattr(text_config, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
        self.vocab = TextVocabulary(
            vocab_size=vocab_size, pad_id=pad_id, mask_id=pad_id if mask_token_id is None else int(mask_token_id),
            special_ids=tuple(int(i) for i in special_token_ids),
        )
        self.step = 0
        self.total_steps = 1
        self.last_label_mix: Optional[Tensor] = None
        self.last_loss_weight: Optional[Tensor] = None
        self._forwards = itertools.count()
        # Only token- and embedding-stage entries act inside the forward; pixel ones are the collator's.
        self.acts_in_forward = bool({"token", "embedding"} & set(policy.stages))
        self._handle = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    # ------------------------------------------------------------------ lifecycle
    def detach(self) -> None:
        """Remove the hook: the model is exactly the model it was before `attach`."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def set_progress(self, step: int, total_steps: int) -> None:
        """Training step and total: schedules, collator workers (shared memory) and randomness follow it."""
        self.step = int(step)
        self.total_steps = max(int(total_steps), 1)
        self.policy.set_progress(self.step, self.total_steps)

    def collator(self, base_collator: Callable[[list], Any], processor=None, *,
                 image_mean=None, image_std=None) -> "PolicyDataCollator":
        """Wrap a collator so the policy's pixel-stage entries augment its ``pixel_values`` (training only)."""
        return PolicyDataCollator(self.policy, base_collator, processor, image_mean=image_mean, image_std=image_std)

    # ------------------------------------------------------------------ inside the forward
    def _before_forward(self, module, args: tuple, kwargs: dict):
        """Forward pre-hook: replace input_ids/pixel_values by augmented inputs_embeds (training only)."""
        if not module.training or not self.acts_in_forward:
            return None
        kwargs = dict(kwargs)
        if args:  # positional input_ids (the first forward parameter of every supported family)
            kwargs.setdefault("input_ids", args[0])
            args = args[1:]
        input_ids, pixel_values = kwargs.get("input_ids"), kwargs.get("pixel_values")
        if input_ids is None or pixel_values is None:
            return None  # a text-only or embeds-only step: nothing the policy can act on
        batch, image_positions = self._build_batch(module, kwargs)
        # One stream per training forward: a seeded policy repeats, consecutive steps differ.
        stream, progress = next(self._forwards), self.policy.progress
        batch = self.policy.apply_stage(batch, "token", stream=stream, progress=progress)
        embed = module.get_input_embeddings()
        batch = batch.replace(text_embeddings=embed(batch.text_ids))
        batch = self.policy.apply_stage(batch, "embedding", stream=stream, progress=progress)
        self.last_label_mix, self.last_loss_weight = batch.labels.detach(), batch.loss_weight.detach()
        mixed = not torch.equal(batch.labels, torch.eye(batch.batch_size, device=batch.device))
        if mixed and kwargs.get("labels") is not None:
            raise AutoaugInputError(
                "a label-mixing op mixed this batch, but `labels` went to the model's own loss, which would "
                "train on the unmixed labels: compute the loss with mixed_lm_loss (PolicyTrainer / PolicySFTTrainer do)"
            )
        inputs_embeds = batch.text_embeddings.masked_scatter(
            image_positions.unsqueeze(-1), batch.vision.to(batch.text_embeddings.dtype))
        attention = batch.text_mask.clone()
        attention[image_positions] = batch.vision_mask.reshape(-1)
        original_mask = kwargs.get("attention_mask")
        for name in ("input_ids", "pixel_values", *self.family.consumed):
            kwargs.pop(name, None)
        kwargs["inputs_embeds"] = inputs_embeds
        kwargs["attention_mask"] = attention.to(original_mask.dtype if original_mask is not None else torch.long)
        return args, kwargs

    def _build_batch(self, module, kwargs: dict) -> tuple[MultimodalBatch, Tensor]:
        """The step's `MultimodalBatch`: projector vision tokens, text ids, masks and protected positions."""
        input_ids = kwargs["input_ids"]
        image_positions = input_ids == self.image_token_id
        counts = image_positions.sum(1)
        tokens_per_sample = int(counts[0])
        if tokens_per_sample == 0 or bool((counts != tokens_per_sample).any()):
            raise AutoaugInputError(
                f"input_ids: every sample of a training batch must hold the same number of image tokens "
                f"(id {self.image_token_id}) for the policy to act on them, got {counts.tolist()}"
            )
        features = module.model.get_image_features(
            pixel_values=kwargs["pixel_values"], **self.family.feature_kwargs(module.config, kwargs), return_dict=True,
        ).pooler_output
        features = torch.cat(list(features), dim=0) if isinstance(features, (list, tuple)) else features
        batch_size = input_ids.shape[0]
        if features.numel() != batch_size * tokens_per_sample * features.shape[-1]:
            raise AutoaugInputError(
                f"the processor wrote {tokens_per_sample} image tokens per sample but the model makes "
                f"{features.numel() // (batch_size * features.shape[-1])} vision features per sample: "
                "the processor's image_seq_length must match the model's vision tower"
            )
        vision = features.reshape(batch_size, tokens_per_sample, features.shape[-1])
        attention_mask = kwargs.get("attention_mask")
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        protected = ~keep | image_positions
        labels = kwargs.get("labels")
        if labels is not None:
            protected = protected | (labels != IGNORE_INDEX)
        if self.vocab.special_ids:
            protected = protected | torch.isin(input_ids, torch.tensor(self.vocab.special_ids, device=input_ids.device))
        if not self.augment_text:
            protected = torch.ones_like(protected)
        batch = MultimodalBatch(
            text_ids=input_ids,
            labels=torch.eye(batch_size, device=input_ids.device),  # row i = how much of sample j's targets i carries
            vision=vision,
            text_mask=keep,
            text_special=protected,
            vocab=self.vocab,
            text_embedding_table=module.get_input_embeddings().weight.detach(),
        )
        return batch, image_positions


def attach(policy: Policy, model, *, mixed_loss: bool = False, augment_text: bool = True,
           mask_token_id: Optional[int] = None, special_token_ids: tuple[int, ...] = ()) -> AttachedPolicy:
    """Install ``policy`` into a Hugging Face VLM for training forwards; ``.detach()`` removes it.

    Raises `UnsupportedModelError` for a model family or an op the family cannot take, and
    `AutoaugInputError` for a label-mixing policy without ``mixed_loss=True`` (see the module docstring).
    """
    return AttachedPolicy(policy, model, mixed_loss=mixed_loss, augment_text=augment_text,
                          mask_token_id=mask_token_id, special_token_ids=special_token_ids)


# ---------------------------------------------------------------------- the mixed loss
def mixed_lm_loss(logits: Tensor, labels: Tensor, label_mix: Optional[Tensor] = None,
                  loss_weight: Optional[Tensor] = None, num_items_in_batch=None) -> Tensor:
    """Causal-LM cross-entropy with mixed targets: ``λ·CE(y_a) + (1−λ)·CE(y_b)`` over answer tokens.

    ``label_mix`` ``[B, B]``: row ``i`` says how much of sample ``j``'s targets sample ``i`` carries
    (``λ`` on the diagonal, ``1 − λ`` at the partner; the identity when nothing mixed). The loss is
    ``Σ_i w_i Σ_j M_ij Σ_t CE(logits_i,t, y_j,t+1) / N`` over the answer tokens of ``y_j``
    (``labels != -100``), with ``N`` the batch's answer-token count (``num_items_in_batch`` under
    gradient accumulation, as HF's own loss). With the identity and unit weights it is exactly HF's
    causal-LM loss; only non-zero pairs are evaluated, so a mixing step costs two CE passes, not B.
    """
    batch_size = logits.shape[0]
    if label_mix is None:
        label_mix = torch.eye(batch_size, device=logits.device)
    if loss_weight is None:
        loss_weight = torch.ones(batch_size, device=logits.device)
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    rows, cols = torch.nonzero(label_mix, as_tuple=True)
    pair_labels = shifted_labels.index_select(0, cols)
    per_token = F.cross_entropy(
        shifted_logits.index_select(0, rows).float().transpose(1, 2), pair_labels,
        ignore_index=IGNORE_INDEX, reduction="none",
    )  # [P, T-1], zero on ignored positions
    pair_weight = label_mix[rows, cols].to(per_token.dtype) * loss_weight.index_select(0, rows).to(per_token.dtype)
    total = (per_token.sum(1) * pair_weight).sum()
    count = (shifted_labels != IGNORE_INDEX).sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


# ---------------------------------------------------------------------- the pixel stage
class PolicyDataCollator:
    """Wraps a HF collator: the policy's pixel-stage entries augment ``pixel_values`` of each batch.

    HF processors normalise images (``(x − mean) / std``); pixel ops work on [0, 1] images, so the
    normalisation is undone for the ops and redone after, and samples the policy did not augment are
    copied back bit for bit. Randomness: a per-batch stream from the DataLoader worker's seed and the
    worker's batch count (as `autoaug.policy.integrations.PolicyCollator`). Only 4-D
    ``pixel_values`` ``[B, 3, H, W]`` (one image per sample) are augmented; other layouts are refused.
    """

    def __init__(self, policy: Policy, base_collator: Callable[[list], Any], processor=None, *,
                 image_mean=None, image_std=None) -> None:
        self.policy = policy
        self.base_collator = base_collator
        image_processor = getattr(processor, "image_processor", processor)
        mean = image_mean if image_mean is not None else getattr(image_processor, "image_mean", None)
        std = image_std if image_std is not None else getattr(image_processor, "image_std", None)
        self._has_pixel_stage = "pixel" in policy.stages
        if self._has_pixel_stage and (mean is None or std is None):
            raise AutoaugInputError(
                "PolicyDataCollator: the policy has pixel-stage entries; pass the processor (or image_mean and "
                "image_std) so its normalisation can be undone for them"
            )
        self.image_mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.image_std = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._count = itertools.count()

    def __call__(self, samples: list):
        out = self.base_collator(samples)
        if not self._has_pixel_stage:
            return out
        pixels = out["pixel_values"]
        if pixels.dim() != 4:
            raise AutoaugInputError(
                f"PolicyDataCollator: pixel-stage ops need pixel_values [B, 3, H, W], got {list(pixels.shape)}"
            )
        mean, std = self.image_mean.to(pixels.device), self.image_std.to(pixels.device)
        images = (pixels.float() * std + mean).clamp(0.0, 1.0)
        batch = MultimodalBatch(
            text_ids=out["input_ids"], labels=torch.eye(pixels.shape[0], device=pixels.device), images=images)
        worker = torch.utils.data.get_worker_info()
        worker_seed = worker.seed if worker is not None else 0
        stream = (worker_seed % 2**40) * 2**20 + next(self._count)
        augmented = self.policy.apply_stage(batch, "pixel", stream=stream, progress=self.policy.progress)
        renormalised = ((augmented.images - mean) / std).to(pixels.dtype)
        changed = augmented.augmented.view(-1, 1, 1, 1)
        out["pixel_values"] = torch.where(changed, renormalised, pixels)
        return out


# ---------------------------------------------------------------------- trainers
class _PolicyTrainerMixin:
    """``policy=`` for a HF Trainer: attach for training, pixel collator on the train loader, mixed loss."""

    def _init_policy(self, policy, augment_text: bool) -> None:
        if isinstance(policy, (str, bytes)) or hasattr(policy, "__fspath__"):
            policy = Policy.load(policy)
        self.autoaug = attach(policy, self.model, mixed_loss=True, augment_text=augment_text,
                              special_token_ids=_special_ids(self.processing_class))

    def get_train_dataloader(self):
        # Only the train loader's collator augments; eval/predict loaders keep the plain one.
        plain = self.data_collator
        self.data_collator = self.autoaug.collator(plain, self.processing_class)
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = plain

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The mixed LM loss (`mixed_lm_loss`) over the answer tokens; the model's own loss is not used."""
        if model.training:
            self.autoaug.set_progress(self.state.global_step, self.state.max_steps)
        labels = inputs["labels"]
        outputs = model(**{key: value for key, value in inputs.items() if key != "labels"}, use_cache=False)
        mixing = self.autoaug.last_label_mix if model.training and self.autoaug.acts_in_forward else None
        weight = self.autoaug.last_loss_weight if mixing is not None else None
        loss = mixed_lm_loss(outputs.logits, labels, mixing, weight, num_items_in_batch)
        if getattr(self.args, "average_tokens_across_devices", False) and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


def _special_ids(processing_class) -> tuple[int, ...]:
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    return tuple(getattr(tokenizer, "all_special_ids", ()) or ())


class PolicyTrainer(_PolicyTrainerMixin, transformers.Trainer):
    """`transformers.Trainer` that trains with an autoaug policy (``policy=`` a `Policy`, a file or a preset)."""

    def __init__(self, *args, policy, augment_text: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_policy(policy, augment_text)


try:
    from trl import SFTTrainer as _SFTTrainer
except ImportError:  # pragma: no cover - TRL is part of the extra, but Trainer alone works without it
    _SFTTrainer = None

if _SFTTrainer is not None:
    class PolicySFTTrainer(_PolicyTrainerMixin, _SFTTrainer):
        """TRL `SFTTrainer` that trains with an autoaug policy (``policy=`` a `Policy`, a file or a preset)."""

        def __init__(self, *args, policy, augment_text: bool = True, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._init_policy(policy, augment_text)
else:  # pragma: no cover
    PolicySFTTrainer = None
