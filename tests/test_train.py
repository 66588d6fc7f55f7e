"""`autoaug train` end to end: the proxy trial's Lightning fit, `run_training`, and the CLI contract.

In-process tests run a small shapes-vqa task (48/32/32). The CLI's successful runs go through real
subprocesses (``python -m autoaug train ... --json``): the autouse `cli` fixture starts the ones the
selected tests need at once, in the background (they are mostly interpreter start-up and imports), and
each test waits for its own. Bad input goes through the CLI's entry point in this process (one case
also in a subprocess), which keeps the file well under a minute and a half on two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.policy import Policy
from autoaug.trainers import evaluation
from autoaug.trainers.data import Collator, load_data
from autoaug.trainers.lightning_module import ProxyDataModule, ProxyTrialModule
from autoaug.trainers.prepared import PreparedTask
from autoaug.trainers.model import build_model
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from autoaug.trainers.tokenizer import TextTokenizer
from autoaug.trainers.train import resolve_policy, resolve_task, run_training
from test_trainers_data import _records, _write_parquet, _write_shards

SMALL = {"train_size": 48, "val_size": 32, "test_size": 32}
RESULT_KEYS = ("val_accuracy", "test_accuracy", "robust_accuracy", "epochs", "seconds", "data_fingerprint")
STRONG_POLICY = {
    "name": "strong",
    "clean_fraction": 0.0,
    "entries": [
        {"op": "pixel_brightness", "p": 1.0, "magnitude": 1.0},
        {"op": "vision_token_dropout", "p": 1.0, "magnitude": 1.0},
        {"op": "text_token_dropout", "p": 1.0, "magnitude": 1.0},
        {"op": "embedding_noise", "p": 1.0, "magnitude": 1.0},
    ],
}


def _tensors(batch) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in batch.tensors().items()}


def _assert_same(got: dict, want: dict, fields=None) -> None:
    fields = fields or sorted(want)
    assert set(fields) <= set(got), f"missing fields: {set(fields) - set(got)}"
    for name in fields:
        assert torch.equal(got[name], want[name]), f"field {name} differs from the clean batch"


# ====================================================================== training vs evaluation batches
class _Recorder:
    """What the model's stages receive, by phase (train / val / test)."""

    def __init__(self, model) -> None:
        self.phase = "idle"
        self.log: list[tuple[str, str, dict]] = []
        self.embed, self.forward, self.to_token_stage = model.embed, model.forward, model.to_token_stage

        def embed(batch):
            self.log.append((self.phase, "embed_in", _tensors(batch)))
            out = self.embed(batch)
            self.log.append((self.phase, "embed_out", _tensors(out)))
            return out

        def forward(batch):
            self.log.append((self.phase, "forward_in", _tensors(batch)))
            return self.forward(batch)

        model.embed, model.forward = embed, forward  # instance attributes win over the class methods

    def of(self, phase: str, stage: str) -> list[dict]:
        return [tensors for p, s, tensors in self.log if (p, s) == (phase, stage)]

    @torch.no_grad()
    def clean_embedding(self, pixel_batch) -> dict:
        """The clean pipeline (tokenise, embed) with the unwrapped stages."""
        return _tensors(self.embed(self.to_token_stage(pixel_batch)))


class _RecordingModule(ProxyTrialModule):
    def __init__(self, model, policy, clean_val) -> None:
        super().__init__(model, policy)
        self.recorder = _Recorder(model)
        self.clean_val = clean_val
        self.train_steps: list[dict] = []
        self.val_steps: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.recorder.phase = "train"
        applied = len(self.policy.applied)
        self.train_steps.append({"pixel": _tensors(batch)})
        loss = super().training_step(batch, batch_idx)
        self.train_steps[-1]["applied"] = len(self.policy.applied) - applied
        return loss

    def validation_step(self, batch, batch_idx):
        self.recorder.phase = "val"
        applied = len(self.policy.applied)
        step = {"pixel": _tensors(batch), "index": len(self.recorder.log),
                "reference": self.recorder.clean_embedding(self.clean_val)}
        super().validation_step(batch, batch_idx)
        step["applied"] = len(self.policy.applied) - applied
        step["forward_in"] = [t for p, s, t in self.recorder.log[step["index"]:] if s == "forward_in"]
        self.val_steps.append(step)


