"""A Hugging Face LLaVA as the proxy trial's model (``--model llava-tiny`` or ``--model PATH``).

`HFVisionLanguageProxy` wraps a `LlavaForConditionalGeneration` behind the stage interface the proxy
trial drives (`TinyVLM`'s: ``to_token_stage``, ``embed``, ``forward``, ``predict``, ``with_saliency``),
so the Lightning module, the policy callback, the search and the records run unchanged:

- token stage: ``vision`` holds the projector's vision tokens ``[B, Nv, D]`` (vision tower, feature
  layer and projector, exactly as the model computes them), text ids are the task tokenizer's ids
  mapped into the model's vocabulary;
- embedding stage: ``text_embeddings`` from the language model's own embedding table;
- forward: the joint sequence ``[vision tokens, text tokens]`` (LLaVA's image-first layout, masks
  from the batch) through the language model and ``lm_head``; the answer is the next token after the
  last kept text token. Training is generative on the answer token; the class logits are that
  position's log-probabilities of the answer tokens (the full-vocabulary softmax, then restricted to
  the answers: the loss is the answer token's cross-entropy renormalised over the answer set, and
  accuracy is the exact match of the arg-max answer).

Models (`MODELS`, a registry): ``llava-tiny`` is the issue's 41k-parameter LLaVA built from config
(CLIP tower with 64 vision tokens, Llama decoder of width 32), its vocabulary the task tokenizer's
ids, then one token per answer, then the image token. ``PATH`` is a local checkpoint directory
(``config.json`` of model_type ``llava``, weights and tokenizer saved with ``save_pretrained``); the
task's words and answers are mapped to the first piece of the checkpoint tokenizer's encoding, and
answers must map to distinct ids. Nothing is downloaded: a path that is not a local model directory
is refused.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoaug.batch import MultimodalBatch
from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.ops.saliency import distinctiveness

from .records import TaskData
from .model import StagedVLM, VLMOutput, kept_saliency
from .tokenizer import TextTokenizer

BUILTIN_MODEL = "tiny-vlm"  # the default: trainers.model.TinyVLM, not this module
TINY_VISION_TOKENS_PER_SIDE = 8


def _tiny_llava(tokenizer: TextTokenizer, task: TaskData):
    """The issue's tiny LLaVA, sized to the task: vocabulary = task words + answers + image token."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    if task.image_size % TINY_VISION_TOKENS_PER_SIDE:
        raise ParameterError(
            "model", f"llava-tiny: image size {task.image_size} is not a multiple of {TINY_VISION_TOKENS_PER_SIDE}")
    text_vocab = tokenizer.vocab_size
    answer_ids = list(range(text_vocab, text_vocab + task.num_classes))
    image_token = text_vocab + task.num_classes
    config = LlavaConfig(
        text_config={"model_type": "llama", "vocab_size": image_token + 1, "hidden_size": 32,
                     "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 4, "max_position_embeddings": 256, "pad_token_id": tokenizer.pad_id},
        vision_config={"model_type": "clip_vision_model", "image_size": task.image_size,
                       "patch_size": task.image_size // TINY_VISION_TOKENS_PER_SIDE, "hidden_size": 32,
                       "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "projection_dim": 32},
        image_token_index=image_token, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=TINY_VISION_TOKENS_PER_SIDE ** 2,
    )
    model = LlavaForConditionalGeneration(config)
    return HFVisionLanguageProxy(model, text_id_map=torch.arange(text_vocab), answer_ids=answer_ids,
                                 image_mean=(0.5,) * 3, image_std=(0.5,) * 3, name="llava-tiny")


def _local_checkpoint(path: str, tokenizer: TextTokenizer, task: TaskData):
    """A user's LLaVA checkpoint on disk, the task's words mapped through its own tokenizer."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    directory, _ = check_model_directory(path)
    # from_pretrained returns the model in eval mode, and Lightning keeps each submodule's mode as it
    # finds it: without train() a checkpoint would train with its dropout off.
    model = LlavaForConditionalGeneration.from_pretrained(directory, local_files_only=True).train()
    processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    hf_tokenizer = getattr(processor, "tokenizer", processor)
    unknown = hf_tokenizer.unk_token_id if hf_tokenizer.unk_token_id is not None else hf_tokenizer.pad_token_id or 0

    def first_piece(text: str) -> int:
        ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        return int(ids[0]) if ids else int(unknown)

    words = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    text_id_map = torch.full((tokenizer.vocab_size,), int(unknown), dtype=torch.long)
    for word, index in words.items():
        text_id_map[index] = first_piece(word)
    answer_ids = [first_piece(" " + answer) for answer in task.classes]
    if len(set(answer_ids)) != len(answer_ids):
        raise ParameterError(
            "model", f"{path}: the answers {list(task.classes)} do not start with distinct tokens of the "
            "checkpoint's tokenizer, so an arg-max answer cannot be matched exactly")
    image_processor = getattr(processor, "image_processor", None)
    mean = getattr(image_processor, "image_mean", None) or (0.5,) * 3
    std = getattr(image_processor, "image_std", None) or (0.5,) * 3
    return HFVisionLanguageProxy(model, text_id_map=text_id_map, answer_ids=answer_ids, image_mean=mean,
                                 image_std=std, name=str(directory))


# Built-in models by ``--model`` name, and the checkpoint loaders by the ``model_type`` of a folder's
# config.json: the proxy trial drives a model through the stage interface, which only LLaVA's
# layout (vision tower, projector, language model over [vision tokens, text]) is wired to here.
MODELS: dict[str, Callable[[TextTokenizer, TaskData], nn.Module]] = {"llava-tiny": _tiny_llava}
CHECKPOINT_TYPES: dict[str, Callable[[str, TextTokenizer, TaskData], nn.Module]] = {"llava": _local_checkpoint}


def check_model_directory(path: str) -> tuple[Path, str]:
    """A local HF checkpoint directory and its supported ``model_type`` (`CHECKPOINT_TYPES`), or a
    one-line error naming what is wrong and what is supported."""
    directory = Path(path)
    config_file = directory / "config.json"
    if not directory.is_dir() or not config_file.is_file():
        raise ParameterError(
            "model", f"{path}: not a local model directory (expected a folder with config.json saved by "
            f"save_pretrained; built-in models: {', '.join(sorted(MODELS))}; nothing is downloaded)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ParameterError("model", f"{path}: config.json cannot be read ({error})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or model_type not in CHECKPOINT_TYPES:
        raise ParameterError(
            "model", f"{path}: model_type {model_type!r} is not supported by the proxy trial (supported "
            f"checkpoint model types: {', '.join(sorted(CHECKPOINT_TYPES))}; built-in models: "
            f"{', '.join(sorted((*MODELS, BUILTIN_MODEL)))})")
    return directory, model_type


def model_builder(model: Optional[str]) -> Optional[Callable[[TextTokenizer, TaskData], nn.Module]]:
    """The ``build_model(tokenizer, task)`` for ``--model`` (None: the built-in tiny VLM).

    Checked here, before any training, so a bad ``--model`` fails at once with exit 2.
    """
    if model is None or model == BUILTIN_MODEL:
        return None
    if model in MODELS:
        _require_transformers(model)
        return MODELS[model]
    _require_transformers(model)
    _, model_type = check_model_directory(model)
    return functools.partial(CHECKPOINT_TYPES[model_type], model)


def _require_transformers(model: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ParameterError(
            "model", f"{model}: needs the Hugging Face extra: pip install 'autoaug[transformers]'") from None


class HFVisionLanguageProxy(StagedVLM):
    """A LLaVA behind the proxy trial's stage interface (see the module docstring)."""

    def __init__(self, model, *, text_id_map: Tensor, answer_ids: list[int], image_mean, image_std,
                 name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.register_buffer("text_id_map", text_id_map.long(), persistent=False)
        self.register_buffer("answer_ids", torch.tensor(answer_ids, dtype=torch.long), persistent=False)
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def _embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def to_token_stage(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Pixel -> token stage: the projector's vision tokens ``[B, Nv, D]`` with fresh keep-masks."""
        batch.require("images", op=f"{self.name}.to_token_stage")
        config = self.model.config
        pixels = (batch.images.float() - self.image_mean) / self.image_std
        features = self.model.model.get_image_features(
            pixel_values=pixels.to(self.model.dtype), vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy, return_dict=True,
        ).pooler_output
        vision = torch.stack(list(features)) if isinstance(features, (list, tuple)) else features
        tokens = vision.shape[:2]
        return batch.replace(
            vision=vision,
            vision_mask=torch.ones(tokens, dtype=torch.bool, device=vision.device),
            vision_masked=torch.zeros(tokens, dtype=torch.bool, device=vision.device),
            vision_positions=_raster(tokens, vision.device),
            text_embedding_table=self.text_embedding_table(),
        )

    def text_embedding_table(self) -> Tensor:
        """The task tokens' rows of the model's embedding table, detached (text substitution reads it)."""
        return self._embeddings().weight.detach().index_select(0, self.text_id_map)

    def embed(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Token -> embedding stage: text embeddings from the language model's table."""
        if batch.vision is None:
            batch = self.to_token_stage(batch)
        ids = self.text_id_map.index_select(0, batch.text_ids.reshape(-1)).view_as(batch.text_ids)
        return batch.replace(text_embeddings=self._embeddings()(ids))

    def forward(self, batch: MultimodalBatch) -> VLMOutput:
        """Embedding-stage batch -> answer-token logits ``[B, C]`` (log-probabilities) and saliency."""
        if batch.text_embeddings is None:
            raise AutoaugInputError(f"{self.name}.forward: expected an embedding-stage batch (call embed first)")
        embeds = torch.cat((batch.vision.to(batch.text_embeddings.dtype), batch.text_embeddings), dim=1)
        keep = torch.cat((batch.vision_mask, batch.text_mask), dim=1)
        hidden = self.model.model.language_model(inputs_embeds=embeds, attention_mask=keep.long()).last_hidden_state
        # The answer follows the last kept text token (a sample without text answers after the image).
        positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
        last = torch.where(keep, positions, torch.zeros_like(positions)).amax(1)
        answer_hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        log_probs = F.log_softmax(self.model.lm_head(answer_hidden).float(), dim=-1)
        saliency = kept_saliency(distinctiveness(batch.vision.detach(), batch.vision_mask), batch.vision_mask)
        return VLMOutput(log_probs.index_select(1, self.answer_ids), saliency)

    @torch.no_grad()
    def with_saliency(self, batch: MultimodalBatch) -> MultimodalBatch:
        """The token-stage batch with ``saliency`` (distinctiveness of the vision tokens: cheap proxy)."""
        return batch.replace(saliency=self(self.embed(batch)).saliency.to(batch.vision.dtype))


def _raster(tokens: torch.Size, device) -> Tensor:
    from autoaug.batch import raster_positions

    return raster_positions(tokens[1], device).expand(tokens[0], -1, -1)
