"""One full proxy training run with a policy: what `autoaug train` does and what a search trial runs.

    result = run_training(task="shapes-vqa", policy="moderate", seed=0)

The run is seeded everywhere (`lightning.seed_everything`, the policy's generator, the data order),
validates on the clean val split every epoch, and ends with clean test accuracy and robust accuracy
(see `autoaug.trainers.evaluation`). The tokenizer is fitted on the training texts and saved with
the run.

Plugging in your own task (``--task my_module:make_task``): ``make_task(seed: int)`` returns a
`TaskData` (your splits of `Example`; the tiny VLM is used), or a `TaskPlugin` that also gives
``build_model(tokenizer, task) -> model``. The model must follow `TinyVLM`'s stage interface:
``to_token_stage(batch)``, ``embed(batch)``, ``forward(batch) -> VLMOutput``, ``predict(batch)`` and
``with_saliency(batch)``.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import lightning as L
import torch

from autoaug import __version__
from autoaug.errors import ParameterError
from autoaug.policy import Policy

from . import evaluation
from .lightning_module import ProxyDataModule, ProxyTrialModule
from .model import VARIANTS, build_model
from .prepared import PreparedTask
from .records import TaskData
from .tasks import TaskPluginError, import_task_plugin, load_task_or_data, require_task_or_data
from .tokenizer import TextTokenizer

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
DEFAULT_MAX_EPOCHS = 30
DEFAULT_LEARNING_RATE = 1e-3


@dataclass
class TaskPlugin:
    """What a user's ``make_task(seed)`` may return when it brings its own model."""

    data: TaskData
    build_model: Optional[Callable[[TextTokenizer, TaskData], torch.nn.Module]] = None