class _SnapshotBeforePolicy(L.Callback):
    """Placed before the policy's callback: the training batch as the loader made it."""

    def __init__(self) -> None:
        self.clean: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clean.append(_tensors(batch))


def test_training_batches_are_augmented_and_evaluation_batches_are_clean(tmp_path):
    task = make_shapes_vqa(seed=0, **SMALL)
    tokenizer = TextTokenizer.fit(task.texts("train"))
    collate = Collator(tokenizer, task.num_classes)
    clean_val, clean_test = collate(task.val), collate(task.test)
    L.seed_everything(0, verbose=False)
    model = build_model(tokenizer, task.num_classes, image_size=task.image_size)
    policy = Policy.from_dict({**STRONG_POLICY, "seed": 0})
    policy.record = True
    module = _RecordingModule(model, policy, clean_val)
    datamodule = ProxyDataModule(PreparedTask.build(task), batch_size=16, seed=0)
    snapshot = _SnapshotBeforePolicy()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        callbacks=[snapshot, policy.lightning_callback()], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=datamodule)
    trainer.validate(module, datamodule=datamodule, verbose=False)  # after training, callback still attached

    # ---- training: every stage the policy has entries for changed the batch
    assert len(module.train_steps) == len(snapshot.clean) == 2 * 3
    embed_in, embed_out = module.recorder.of("train", "embed_in"), module.recorder.of("train", "embed_out")
    forward_in = module.recorder.of("train", "forward_in")
    assert len(embed_in) == len(embed_out) == len(forward_in) == 6  # no consistency term: one pass each
    for step, clean, tokens, embedded, seen in zip(module.train_steps, snapshot.clean, embed_in, embed_out,
                                                    forward_in):
        pixel = step["pixel"]
        assert not torch.equal(pixel["images"], clean["images"]), "pixel op not applied to a training batch"
        _assert_same(pixel, clean, ["text_ids", "labels"])  # no mixing op: ids and labels untouched
        assert step["applied"] >= 3  # token and embedding entries ran inside training_step
        assert not tokens["vision_mask"].all(), "vision_token_dropout not applied"
        assert not torch.equal(tokens["text_mask"], clean["text_mask"]), "text_token_dropout not applied"
        assert not torch.equal(seen["vision"], embedded["vision"]), "embedding_noise not applied"
        assert not torch.equal(seen["text_embeddings"], embedded["text_embeddings"])
        assert seen["augmented"].all()  # clean_fraction 0 and p 1: every sample augmented
    # ---- validation (during fit and in trainer.validate): bit-identical to the Collator's output
    assert len(module.val_steps) == 3  # 2 epochs + validate; 32 examples make one batch
    reference_pixel = _tensors(clean_val)
    for step in module.val_steps:
        _assert_same(step["pixel"], reference_pixel)
        assert step["pixel"].keys() == reference_pixel.keys()
        assert step["applied"] == 0, "the policy ran on a validation batch"
        (seen,) = step["forward_in"]
        assert not seen["augmented"].any()
        _assert_same(seen, step["reference"])
    # ---- test split, evaluated as run_training does
    module.recorder.phase = "test"
    applied = len(policy.applied)
    test_accuracy = evaluation.accuracy(model, datamodule.loader("test"))
    assert len(policy.applied) == applied
    (seen,) = module.recorder.of("test", "forward_in")
    _assert_same(seen, module.recorder.clean_embedding(clean_test))
    logits = model.predict(clean_test).logits
    assert test_accuracy == float((logits.argmax(-1) == clean_test.labels.argmax(-1)).float().mean())


class _Probe(L.Callback):
    """Digest of the final weights, and the `augmented` flags of the batches Lightning handled."""

    def __init__(self) -> None:
        self.digest = None
        self.train_flags: list[torch.Tensor] = []
        self.val_flags: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_flags.append(batch.augmented.clone())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_flags.append(batch.augmented.clone())

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.digest = digest.hexdigest()


