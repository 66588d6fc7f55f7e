"""A policy inside a Hugging Face VLM (autoaug.integrations.transformers), on a tiny LLaVA built from config.

Nothing is downloaded: the model, the word-level tokenizer and the image processor are made here.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

from PIL import Image  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor  # noqa: E402

from autoaug import Policy  # noqa: E402
from autoaug.errors import AutoaugInputError  # noqa: E402
from autoaug.integrations.transformers import (  # noqa: E402
    PolicyDataCollator, UnsupportedModelError, attach, mixed_lm_loss,
)
from conftest import one_error_line, run_cli  # noqa: E402

IMAGE_TOKEN = 0
IMAGE_TOKENS = 64  # (32 / 4)^2 patches; CLIP's CLS token is dropped ("default")
WORDS = ["<image>", "<pad>", "<s>", "</s>", "<unk>", "what", "shape", "color", "is", "it", "?",
         "circle", "square", "triangle", "red", "green", "blue"]


def tiny_llava_config() -> LlavaConfig:
    """The issue's tiny LLaVA: 41k parameters, 64 vision tokens of width 32."""
    return LlavaConfig(
        text_config={"model_type": "llama", "vocab_size": 99, "hidden_size": 32, "intermediate_size": 37,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                     "max_position_embeddings": 128, "pad_token_id": 1},
        vision_config={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 4, "hidden_size": 32,
                       "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "projection_dim": 32},
        image_token_index=IMAGE_TOKEN, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=IMAGE_TOKENS,
    )


def tiny_llava() -> LlavaForConditionalGeneration:
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(tiny_llava_config())


def tiny_processor() -> LlavaProcessor:
    from transformers import CLIPImageProcessorPil, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>",
                                   extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=4, image_token="<image>",
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def fixed_inputs(batch_size: int = 4, length: int = 80, seed: int = 0) -> dict:
    """Image tokens at 1..64, a prompt, an answer (labels) at 70..77 and right padding from 78 on sample 0."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 99, (batch_size, length), generator=generator)
    input_ids[:, 1:1 + IMAGE_TOKENS] = IMAGE_TOKEN
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 78:] = 0
    input_ids[0, 78:] = 1
    labels = torch.full_like(input_ids, -100)
    labels[:, 70:78] = input_ids[:, 70:78]
    pixel_values = torch.randn(batch_size, 3, 32, 32, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values,
            "labels": labels}


def one_entry_policy(op: str, magnitude: float, **extra) -> Policy:
    return Policy.from_dict({"schema_version": 1, "seed": 3, "clean_fraction": extra.pop("clean_fraction", 0.0),
                             "entries": [{"op": op, "p": 1.0, "magnitude": magnitude, **extra}]})


def capture_language_model_inputs(model) -> tuple[list, object]:
    """Record the inputs_embeds and attention_mask the language model receives."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["inputs_embeds"].detach().clone(), kwargs["attention_mask"].clone()))

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------------- training only, clean detach
def test_training_step_with_policy_leaves_eval_logits_bit_identical():
    inputs = fixed_inputs()
    plain, augmented = tiny_llava(), tiny_llava()
    attached = attach(Policy.load("moderate"), augmented)
    for model in (plain, augmented):
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: weights equal, forwards compared
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
    plain.train(), augmented.train()
    assert not torch.equal(plain(**inputs).logits, augmented(**inputs).logits)  # training forwards differ
    plain.eval(), augmented.eval()
    eval_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    with torch.no_grad():
        assert torch.equal(plain(**eval_inputs).logits, augmented(**eval_inputs).logits)
    attached.detach()
    augmented.train()
    assert torch.equal(plain(**inputs).logits, augmented(**inputs).logits)  # detached: the model's own forward


def test_vision_token_dropout_zeroes_exactly_the_dropped_attention_positions():
    model = tiny_llava().train()
    policy = one_entry_policy("vision_token_dropout", 1.0)
    attached = attach(policy, model)
    seen, handle = capture_language_model_inputs(model)
    inputs = fixed_inputs()
    model(**inputs)
    handle.remove()
    # Replay the op on the same batch the hook built: the expected keep-mask of the vision tokens.
    policy.record = True
    attached_batch, image_positions = attached._build_batch(model, dict(inputs))
    replayed = policy.apply_stage(attached_batch, "token", stream=0, progress=0.0)
    _, attention = seen[0]
    expected = inputs["attention_mask"].clone().bool()
    expected[image_positions] = replayed.vision_mask.reshape(-1)
    assert torch.equal(attention.bool(), expected)
    dropped = ~replayed.vision_mask
    assert 0 < int(dropped.sum()) < dropped.numel()
    assert torch.equal(attention[:, 1 + IMAGE_TOKENS:], inputs["attention_mask"][:, 1 + IMAGE_TOKENS:])


def test_embedding_noise_without_text_augmentation_changes_only_image_token_positions():
    model = tiny_llava().train()
    inputs = fixed_inputs()
    seen, handle = capture_language_model_inputs(model)
    model(**inputs)  # clean reference
    attached = attach(one_entry_policy("embedding_noise", 1.0), model, augment_text=False)
    model(**inputs)
    handle.remove()
    attached.detach()
    (clean, clean_mask), (noisy, noisy_mask) = seen
    changed = (clean != noisy).any(-1)
    image_positions = inputs["input_ids"] == IMAGE_TOKEN
    assert torch.equal(changed, image_positions)
    assert torch.equal(clean_mask, noisy_mask)


def test_embedding_noise_with_text_augmentation_spares_answers_padding_and_special_tokens():
    model = tiny_llava().train()
    inputs = fixed_inputs()
    inputs["input_ids"][:, 0] = 2  # <s>
    seen, handle = capture_language_model_inputs(model)
    model(**inputs)
    attach(one_entry_policy("embedding_noise", 1.0), model, special_token_ids=(2,))
    model(**inputs)
    handle.remove()
    changed = (seen[0][0] != seen[1][0]).any(-1)
    protected = (inputs["labels"] != -100) | (inputs["attention_mask"] == 0)
    protected[:, 0] = True
    assert not bool(changed[protected].any())
    prompt = ~protected & (inputs["input_ids"] != IMAGE_TOKEN)
    assert bool(changed[prompt].all()) and bool(changed[inputs["input_ids"] == IMAGE_TOKEN].all())


# ---------------------------------------------------------------------- other families
_TEXT = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256, "head_dim": 8,
         "pad_token_id": 1}