class EpochTimer(L.Callback):
    """Wall time of each training epoch (training and validation included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._start)


def resolve_task(task: Optional[str], data: Optional[Union[str, Path]], seed: int,
                 task_options: Optional[dict] = None) -> TaskPlugin:
    """``--task NAME`` (built-in), ``--task module:function`` (a user's plug-in) or ``--data PATH``."""
    require_task_or_data(task, data)
    if "seed" in (task_options or {}):  # it would collide with the data seed every task is built with
        raise ParameterError("task_options", "seed: the data's seed is --data-seed (data_seed), not a task option")
    if task is not None and ":" in task:
        made = _call_plugin(task, seed, task_options or {})
        if isinstance(made, TaskData):
            return TaskPlugin(made)
        if isinstance(made, TaskPlugin):
            return made
        raise ParameterError("task", f"{task}: expected the plug-in to return a TaskData or TaskPlugin, "
                             f"got {type(made).__name__}")
    return TaskPlugin(load_task_or_data(task=task, data=data, seed=seed, **(task_options or {})))


def prepare_task(task: Optional[str], data: Optional[Union[str, Path]], seed: int,
                 task_options: Optional[dict] = None, model: Optional[str] = None) -> PreparedTask:
    """``--task`` / ``--data`` read, tokenised and stacked once (see `PreparedTask`); ``model`` is
    ``--model`` (`autoaug.trainers.hf_vlm`: ``llava-tiny`` or a local checkpoint; None: the tiny VLM)."""
    from .hf_vlm import model_builder

    builder = model_builder(model)  # a bad --model fails before any data is read
    plugin = resolve_task(task, data, seed, task_options)
    if builder is not None and plugin.build_model is not None:
        raise ParameterError("model", f"{model}: the task plug-in ({task}) brings its own model; "
                             "give one or the other")
    return PreparedTask.build(plugin.data, builder or plugin.build_model)


def _call_plugin(task: str, seed: int, options: dict) -> Any:
    """Import ``module:function`` (`import_task_plugin`) and call it with ``seed=`` and the task options.

    A function that cannot be called that way is bad input (`ParameterError` on ``task``, exit 2);
    whatever the user's function raises while running is theirs (`TaskPluginError`, with the traceback).
    """
    factory = import_task_plugin(task).factory
    function_name = task.partition(":")[2]
    try:
        inspect.signature(factory).bind(seed=seed, **options)
    except TypeError as error:
        raise ParameterError("task", f"{task}: {function_name}(seed=...) cannot be called that way "
                             f"({error})") from None
    except ValueError:  # no inspectable signature (a builtin): the call itself will tell
        pass
    try:
        return factory(seed=seed, **options)
    except Exception as error:
        raise TaskPluginError(task, f"{function_name}(seed={seed})", error) from error


def resolve_policy(policy: Union[str, Path, Policy, None], seed: int) -> Policy:
    """A `Policy` from a file, a preset name or an instance; an unseeded policy takes the run's seed."""
    resolved = Policy.load(policy if policy is not None else "none") if not isinstance(policy, Policy) else policy
    if resolved.config.seed is None:
        # Written into the config (not only the generator) so the policy saved with the run replays it.
        resolved = Policy(resolved.config.model_copy(update={"seed": seed}), source=resolved.source)
    return resolved


def run_training(
    task: Optional[str] = None,
    data: Optional[Union[str, Path]] = None,
    policy: Union[str, Path, Policy, None] = "none",
    seed: int = 0,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    variant: str = "encoder",
    batch_size: int = 32,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    accelerator: str = "auto",
    run_dir: Optional[Union[str, Path]] = None,
    progress: bool = False,
    callbacks: Sequence[L.Callback] = (),
    task_options: Optional[dict] = None,
    evaluate: bool = True,
    resume_from: Optional[Union[str, Path]] = None,
    prepared: Optional[PreparedTask] = None,
    data_seed: int = 0,
    model: Optional[str] = None,
    model_options: Optional[dict] = None,
    val_split: str = "val",
    validate_each_epoch: bool = True,
) -> dict[str, Any]:
    """Train once and return the result dict (`autoaug train --json` prints it).

    ``evaluate=False`` skips the final test and robustness evaluation (a search trial must never look
    at the test split); ``resume_from`` continues from a Lightning checkpoint (Population Based
    Training restarts trials from cloned checkpoints); ``prepared`` is the task already tokenised and
    stacked (`prepare_task`; a search builds it once and every trial reuses it) and replaces
    ``task`` / ``data`` / ``task_options``.

    ``seed`` drives the model's initialisation, the data order and the policy's randomness;
    ``data_seed`` the data itself (generating the built-in task, or the seeded split of a user's data
    without splits). Keeping them apart means runs with different seeds are measured on the same
    validation and test examples, and a search's val/test split is the one later runs are judged on.
    ``model_options`` override `TinyVLMConfig` fields of the built-in model (``width``, ``patch_size``...).
    ``val_split`` is the split validated on every epoch (and reported as ``val_accuracy``): ``"val"``,
    or ``"confirm"`` for a search's confirmation run on a task carved by `PreparedTask.with_confirm_split`.
    ``validate_each_epoch=False`` validates after the last epoch only, for runs judged on their final value
    (the search's race and confirmation): validation is about a sixth of an epoch's time on the built-in
    task, and the last epoch's value is the same as with a validation pass every epoch.
    """
    # Errors name the parameter as spelt here (`ParameterError`); the CLI shows its own flag instead.
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ParameterError("max_epochs", f"expected a positive integer, got {max_epochs!r}")
    if variant not in VARIANTS:
        raise ParameterError("variant", f"{variant!r} is not one of {', '.join(VARIANTS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError("batch_size", f"expected a positive integer, got {batch_size!r}")
    if not learning_rate > 0:
        raise ParameterError("learning_rate", f"expected a positive number, got {learning_rate!r}")
    if accelerator not in ACCELERATORS:
        raise ParameterError("accelerator", f"{accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    for name, value in (("seed", seed), ("data_seed", data_seed)):
        if not isinstance(value, int) or value < 0:
            raise ParameterError(name, f"expected a non-negative integer, got {value!r}")
    started = time.perf_counter()
    policy = resolve_policy(policy, seed)
    if prepared is None:
        prepared = prepare_task(task, data, data_seed, task_options, model=model)
    if val_split not in prepared.splits or val_split == "train":
        raise ParameterError("val_split", f"{val_split!r} is not one of "
                             f"{', '.join(name for name in prepared.splits if name != 'train')}")
    task_data, tokenizer = prepared.data, prepared.tokenizer
    L.seed_everything(seed, workers=True, verbose=False)  # model init depends on the seed only
    model_name = model
    model = prepared.build_model(tokenizer, task_data) if prepared.build_model else \
        build_model(tokenizer, task_data.num_classes, image_size=task_data.image_size, variant=variant,
                    **(model_options or {}))
    module = ProxyTrialModule(model, policy, learning_rate=learning_rate)
    datamodule = ProxyDataModule(prepared, batch_size=batch_size, seed=seed, val_split=val_split)
    timer = EpochTimer()
    all_callbacks: list[L.Callback] = [policy.lightning_callback(), timer, *callbacks]
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        all_callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
        num_sanity_val_steps=0, callbacks=all_callbacks, deterministic="warn",
        # validation draws no random numbers, so skipping it leaves training (and the last epoch's
        # value) exactly as it is with a validation pass every epoch
        check_val_every_n_epoch=1 if validate_each_epoch else max(max_epochs, 1),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if not evaluate:
        return {"epochs": trainer.current_epoch, "seconds": time.perf_counter() - started,
                "data_fingerprint": task_data.fingerprint}
    device = module.device
    test_loader, val_loader = datamodule.loader("test"), datamodule.loader(val_split)
    robust = evaluation.robust_accuracies(model, test_loader, device)
    heldout = evaluation.heldout_robust_accuracies(model, test_loader, device)  # corruptions no op produces
    robust_val = evaluation.robust_accuracies(model, val_loader, device)
    train_accuracy = evaluation.accuracy(model, datamodule.loader("train"), device=device)
    val_accuracy = evaluation.accuracy(model, val_loader, device=device)
    result = {
        "task": task_data.name,
        "policy": policy.config.name or policy.source,
        "variant": model.config.variant if hasattr(model, "config") else "custom",
        "model": model_name or "tiny-vlm",
        "seed": seed,
        "data_seed": data_seed,
        "learning_rate": learning_rate,
        "val_accuracy": val_accuracy,
        "test_accuracy": evaluation.accuracy(model, test_loader, device=device),
        "robust_accuracy": sum(robust.values()) / len(robust),
        "robust_val_accuracy": sum(robust_val.values()) / len(robust_val),
        "robust_breakdown": robust,
        "heldout_robust_accuracy": sum(heldout.values()) / len(heldout),
        "heldout_robust_breakdown": heldout,
        "train_accuracy": train_accuracy,
        "train_val_gap": train_accuracy - val_accuracy,
        "epochs": trainer.current_epoch,
        "seconds": time.perf_counter() - started,
        "seconds_per_epoch": sum(timer.seconds) / max(len(timer.seconds), 1),
        "device": str(device),
        "data_fingerprint": task_data.fingerprint,
        "split": task_data.split_record,
        "sizes": {split: len(task_data.split(split)) for split in ("train", "val", "test")},
        "package_version": __version__,
    }
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / "tokenizer.json")
        policy.dump(run_dir / "policy.yaml")
        result["run_dir"] = str(run_dir)
    return result