ACCELERATOR = {"cpu": "cpu", "cuda": "gpu"}  # the `device` fixture's names as --accelerator values


def _small_run(seed: int, policy, probe=None, device: str = "cpu", **options) -> dict:
    return run_training(task="shapes-vqa", policy=policy, seed=seed, max_epochs=2, batch_size=16,
                        accelerator=ACCELERATOR[device], task_options=SMALL, callbacks=[probe] if probe else (),
                        **options)


def test_run_training_augments_only_training_batches(tmp_path, device):
    probe = _Probe()
    result = _small_run(1, Policy.from_dict(STRONG_POLICY), probe, device, run_dir=tmp_path / "run")
    assert result["device"].startswith(device)
    assert len(probe.train_flags) == 6 and all(flags.all() for flags in probe.train_flags)
    assert len(probe.val_flags) == 2 and not any(flags.any() for flags in probe.val_flags)
    assert result["epochs"] == 2 and result["sizes"] == {"train": 48, "val": 32, "test": 32}
    assert (tmp_path / "run" / "tokenizer.json").is_file()
    # saved with the run's seed, so the file replays the run's augmentation
    assert Policy.load(tmp_path / "run" / "policy.yaml") == Policy.from_dict({**STRONG_POLICY, "seed": 1})


def test_same_seed_same_result_and_policy_seeded_by_run_seed():
    policies = [Policy.load("moderate") for _ in range(3)]  # unseeded: each gets the run's seed
    assert all(policy.config.seed is None for policy in policies)
    probes = [_Probe() for _ in range(3)]
    first, again = (_small_run(11, policy, probe) for policy, probe in zip(policies[:2], probes[:2]))
    other = _small_run(12, policies[2], probes[2])
    assert all(policy.config.seed is None for policy in policies)  # the caller's policies are not mutated
    for key in ("val_accuracy", "test_accuracy", "robust_accuracy", "robust_breakdown", "train_accuracy",
                "data_fingerprint", "split", "sizes"):
        assert first[key] == again[key], key
    # identical weights: same data order, same init, same augmentation (a random policy seed breaks this)
    assert probes[0].digest is not None and probes[0].digest == probes[1].digest
    assert probes[2].digest != probes[0].digest
    # the training seed changes init, order and augmentation, never the data: runs of different seeds
    # are measured on the same validation and test examples; the data has its own seed
    assert other["data_fingerprint"] == first["data_fingerprint"]
    assert _small_run(11, "none", data_seed=1)["data_fingerprint"] != first["data_fingerprint"]
    # a policy with its own seed keeps it
    seeded = Policy.from_dict({**STRONG_POLICY, "seed": 5})
    assert resolve_policy(seeded, seed=11).seed == 5
    assert resolve_policy("none", seed=11).seed == 11


