"""`autoaug train` and `autoaug search` with a Hugging Face model from the command line (issue 23,
items 1 and 5): ``--model llava-tiny`` (the LLaVA built from config) and ``--model PATH`` (a local
checkpoint folder this module writes with ``save_pretrained``).

Kept small for the suite's time budget: shapes-vqa at 32 / 16 / 16 examples, one epoch, and one
search of two trials with the stages around the trials off (calibration, screen, baselines,
confirmation: each has its own tests). Nothing is downloaded: the checkpoint is made here, and the
subprocess run of a checkpoint has the Hub switched off and every proxy pointed at a closed port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from autoaug.policy import Policy  # noqa: E402
from autoaug.trainers.shapes_vqa import ANSWERS, TEMPLATES, make_shapes_vqa  # noqa: E402
from conftest import one_error_line, run_cli  # noqa: E402

pytestmark = pytest.mark.slow

SIZES = {"train": 32, "val": 16, "test": 16}
TASK_OPTIONS = [argument for split, size in SIZES.items() for argument in ("--task-option", f"{split}_size={size}")]
TRAIN = ["train", "--task", "shapes-vqa", "--policy", "moderate", "--max-epochs", "1", "--batch-size", "16",
         "--accelerator", "cpu", *TASK_OPTIONS, "--json"]
ROBUST = {"half_patches_missing", "image_missing", "patches_scrambled", "text_dropped"}
HELDOUT = {"occlusion", "pixel_noise", "words_swapped"}


@pytest.fixture(scope="module", autouse=True)
def _ray_stopped_after_the_module():
    """The search below starts Ray in this process; later modules of this worker must not inherit it."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------------- the train --json contract
def check_train_json(stdout: str, *, model: str, policy: str) -> dict:
    """The last stdout line is `autoaug train --json`'s object: its keys, types and ranges, and the
    identities that tie its figures together. Returns it."""
    result = json.loads(stdout.strip().splitlines()[-1])
    accuracies = ("val_accuracy", "test_accuracy", "train_accuracy", "robust_accuracy",
                  "robust_val_accuracy", "heldout_robust_accuracy")
    for key in accuracies:
        assert isinstance(result[key], float) and 0.0 <= result[key] <= 1.0, (key, result[key])
    # An accuracy is a count over its split: catches a figure measured on another split or a subsample.
    for key, split in (("val_accuracy", "val"), ("test_accuracy", "test"), ("train_accuracy", "train")):
        correct = result[key] * SIZES[split]
        assert abs(correct - round(correct)) < 1e-6, (key, result[key])
    assert set(result["robust_breakdown"]) == ROBUST and set(result["heldout_robust_breakdown"]) == HELDOUT
    # Catches a summary that is not the mean of its breakdown (a max, or one suite only).
    for summary, breakdown in (("robust_accuracy", "robust_breakdown"),
                               ("heldout_robust_accuracy", "heldout_robust_breakdown")):
        values = result[breakdown].values()
        assert all(0.0 <= value <= 1.0 for value in values)
        assert result[summary] == pytest.approx(sum(values) / len(values))
    assert result["train_val_gap"] == pytest.approx(result["train_accuracy"] - result["val_accuracy"])
    assert result["epochs"] == 1 and type(result["epochs"]) is int
    assert 0.0 < result["seconds_per_epoch"] <= result["seconds"] < 600.0
    assert result["model"] == model and result["policy"] == policy and result["task"] == "shapes-vqa"
    assert result["seed"] == 0 and result["data_seed"] == 0 and result["learning_rate"] > 0
    assert result["sizes"] == SIZES and result["split"]["method"] == "generated"
    # The model is the only difference from a tiny-VLM run: the data is the built-in task's, byte for byte.
    sizes = {f"{split}_size": size for split, size in SIZES.items()}
    assert result["data_fingerprint"] == make_shapes_vqa(seed=0, **sizes).fingerprint
    run_dir = Path(result["run_dir"])
    assert (run_dir / "tokenizer.json").is_file()
    saved = Policy.load(run_dir / "policy.yaml")
    assert saved.config.entries == Policy.load(policy).config.entries and saved.config.seed == 0
    return result


def test_train_llava_tiny_json_contract(tmp_path, capsys):
    code, out, err = run_cli([*TRAIN, "--model", "llava-tiny", "--workdir", str(tmp_path)], capsys)
    assert code == 0, err[-3000:]
    check_train_json(out, model="llava-tiny", policy="moderate")