_SIGLIP = {"image_size": 32, "patch_size": 4, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
           "num_attention_heads": 4}


def _family_case(family: str):
    """(model, training inputs) of a tiny random-init model of ``family``; image tokens first."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if family == "llava":
        return tiny_llava(), fixed_inputs()
    if family == "paligemma":
        config = transformers.PaliGemmaConfig(
            text_config={"model_type": "gemma", **_TEXT}, vision_config={"model_type": "siglip_vision_model",
                                                                         **_SIGLIP, "projection_dim": 32},
            image_token_index=0, projection_dim=32)
        model, image_tokens, pixels = transformers.PaliGemmaForConditionalGeneration(config), 64, (4, 3, 32, 32)
    else:  # idefics3 / smolvlm: 64 patches merged 2x2 by the pixel-shuffle connector
        config_class, model_class = {
            "idefics3": (transformers.Idefics3Config, transformers.Idefics3ForConditionalGeneration),
            "smolvlm": (transformers.SmolVLMConfig, transformers.SmolVLMForConditionalGeneration),
        }[family]
        config = config_class(text_config={"model_type": "llama", **_TEXT}, vision_config=_SIGLIP,
                              image_token_id=0, scale_factor=2)
        model, image_tokens, pixels = model_class(config), 16, (4, 1, 3, 32, 32)
    input_ids = torch.randint(3, 99, (4, image_tokens + 16), generator=generator)
    input_ids[:, :image_tokens] = 0
    labels = torch.full_like(input_ids, -100)
    labels[:, -6:] = input_ids[:, -6:]
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
              "pixel_values": torch.randn(*pixels, generator=generator)}
    if family == "paligemma":
        inputs["token_type_ids"] = (labels != -100).long()
    return model, inputs


@pytest.mark.parametrize("family", ["llava", "paligemma", "idefics3", "smolvlm"])
def test_each_supported_family_rebuilds_its_own_inputs_and_augments_training_only(family):
    model, inputs = _family_case(family)
    model.train()
    plain = model(**inputs).logits
    identity = attach(one_entry_policy("embedding_noise", 0.0), model)  # magnitude 0: the identity
    assert torch.equal(model(**inputs).logits, plain)  # the hook's inputs_embeds are the model's own
    identity.detach()
    attached = attach(one_entry_policy("vision_token_dropout", 1.0), model)
    assert not torch.equal(model(**inputs).logits, plain)
    model.eval()
    eval_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    with torch.no_grad():
        with_policy = model(**eval_inputs).logits
        attached.detach()
        assert torch.equal(model(**eval_inputs).logits, with_policy)


# ---------------------------------------------------------------------- the mixed loss
def test_mixed_loss_equals_the_hand_computed_value():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, -100, 1, 6, -100]])
    lam = 0.7
    label_mix = torch.tensor([[lam, 1 - lam], [0.0, 1.0]])
    log_probs = torch.log_softmax(logits, -1)

    def summed_ce(row: int, target: int) -> torch.Tensor:
        # position t predicts labels[target, t + 1]: answer tokens at 2 and 3 are predicted from 1 and 2
        return -(log_probs[row, 1, labels[target, 2]] + log_probs[row, 2, labels[target, 3]])

    by_hand = (lam * summed_ce(0, 0) + (1 - lam) * summed_ce(0, 1) + summed_ce(1, 1)) / 4
    assert torch.allclose(mixed_lm_loss(logits, labels, label_mix), by_hand, rtol=1e-6, atol=0)
    # per sample with equal answer lengths: λ·CE(y_a) + (1−λ)·CE(y_b), each CE a token mean
    first_only = mixed_lm_loss(logits[:1], labels, label_mix[:1], num_items_in_batch=2)
    assert torch.allclose(first_only, lam * summed_ce(0, 0) / 2 + (1 - lam) * summed_ce(0, 1) / 2, rtol=1e-6)


def test_mixed_loss_without_mixing_equals_the_models_own_loss():
    model = tiny_llava().train()
    outputs = model(**fixed_inputs())
    assert torch.allclose(mixed_lm_loss(outputs.logits, fixed_inputs()["labels"]), outputs.loss, rtol=1e-6)


def test_label_mixing_policy_needs_the_mixed_loss():
    for op in ("token_mixup", "token_cutmix", "mergemix"):
        with pytest.raises(AutoaugInputError, match=f"{op} mix labels.*PolicySFTTrainer"):
            attach(one_entry_policy(op, 0.5), tiny_llava())


def test_mixing_forward_with_labels_to_the_models_own_loss_raises():
    model = tiny_llava().train()
    attach(one_entry_policy("token_mixup", 1.0), model, mixed_loss=True)
    with pytest.raises(AutoaugInputError, match="unmixed labels"):
        model(**fixed_inputs())


def test_token_mixup_mix_matrix_drives_the_mixed_loss():
    model = tiny_llava().train()
    attached = attach(one_entry_policy("token_mixup", 1.0), model, mixed_loss=True)
    inputs = fixed_inputs()
    labels = inputs.pop("labels")
    outputs = model(**inputs)
    mix = attached.last_label_mix
    assert torch.allclose(mix.sum(1), torch.ones(4))
    assert not torch.equal(mix, torch.eye(4))
    loss = mixed_lm_loss(outputs.logits, labels, mix)
    own = torch.nn.functional.cross_entropy(outputs.logits[:, :-1].transpose(1, 2), labels[:, 1:])
    assert torch.isfinite(loss) and not torch.allclose(loss, own)


# ---------------------------------------------------------------------- bad input
def test_refused_ops_and_models_fail_with_one_clear_line():
    with pytest.raises(UnsupportedModelError, match="modality_order_swap.*chat template"):
        attach(one_entry_policy("modality_order_swap", 0.5), tiny_llava())
    with pytest.raises(UnsupportedModelError, match="not supported: expected a \\*ForConditionalGeneration"):
        attach(Policy.load("moderate"), torch.nn.Linear(2, 2))
    qwen = type("Qwen2VLStandIn", (), {"config": type("C", (), {"model_type": "qwen2_vl"})()})()
    with pytest.raises(UnsupportedModelError, match="image_grid_thw.*vision_permute_order") as error:
        attach(Policy.load("moderate"), qwen)
    assert "\n" not in str(error.value)


def test_processor_token_count_differing_from_the_model_is_refused():
    model = tiny_llava().train()
    attach(Policy.load("moderate"), model)
    inputs = fixed_inputs()
    inputs["input_ids"][:, 1 + IMAGE_TOKENS - 8:1 + IMAGE_TOKENS] = 5  # only 56 placeholders per sample
    with pytest.raises(AutoaugInputError, match="56 image tokens per sample but the model makes 64"):
        model(**inputs)


# ---------------------------------------------------------------------- pixel stage collator
def test_pixel_collator_augments_normalised_pixels_and_keeps_clean_samples_bit_identical():
    processor = tiny_processor()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))

    def base_collate(samples):
        return dict(processor(images=[image] * len(samples), text=["<image> what shape ?"] * len(samples),
                              return_tensors="pt"))

    policy = one_entry_policy("pixel_brightness", 1.0, clean_fraction=0.5)
    collator = PolicyDataCollator(policy, base_collate, processor)
    plain, augmented = base_collate([0] * 8), collator([0] * 8)
    changed = (plain["pixel_values"] != augmented["pixel_values"]).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 8
    assert torch.equal(plain["input_ids"], augmented["input_ids"])
    with pytest.raises(AutoaugInputError, match="image_mean and image_std"):
        PolicyDataCollator(policy, base_collate)


# ---------------------------------------------------------------------- TRL SFTTrainer, README example
README_EXAMPLE = '''
import datasets, torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import SFTConfig
from autoaug import Policy
from autoaug.integrations.transformers import PolicySFTTrainer

model = AutoModelForImageTextToText.from_pretrained("my-llava")     # a local HF checkpoint folder
processor = AutoProcessor.from_pretrained("my-llava")
vqa = datasets.load_dataset("parquet", data_files="vqa.parquet", split="train")  # image, text, label
vqa = vqa.cast_column("image", datasets.Image()).map(
    lambda row: {"prompt": "<image> " + row["text"], "completion": " " + row["label"]},
    remove_columns=["text", "label"])

trainer = PolicySFTTrainer(
    model=model,
    processing_class=processor,
    train_dataset=vqa,
    policy=Policy.load("policy.yaml"),          # exported by `autoaug export`
    args=SFTConfig(output_dir="sft-out", max_steps=3, per_device_train_batch_size=4,
                   max_length=None, bf16=torch.cuda.is_available(), report_to="none"),
)
trainer.train()
'''


def write_vqa_parquet(path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = []
    for index in range(8):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": f"{index}.png"},
                     "text": "what shape is it ?", "label": ["circle", "square"][index % 2]})
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.slow
def test_readme_example_sft_trainer_trains_a_few_steps_with_the_policys_collator_and_loss(tmp_path, monkeypatch):
    tiny_llava().save_pretrained(tmp_path / "my-llava")
    tiny_processor().save_pretrained(tmp_path / "my-llava")
    write_vqa_parquet(tmp_path / "vqa.parquet")
    policy = Policy.from_dict({
        "schema_version": 1, "seed": 0, "clean_fraction": 0.25,
        "entries": [{"op": "pixel_brightness", "p": 1.0, "magnitude": 0.5},
                    {"op": "vision_token_dropout", "p": 1.0, "magnitude": 0.5},
                    {"op": "token_mixup", "p": 1.0, "magnitude": 0.5},
                    {"op": "embedding_noise", "p": 1.0, "magnitude": 0.5}]})
    policy.dump(tmp_path / "policy.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    exec(compile(README_EXAMPLE, "README example", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 3
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.log_history and all(np.isfinite(losses))
    attached = trainer.autoaug
    assert attached.last_label_mix is not None and not torch.equal(attached.last_label_mix, torch.eye(4))
    # the train loader's collator augments pixels; the plain collator stays the trainer's own
    assert isinstance(trainer.get_train_dataloader().collate_fn, PolicyDataCollator)
    assert not isinstance(trainer.data_collator, PolicyDataCollator)
    assert os.path.isdir(tmp_path / "sft-out")


# ---------------------------------------------------------------------- --model llava-tiny in the proxy trial
# (`autoaug train --model ... --json`, `autoaug search --model llava-tiny` and checkpoint folders from the
# command line: tests/test_hf_cli.py)
SMALL_TASK = {"train_size": 32, "val_size": 16, "test_size": 16}


def test_llava_tiny_proxy_answers_with_the_answer_tokens_and_trains_on_them():
    from autoaug.trainers.hf_vlm import model_builder
    from autoaug.trainers.train import prepare_task

    prepared = prepare_task("shapes-vqa", None, 0, SMALL_TASK, model="llava-tiny")
    proxy = prepared.build_model(prepared.tokenizer, prepared.data)
    batch = prepared.splits["train"].batch(torch.arange(4), prepared.data.num_classes, prepared.tokenizer.vocabulary)
    output = proxy.predict(batch)
    assert output.logits.shape == (4, prepared.data.num_classes)
    assert bool((output.logits <= 0).all())  # log-probabilities of the answer tokens under the full vocabulary
    loss = -(batch.labels * torch.log_softmax(output.logits, -1)).sum(-1).mean()
    loss.backward()
    assert proxy.model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert model_builder(None) is None


def test_bad_model_argument_is_one_clear_line(tmp_path):
    from autoaug.trainers.hf_vlm import model_builder

    with pytest.raises(AutoaugInputError, match="not a local model directory.*llava-tiny.*nothing is downloaded"):
        model_builder("llava-hf/llava-1.5-7b-hf")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl"}')
    with pytest.raises(AutoaugInputError, match="model_type 'qwen2_vl' is not supported.*llava"):
        model_builder(str(tmp_path))


def test_cli_train_refuses_a_model_path_that_is_not_a_model_directory(tmp_path, capsys):
    code, _, err = run_cli(["train", "--task", "shapes-vqa", "--model", str(tmp_path / "missing"),
                            "--max-epochs", "1", "--json", "--workdir", str(tmp_path)], capsys)
    assert code == 2
    assert "not a local model directory" in one_error_line(err)