# ====================================================================== the CLI
BAD_INPUT = {  # case: (arguments, what the one stderr line must say)
    "missing_file": (["--data", "{data}/nothing-here.parquet"], r"nothing-here\.parquet: no such file"),
    "missing_column": (["--data", "{data}/no_label.parquet"], r"no_label\.parquet: missing column 'label'"),
    "undecodable_image": (["--data", "{data}/broken.parquet"],
                          r"broken\.parquet: row 3: the image could not be decoded"),
    "label_only_in_test": (["--data", "{data}/test_only_label.parquet"],
                           r"test_only_label\.parquet: row \d+: label 'octagon' appears in the test split but never in train"),
    "unknown_task": (["--task", "nope"], r"unknown task 'nope'.*shapes-vqa"),
    "unknown_preset": (["--task", "shapes-vqa", "--policy", "not-a-preset"],
                       r"not-a-preset: no such policy file, and not a preset"),
    "task_and_data": (["--task", "shapes-vqa", "--data", "{data}/with_split.parquet"], r"exactly one of --task"),
    "neither_task_nor_data": ([], r"exactly one of --task"),
    "zero_epochs": (["--task", "shapes-vqa", "--max-epochs", "0"], r"--max-epochs.*positive"),
    "plugin_module_missing": (["--task", "no_such_plugin_module:make_task"],
                              r"--task: no_such_plugin_module:make_task: no module named 'no_such_plugin_module'"),
    "plugin_function_missing": (["--task", "json:make_task"], r"module 'json' has no function 'make_task'"),
}
SUBPROCESS_BAD_INPUT = "undecodable_image"  # the others run through the CLI's `main` in this process
GOOD = {  # run: arguments
    "shapes": ["--task", "shapes-vqa", "--max-epochs", "1"],
    "parquet": ["--data", "{data}/with_split.parquet", "--max-epochs", "1", "--batch-size", "16"],
    "webdataset": ["--data", "{data}/shards", "--seed", "2", "--data-seed", "3", "--max-epochs", "1", "--batch-size", "16"],
    "plugin": ["--task", "autoaug_train_test_plugin:make_task", "--seed", "4", "--data-seed", "4", "--max-epochs", "1",
               "--batch-size", "16"],
}
RUNS_OF_TEST = {  # which subprocess runs each test waits for
    "test_cli_json_contract": ["shapes"],
    "test_user_data_trains_end_to_end": ["parquet", "webdataset"],
    "test_task_plugin_trains": ["plugin"],
    "test_bad_input_in_a_process_exits_2_with_one_line": [f"bad:{SUBPROCESS_BAD_INPUT}"],
}
PLUGIN = """
from autoaug.trainers.shapes_vqa import make_shapes_vqa


def make_task(seed):
    return make_shapes_vqa(seed=seed, train_size=48, val_size=32, test_size=32)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """User data written by the test: good and bad Parquet files, WebDataset shards (png, txt, cls)."""
    folder = tmp_path_factory.mktemp("data")
    source = make_shapes_vqa(seed=5, train_size=48, val_size=24, test_size=24)
    known = {example.label for example in source.train}
    source.val = [e for e in source.val if e.label in known]
    source.test = [e for e in source.test if e.label in known]
    rows = _records(source)
    _write_parquet(folder / "with_split.parquet", rows)
    _write_parquet(folder / "no_label.parquet", rows[:8], drop="label")
    broken = list(rows)
    broken[3] = (b"definitely not a png", *broken[3][1:])
    _write_parquet(folder / "broken.parquet", broken)
    test_only = list(rows)
    test_only[-1] = (*test_only[-1][:2], "octagon", "test")
    _write_parquet(folder / "test_only_label.parquet", test_only)
    # different data for the WebDataset shards: png, txt, cls members, no split
    other = make_shapes_vqa(seed=6, train_size=64, val_size=8, test_size=8)
    _write_shards(folder / "shards", _records(other), per_shard=30, with_split=False)
    return folder


def _arguments(arguments: list[str], data: Path) -> list[str]:
    return [argument.format(data=data) for argument in arguments]


class _Runs:
    """`python -m autoaug train ... --json` runs started together; `result(name)` waits for one."""

    def __init__(self, root: Path, data: Path, names: list[str]) -> None:
        self.data = data
        (root / "plugin").mkdir()
        (root / "plugin" / "autoaug_train_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "plugin"), env.get("PYTHONPATH")) if p)
        self.processes: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.results: dict[str, subprocess.CompletedProcess] = {}
        for name in names:
            arguments = BAD_INPUT[name[4:]][0] if name.startswith("bad:") else GOOD[name]
            folder = root / "runs" / name.replace(":", "_")
            folder.mkdir(parents=True)
            command = [sys.executable, "-m", "autoaug", "train", *_arguments(arguments, data),
                       "--workdir", str(folder / "workdir"), "--json"]
            with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
                process = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=err)
            self.processes[name] = (process, folder)

    def result(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.results:
            process, folder = self.processes[name]
            process.wait(timeout=300)
            self.results[name] = subprocess.CompletedProcess(
                process.args, process.returncode, (folder / "stdout").read_text(), (folder / "stderr").read_text())
        return self.results[name]

    def workdir(self, name: str) -> Path:
        return self.processes[name][1] / "workdir"

    def close(self) -> None:
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module", autouse=True)
def cli(request, tmp_path_factory, data_dir):
    """Start the subprocess runs of every selected test of this module, in the background, at once."""
    selected = {item.originalname for item in request.session.items
                if getattr(item, "module", None) is request.module}
    names = [name for test, runs in RUNS_OF_TEST.items() if test in selected for name in runs]
    runs = _Runs(tmp_path_factory.mktemp("cli"), data_dir, names)
    yield runs
    runs.close()


def _json_result(completed: subprocess.CompletedProcess) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    lines = completed.stdout.splitlines()
    assert lines, "nothing on stdout"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    for key in RESULT_KEYS:
        assert key in result, key
    for key in ("val_accuracy", "test_accuracy", "robust_accuracy"):
        assert isinstance(result[key], float) and 0.0 <= result[key] <= 1.0, (key, result[key])
    assert isinstance(result["epochs"], int) and not isinstance(result["epochs"], bool)
    assert isinstance(result["seconds"], (int, float)) and 0.0 < result["seconds"] < 600.0
    assert re.fullmatch(r"[0-9a-f]{64}", result["data_fingerprint"])
    return result


def test_cli_json_contract(cli):
    result = _json_result(cli.result("shapes"))
    assert result["epochs"] == 1
    assert result["task"] == "shapes-vqa" and result["seed"] == 0 and result["policy"] == "none"
    assert result["sizes"] == {"train": 600, "val": 1000, "test": 1000}
    # the fingerprint is a property of the data: the same in this process
    assert result["data_fingerprint"] == make_shapes_vqa(seed=0).fingerprint
    run_dir = Path(result["run_dir"])
    assert run_dir.parent.parent == cli.workdir("shapes") and run_dir.is_dir()
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "policy.yaml").is_file()


def test_user_data_trains_end_to_end(cli):
    parquet = _json_result(cli.result("parquet"))
    shards = _json_result(cli.result("webdataset"))
    for result in (parquet, shards):
        assert result["epochs"] == 1
        assert sum(result["sizes"].values()) == sum(result["split"]["counts"].values())
    # Parquet with a split column: the column's split, fingerprint as read here
    expected = load_data(cli.data / "with_split.parquet")
    assert parquet["split"]["method"] == "column"
    assert parquet["sizes"] == {split: len(expected.split(split)) for split in ("train", "val", "test")}
    assert parquet["data_fingerprint"] == expected.fingerprint
    # WebDataset shards without a split: the seeded stratified split is recorded
    assert shards["split"]["method"] == "stratified" and shards["split"]["seed"] == 3
    assert shards["split"]["counts"] == shards["sizes"] and sum(shards["sizes"].values()) == 80
    assert all(count > 0 for count in shards["sizes"].values())
    assert shards["data_fingerprint"] == load_data(cli.data / "shards", seed=3).fingerprint
    # different data, different fingerprint
    assert shards["data_fingerprint"] != parquet["data_fingerprint"]


def test_task_plugin_trains(cli):
    result = _json_result(cli.result("plugin"))
    assert result["epochs"] == 1 and result["seed"] == 4
    assert result["sizes"] == {"train": 48, "val": 32, "test": 32}
    assert result["split"]["method"] == "generated" and result["split"]["seed"] == 4  # got the run's data seed
    assert result["data_fingerprint"] == make_shapes_vqa(seed=4, **SMALL).fingerprint


def _assert_one_line_exit_2(code, stdout: str, stderr: str, pattern: str) -> None:
    assert code == 2, (code, stderr[-3000:])
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert stdout.strip() == "", "a failed run printed a result"


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(case, data_dir, tmp_path, capfd):
    """Through the CLI's entry point (what `python -m autoaug` runs), in this process."""
    from autoaug.cli import main

    arguments, pattern = BAD_INPUT[case]
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["train", *_arguments(arguments, data_dir), "--workdir", str(tmp_path / "workdir"), "--json"])
    captured = capfd.readouterr()
    _assert_one_line_exit_2(exited.value.code, captured.out, captured.err, pattern)