# ---------------------------------------------------------------------- one small search
def test_search_llava_tiny_records_and_exports_a_loadable_policy(tmp_path, capsys):
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from autoaug.search.record_schema import POLICY_ATTR

    workdir = tmp_path / "runs"
    code, out, err = run_cli(
        ["search", "--space", "vlm_default", "--name", "hf", "--task", "shapes-vqa", "--model", "llava-tiny",
         "--trials", "2", "--max-epochs", "1", "--scheduler", "none", "--no-calibrate", "--no-screen",
         "--no-baselines", "--no-confirm", *TASK_OPTIONS, "--workdir", str(workdir), "--json"], capsys)
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["study"] == "hf" and result["n_complete"] == 2 and result["n_failed"] == 0
    assert result["trial_epochs"] == 1

    # Optuna: the study says which model it searched (a resume with another model must not mix them).
    study = optuna.load_study(study_name="hf", storage=result["optuna_storage"])
    assert study.user_attrs["model"] == "llava-tiny"
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(0.0 <= t.value <= 1.0 and abs(t.value * SIZES["val"] - round(t.value * SIZES["val"])) < 1e-6
               for t in trials)
    assert result["best_value"] == max(t.value for t in trials)

    # MLflow: one child run per trial, one epoch each, and the sampled policy reached the LLaVA's training:
    # catches a proxy that trains without the policy (every entry would touch 0 samples).
    client = mlflow.MlflowClient(tracking_uri=result["tracking_uri"])
    runs = client.search_runs([result["mlflow_experiment_id"]])
    children = [run for run in runs if run.data.tags.get("autoaug_role") != "search"]
    assert sorted(run.data.tags["autoaug_trial"] for run in children) == ["trial 0", "trial 1"]
    applied = 0.0
    for run in children:
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 1
        metrics = run.data.metrics
        applied += sum(value for key, value in metrics.items() if key.endswith(".applied_samples"))
        assert all(0.0 <= value <= 1.0 for key, value in metrics.items() if key.endswith(".applied_fraction"))
    assert applied > 0

    # Export: the search's own file and `autoaug export --trial` both load with Policy.load, each the
    # policy its trial ran (catches exporting another trial's record).
    best = Policy.load(result["best_policy_path"])
    assert best.config.entries == Policy.from_dict(trials[result["best_trial"]].user_attrs[POLICY_ATTR]).config.entries
    other = 1 - result["best_trial"]
    code, out, err = run_cli(["export", "--name", "hf", "--workdir", str(workdir), "--trial", str(other),
                              "--out", str(tmp_path / "other.yaml"), "--json"], capsys)
    assert code == 0, err[-3000:]
    exported = Policy.load(tmp_path / "other.yaml")
    assert exported.config.entries == Policy.from_dict(trials[other].user_attrs[POLICY_ATTR]).config.entries


# ---------------------------------------------------------------------- --model PATH: a local checkpoint
def _words() -> list[str]:
    """Every word of the task's questions and answers (the checkpoint tokenizer's vocabulary)."""
    text = " ".join(template for family in TEMPLATES.values() for template in family)
    words = set(re.findall(r"[a-z]+|[?.,:]", text)) | {"circle", "square", "triangle", "circles", "squares",
                                                       "triangles", "red", "green", "blue", "yellow"}
    return sorted(words | set(ANSWERS))