def test_bad_input_in_a_process_exits_2_with_one_line(cli):
    completed = cli.result(f"bad:{SUBPROCESS_BAD_INPUT}")
    _assert_one_line_exit_2(completed.returncode, completed.stdout, completed.stderr,
                            BAD_INPUT[SUBPROCESS_BAD_INPUT][1])


BROKEN_PLUGINS = {  # module text: what the user's own code does wrong (their traceback must show)
    "import_inside": "import package_the_user_forgot_to_install\n\ndef make_task(seed):\n    return None\n",
    "type_error_inside": "def make_task(seed):\n    return len(seed)  # the user's bug\n",
}


@pytest.mark.parametrize("case", list(BROKEN_PLUGINS))
def test_error_inside_a_users_plugin_shows_their_traceback(case, tmp_path, monkeypatch, capfd):
    """A bug in the user's own --task code is not bad input: exit 1 with their code's traceback."""
    from autoaug.cli import main

    module = f"autoaug_broken_plugin_{case}"
    (tmp_path / f"{module}.py").write_text(BROKEN_PLUGINS[case])
    monkeypatch.syspath_prepend(str(tmp_path))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["train", "--task", f"{module}:make_task", "--workdir", str(tmp_path / "workdir"), "--json"])
    err = capfd.readouterr().err
    assert exited.value.code == 1, err
    assert "Traceback" in err and f"{module}.py" in err, err
    wanted = {"import_inside": "No module named 'package_the_user_forgot_to_install'",
              "type_error_inside": "return len(seed)  # the user's bug"}[case]
    assert wanted in err, err


def test_plugin_with_the_wrong_signature_is_bad_input(tmp_path, monkeypatch, capfd):
    from autoaug.cli import main

    (tmp_path / "autoaug_no_seed_plugin.py").write_text("def make_task():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["train", "--task", "autoaug_no_seed_plugin:make_task", "--workdir", str(tmp_path / "w"), "--json"])
    captured = capfd.readouterr()
    _assert_one_line_exit_2(exited.value.code, captured.out, captured.err, r"make_task\(seed=\.\.\.\) cannot be called")


# ====================================================================== what the result reports (item 18)
def test_each_corruption_changes_what_the_model_sees():
    """Each corruption of the robust suites changes the model's token-stage inputs, and its output."""
    task = make_shapes_vqa(seed=0, **SMALL)
    tokenizer = TextTokenizer.fit(task.texts("train"))
    L.seed_everything(0, verbose=False)
    model = build_model(tokenizer, task.num_classes, image_size=task.image_size).eval()
    pixels = Collator(tokenizer, task.num_classes)(task.val)
    tokens = model.to_token_stage(pixels)
    clean_logits = model.predict(tokens).logits

    def corrupted_tokens(name: str):
        corruption, generator = evaluation.CORRUPTIONS[name], torch.Generator().manual_seed(evaluation.CORRUPTION_SEED)
        if corruption.stage == "pixel":
            return model.to_token_stage(corruption.apply(pixels, generator))
        return corruption.apply(tokens, generator)

    assert len(evaluation.CORRUPTIONS) >= 4
    for name in evaluation.CORRUPTIONS:
        corrupted = corrupted_tokens(name)
        before = tokens.tensors()
        changed = {field for field, tensor in corrupted.tensors().items()
                   if field != "augmented" and (field not in before or not torch.equal(tensor, before[field]))}
        assert changed, f"{name} changed no input"
        assert not torch.allclose(model.predict(corrupted).logits, clean_logits), f"{name}: the model saw no change"
    kept = lambda batch: batch.vision_mask.float().sum(1)  # noqa: E731
    assert torch.allclose(kept(corrupted_tokens("half_patches_missing")), kept(tokens) / 2, atol=1)
    assert not corrupted_tokens("image_missing").vision_mask.any()


class _EpochClock(L.Callback):
    """Wall time of each epoch from its start to the end of its validation, and the final module."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.module = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        self.module, self.datamodule = pl_module, trainer.datamodule


def test_train_val_gap_and_seconds_per_epoch_are_measured():
    clock = _EpochClock()
    result = _small_run(3, "moderate", clock)
    model, datamodule = clock.module.model, clock.datamodule
    train_accuracy = evaluation.accuracy(model, datamodule.loader("train"))
    val_accuracy = evaluation.accuracy(model, datamodule.loader("val"))
    assert result["train_accuracy"] == train_accuracy and result["val_accuracy"] == val_accuracy
    assert result["train_val_gap"] == pytest.approx(train_accuracy - val_accuracy)
    # the reported epoch time is the epochs' wall time (within the probe's interval, which ends later:
    # at the end of the training epoch, after validation), not the run's start-up
    assert len(clock.seconds) == result["epochs"] == 2
    assert 0 < result["seconds_per_epoch"] <= sum(clock.seconds) / 2 + 0.01
    assert result["seconds_per_epoch"] >= 0.5 * min(clock.seconds)
    assert result["seconds_per_epoch"] * result["epochs"] < result["seconds"]


def test_plugin_import_and_the_task_or_data_rule_have_one_home(tmp_path, monkeypatch):
    """`import_task_plugin` gives the module (the search ships its folder to workers) and the function;
    training goes through it, and a plug-in with --data as well is refused like any task with data."""
    from autoaug.trainers.tasks import import_task_plugin

    (tmp_path / "autoaug_home_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    imported = import_task_plugin("autoaug_home_plugin:make_task")
    assert imported.module.__name__ == "autoaug_home_plugin" and imported.factory is imported.module.make_task
    assert resolve_task("autoaug_home_plugin:make_task", None, seed=1).data.name == "shapes-vqa"
    with pytest.raises(AutoaugInputError, match="give exactly one of task or data"):
        resolve_task("autoaug_home_plugin:make_task", tmp_path / "data.parquet", seed=1)
    with pytest.raises(AutoaugInputError, match="autoaug_home_plugin:nothing.*has no function 'nothing'"):
        import_task_plugin("autoaug_home_plugin:nothing")


@pytest.mark.parametrize("arguments, parameter, problem", [
    ({"max_epochs": 0}, "max_epochs", "expected a positive integer, got 0"),
    ({"batch_size": 0}, "batch_size", "expected a positive integer, got 0"),
    ({"learning_rate": -1.0}, "learning_rate", "expected a positive number, got -1.0"),
    ({"variant": "decoder"}, "variant", "'decoder' is not one of encoder, causal"),
    ({"accelerator": "tpu"}, "accelerator", "'tpu' is not one of auto, cpu, gpu, cuda, mps"),
    ({"data_seed": -1}, "data_seed", "expected a non-negative integer, got -1"),
    ({"task": "nope"}, "task", "unknown task 'nope'; built-in tasks: shapes-vqa"),
    ({"task": "no_such_plugin_module:make_task"}, "task",
     "no_such_plugin_module:make_task: no module named 'no_such_plugin_module' (is its folder on PYTHONPATH?)"),
    ({"task": "json:make_task"}, "task", "json:make_task: module 'json' has no function 'make_task'"),
    ({"model": "no/such/checkpoint"}, "model", "no/such/checkpoint: not a local model directory"),
])
def test_library_errors_name_the_python_parameter(arguments, parameter, problem):
    """`run_training(max_epochs=0)` says ``max_epochs: ...`` (what the caller typed), not a CLI flag; the
    CLI maps `ParameterError.parameter` to its own flag (`flag_message`)."""
    with pytest.raises(ParameterError) as raised:
        run_training(**{"task": "shapes-vqa", **arguments})
    assert raised.value.parameter == parameter
    assert str(raised.value).startswith(f"{parameter}: {problem}"), str(raised.value)
    assert "--" not in str(raised.value)


@pytest.mark.parametrize("task", ["shapes-vqa", "autoaug_test_tasks:make_task"])
def test_a_seed_task_option_is_refused_naming_the_data_seed(task):
    """``--task-option seed=3`` collided with the data seed inside the task call (a TypeError, exit 1);
    now one line naming --data-seed, before any task code runs (built-in and plug-in alike)."""
    from autoaug.trainers.train import resolve_task

    with pytest.raises(ParameterError, match="the data's seed is --data-seed"):
        resolve_task(task, None, 0, {"seed": 3})