def _save_llava_checkpoint(folder: Path) -> None:
    """A LLaVA built from config (64 vision tokens of width 32, Llama decoder of width 32) with a
    word-level tokenizer and a CLIP image processor, saved as a user would with ``save_pretrained``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast,
    )

    specials = ["<image>", "<pad>", "<s>", "</s>", "<unk>"]
    vocabulary = {word: index for index, word in enumerate(specials + _words())}
    config = LlavaConfig(
        text_config={"model_type": "llama", "vocab_size": len(vocabulary), "hidden_size": 32,
                     "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 4, "max_position_embeddings": 256, "pad_token_id": 1},
        vision_config={"model_type": "clip_vision_model", "image_size": 32, "patch_size": 4, "hidden_size": 32,
                       "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "projection_dim": 32},
        image_token_index=0, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=64,
    )
    torch.manual_seed(7)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=4, image_token="<image>",
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint") / "my-llava"
    _save_llava_checkpoint(folder)
    return folder


def _offline_env(hf_home: Path) -> dict:
    """The environment of a run that must not touch the network: the Hub off, an empty Hugging Face
    cache, and every proxy variable pointing at a closed local port (a request would fail at once)."""
    closed = "http://127.0.0.1:9"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(hf_home),
           "OMP_NUM_THREADS": "1", "NO_PROXY": "", "no_proxy": ""}
    env.update({name: closed for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                          "http_proxy", "https_proxy", "all_proxy")})
    return env


def test_train_with_a_local_checkpoint_folder_offline(checkpoint, tmp_path):
    # Catches: a loader that reaches for the Hub (a processor or tokenizer fetched by name, a config
    # resolved remotely): with the Hub off and the proxies closed such a run fails.
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "autoaug", *TRAIN, "--model", str(checkpoint), "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300, env=_offline_env(hf_home), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    check_train_json(completed.stdout, model=str(checkpoint), policy="moderate")
    assert not (hf_home / "hub").exists()  # nothing was cached: nothing was downloaded


def test_a_checkpoint_trains_from_its_own_weights_and_tokens_with_the_policy_applied(checkpoint):
    # Catches: a fresh model built from the folder's config (weights ignored), answers mapped to ids
    # other than the checkpoint tokenizer's, a checkpoint left in the eval mode from_pretrained returns
    # (Lightning keeps it: dropout would be off in training), and a policy that never reaches the
    # checkpoint's training.
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from autoaug.trainers.train import prepare_task, run_training

    task_options = {f"{split}_size": size for split, size in SIZES.items()}
    prepared = prepare_task("shapes-vqa", None, 0, task_options, model=str(checkpoint))
    proxy = prepared.build_model(prepared.tokenizer, prepared.data)
    saved = LlavaForConditionalGeneration.from_pretrained(checkpoint, local_files_only=True).state_dict()
    assert all(torch.equal(tensor, saved[name]) for name, tensor in proxy.model.state_dict().items())
    vocabulary = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True).get_vocab()
    assert proxy.answer_ids.tolist() == [vocabulary[answer] for answer in prepared.data.classes]
    assert all(module.training for module in proxy.modules())

    policy = Policy.from_dict({"schema_version": 1, "seed": 0, "clean_fraction": 0.0, "entries": [
        {"op": "vision_token_dropout", "p": 1.0, "magnitude": 0.5},
        {"op": "embedding_noise", "p": 1.0, "magnitude": 0.5}]})
    counts = policy.count_entries()
    result = run_training(policy=policy, seed=0, max_epochs=1, batch_size=16, accelerator="cpu",
                          prepared=prepared, model=str(checkpoint), evaluate=False)
    assert result["epochs"] == 1
    # p = 1, no clean fraction: each entry touches every training sample of the epoch
    assert counts.take() == [(SIZES["train"], SIZES["train"])] * 2


# ---------------------------------------------------------------------- --model PATH: refused
def _save_llama_checkpoint(folder: Path) -> None:
    """A text-only Llama (not a VLM the proxy trial can drive), saved with ``save_pretrained``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)


def _save_paligemma_config(folder: Path) -> None:
    """A vision-language model of another family (PaliGemma): its config as save_pretrained writes it."""
    from transformers import PaliGemmaConfig

    PaliGemmaConfig().save_pretrained(folder)


@pytest.mark.parametrize("save, model_type, command", [(_save_llama_checkpoint, "llama", "train"),
                                                       (_save_paligemma_config, "paligemma", "search")])
def test_a_non_llava_checkpoint_is_refused_with_one_line_naming_the_supported(tmp_path, capsys, save, model_type,
                                                                               command):
    # Catches: a non-LLaVA folder loaded anyway (it fails deep in training, or trains a wrong model),
    # a message that does not say what is supported, and a refusal that comes after the data or Ray.
    folder = tmp_path / "other-model"
    save(folder)
    arguments = {"train": TRAIN, "search": ["search", "--space", "vlm_default", "--name", "refused", "--task",
                                            "shapes-vqa", "--trials", "1", "--no-calibrate", "--json"]}[command]
    workdir = tmp_path / "w"
    code, _, err = run_cli([*arguments, "--model", str(folder), "--workdir", str(workdir)], capsys)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("error: --model: ") and f"model_type '{model_type}' is not supported" in line, line
    assert "supported checkpoint model types: llava; built-in models: llava-tiny, tiny-vlm" in line, line
    assert not (workdir / "train").exists() and not (workdir / "optuna.db").exists()
