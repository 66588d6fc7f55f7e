"""The `autoaug` command line (its contract: docs/ARCHITECTURE.md, "Command line").

With ``--json`` the last line of stdout is one JSON object; tables and progress go elsewhere.
Exit codes: 0 success, 2 bad input (one clear line on stderr), 1 any other failure. A library error
that names a Python parameter (`ParameterError`) is shown with the running command's flag for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autoaug.errors import AutoaugError, AutoaugInputError, Interrupted, ParameterError, one_line
from autoaug.search.samplers import sampler_help
from autoaug.storage import DEFAULT_WORKDIR, redact_url

app = typer.Typer(
    name="autoaug",
    help="Search augmentation policies for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
TASK_OR_DATA_FLAGS = ("--task NAME", "--data PATH")  # how `require_task_or_data` names the two to a CLI user


def stdout_console() -> Console:
    """Tables on stdout; wide enough to stay readable when stdout is a pipe or a file."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def emit_json(result: dict) -> None:
    """Print the result as the last line of stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


@app.command("ops")
def list_ops(
    as_json: bool = typer.Option(False, "--json", help="End stdout with the ops as one JSON object."),
    stage: Optional[str] = typer.Option(None, help="Only ops of this stage (pixel, token, embedding)."),
    modality: Optional[str] = typer.Option(None, help="Only ops of this modality (vision, text, cross)."),
) -> None:
    """List every registered op: stage, modality, magnitude range and whether it mixes labels."""
    from autoaug import ops

    for value, allowed, flag in ((stage, ops.STAGES, "--stage"), (modality, ops.MODALITIES, "--modality")):
        if value is not None and value not in allowed:
            raise AutoaugInputError(f"{flag}: {value!r} is not one of {', '.join(allowed)}")
    rows = [row for row in ops.describe()
            if (stage is None or row["stage"] == stage) and (modality is None or row["modality"] == modality)]
    if as_json:
        emit_json({"ops": rows})
        return
    table = Table(title=f"{len(rows)} registered ops")
    for column in ("name", "stage", "modality", "magnitude 0 → 1", "mixes labels", "summary"):
        table.add_column(column, overflow="fold")
    for row in rows:
        low, high = row["magnitude_range"]
        table.add_row(row["name"], row["stage"], row["modality"], f"{row['parameter']}: {low:g} → {high:g}",
                      "yes" if row["mixes_labels"] else "", row["summary"])
    stdout_console().print(table)


@app.command("show")
def show_policy(
    policy_ref: str = typer.Argument(..., metavar="FILE_OR_PRESET", help="A policy file or a preset name."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with the validated policy as JSON."),
) -> None:
    """Print a policy as a table: op, stage, modality, p, magnitude, schedule (drawn), balance."""
    from autoaug.policy import Policy

    policy = Policy.load(policy_ref)
    config = policy.config
    console = stdout_console()
    title = f"policy {config.name or policy.source}: {config.selection}"
    if config.selection == "random_n":
        title += f" (n={config.n} per sample)"
    if config.entries:
        table = Table(title=title, caption=_policy_caption(config))
        for column in ("#", "op", "stage", "modality", "p", "magnitude", "balance", "schedule", "0 → 1"):
            table.add_column(column, overflow="fold")
        for index, entry in enumerate(config.entries):
            balance = getattr(config.balance, entry.modality)
            table.add_row(str(index), entry.op, entry.stage, entry.modality, f"{entry.p:g}" + (" ×sched" if entry.schedule_p else ""),
                          f"{entry.magnitude:g}", f"×{balance:g}", entry.schedule.describe(), entry.schedule.sparkline())
        console.print(table)
    else:
        console.print(f"policy {config.name or policy.source}: no augmentation (no ops: every batch trains as it is)")
    if config.provenance is not None:
        _print_provenance(console, config.provenance)
    if as_json:
        emit_json({"policy": policy.to_dict()})


def _policy_caption(config) -> str:
    parts = [f"clean fraction {config.clean_fraction:g}", f"augmented loss weight {config.augmented_loss_weight:g}"]
    if config.magnitude_sampling == "uniform":
        parts.append("magnitude drawn uniformly in [0, magnitude]")
    if config.consistency is not None:
        parts.append(f"consistency KL weight {config.consistency.weight:g} (T={config.consistency.temperature:g})")
    return "; ".join(parts)


def _print_provenance(console, provenance) -> None:
    """Where the policy came from, as the search's own summary shows it: the search and its training
    settings in one line, then the confirmation table and the verdict line."""
    origin = [f"study {provenance.study}" if provenance.study else None,
              f"trial {provenance.trial}" if provenance.trial is not None else None,
              f"space {provenance.search_space}" if provenance.search_space else None,
              f"task {provenance.task}" if provenance.task else None,
              f"autoaug {provenance.package_version}" if provenance.package_version else None]
    training = provenance.training
    if training is not None and (training.learning_rate or training.epochs):
        origin.append(f"trained at learning rate {training.learning_rate:g} for {training.epochs} epochs")
    line = ", ".join(part for part in origin if part)
    if line:
        console.print(f"from {line}", highlight=False)
    evidence = provenance.confirmation
    if evidence is None:
        return
    record = evidence.model_dump()
    record["candidates"] = [{**row, "beats_none": row["name"] == evidence.winner and evidence.verdict == "improves"}
                            for row in record["candidates"]]
    console.print(confirmation_table(record))
    console.print(_verdict_line(evidence.verdict, evidence.winner), highlight=False)


TASK_OPTION_HELP = ("An option of the built-in task (repeatable), e.g. --task-option fade=0.5 or --task-option "
                    "train_size=300; values are read as JSON where they parse (numbers, booleans, lists).")


def parse_options(pairs: list[str], flag: str = "--task-option") -> dict:
    """``KEY=VALUE`` pairs of a repeatable ``flag`` (values as JSON where they parse, else the string);
    what reads them (the task) validates names and values. The benchmarks parse theirs with it too."""
    import json

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AutoaugInputError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value.strip()
    return options


@app.command("train")
def train(
    task: Optional[str] = typer.Option(None, "--task", help="Built-in task (shapes-vqa) or module:function of your own."),
    data: Optional[Path] = typer.Option(None, "--data", help="Parquet file/folder (HF image layout) or WebDataset shards."),
    policy: str = typer.Option("none", "--policy", metavar="FILE_OR_PRESET", help="Policy file or preset name."),
    seed: int = typer.Option(0, "--seed", help="Seed of the model init, the data order and the policy."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the data: the built-in task's examples, or the split of data without one."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Training epochs (default: the calibrated length with --from-search, else the training default)."),
    task_options: list[str] = typer.Option([], "--task-option", metavar="KEY=VALUE", help=TASK_OPTION_HELP),
    variant: str = typer.Option("encoder", "--variant", help="Tiny VLM variant: encoder or causal."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME_OR_PATH", help="Model: the built-in tiny VLM (default), llava-tiny, or a local Hugging Face LLaVA checkpoint folder."),
    batch_size: int = typer.Option(32, "--batch-size", help="Training batch size."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="AdamW learning rate (default: the calibrated one with --from-search, else the training default)."),
    from_search: Optional[str] = typer.Option(None, "--from-search", metavar="STUDY", help="Train as that search's calibration chose (learning rate, epochs); read from --workdir / --storage."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL of --from-search's study (default: --workdir's)."),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
    workdir: Path = typer.Option(Path(DEFAULT_WORKDIR), "--workdir", help="Where the run's tokenizer and policy are saved."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with the result as one JSON object."),
) -> None:
    """One full training run with a policy, evaluated on the clean test split (and under corruptions)."""
    from autoaug.policy import Policy
    from autoaug.trainers.tasks import require_task_or_data
    from autoaug.trainers.train import DEFAULT_LEARNING_RATE, DEFAULT_MAX_EPOCHS, run_training

    require_task_or_data(task, data, names=TASK_OR_DATA_FLAGS)
    resolved = Policy.load(policy)  # fail on a bad policy before any data is read
    name = task.replace(":", "_") if task else Path(data).stem
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = workdir / "train" / f"{name}-{resolved.config.name or Path(policy).stem}-seed{seed}-{stamp}-{os.getpid()}"
    calibrated = _calibration_of(from_search, workdir, storage) if from_search else {}
    if from_search:
        stderr.print(f"as search {from_search} calibrated: learning rate {calibrated['learning_rate']:g}, "
                     f"{calibrated['epochs']} epochs (explicit flags win)")
    _quiet_library_banners()
    result = run_training(task=task, data=data, policy=resolved, seed=seed, data_seed=data_seed,
                          max_epochs=_first_given(max_epochs, calibrated.get("epochs"), DEFAULT_MAX_EPOCHS),
                          variant=variant, batch_size=batch_size,
                          learning_rate=_first_given(learning_rate, calibrated.get("learning_rate"), DEFAULT_LEARNING_RATE),
                          accelerator=accelerator, run_dir=run_dir, progress=stderr.is_terminal, model=model,
                          task_options=parse_options(task_options) or None)
    summary = Table(title=f"{result['task']} with policy {result['policy']} (seed {seed})")
    for column in ("val", "test", "robust", "train-val gap", "epochs", "seconds"):
        summary.add_column(column)
    summary.add_row(f"{result['val_accuracy']:.3f}", f"{result['test_accuracy']:.3f}",
                    f"{result['robust_accuracy']:.3f}", f"{result['train_val_gap']:+.3f}",
                    str(result["epochs"]), f"{result['seconds']:.1f}")
    stderr.print(summary)
    stderr.print(f"run saved in {run_dir}")
    if as_json:
        emit_json(result)


def _first_given(*values):
    return next(value for value in values if value is not None)


def _calibration_of(study_name: str, workdir: Path, storage: Optional[str]) -> dict:
    """The learning rate and trial length a search's calibration chose."""
    from autoaug.search.export import open_study

    record = open_study(study_name, workdir, storage).user_attrs.get("calibration")
    if not record:
        raise AutoaugInputError(f"--from-search {study_name}: that search ran no calibration (it was run with --no-calibrate)")
    return {"learning_rate": record["learning_rate"], "epochs": record["trial_epochs"]}


def parse_learning_rates(text: str) -> tuple[float, ...]:
    """``--learning-rates`` as numbers ("3e-4,1e-3" -> (0.0003, 0.001)); empty parts are skipped, and
    whether the numbers are usable (positive, at least one) is `SearchRequest.validate`'s to say."""
    try:
        return tuple(float(rate) for rate in text.split(",") if rate.strip())
    except ValueError:
        raise ParameterError("learning_rates", f"expected comma-separated numbers, got {text!r}") from None


def _quiet_library_banners() -> None:
    """Lightning's banners, Optuna's "A new study created" / "Using an existing study" (once per stage)
    and MLflow's table-creation notes stay off the terminal: our progress and summary say what
    happened, stdout is kept for the result. Warnings and errors still show."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("optuna", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*transfer_batch_to_device.*")


@app.command("search")
def search(
    space: str = typer.Option(..., "--space", metavar="FILE_OR_NAME", help="Search space file or shipped name (vlm_default, vlm_balanced, randaugment, pba_schedule)."),
    name: str = typer.Option(..., "--name", metavar="STUDY", help="Study name: one name is one resumable search."),
    task: Optional[str] = typer.Option(None, "--task", help="Built-in task (shapes-vqa) or module:function."),
    data: Optional[Path] = typer.Option(None, "--data", help="Parquet file/folder or WebDataset shards."),
    trials: int = typer.Option(24, "--trials", help="Searched trials to finish (baselines come on top)."),
    sampler: str = typer.Option("tpe", "--sampler", help=sampler_help()),
    scheduler: str = typer.Option("asha", "--scheduler", help="asha (stop weak trials early), pbt, none."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="CPUs per trial (fractions below 1 allowed)."),
    gpus_per_trial: Optional[float] = typer.Option(None, "--gpus-per-trial", help="GPUs per trial (fractions allowed). Default: 1 when the Ray cluster has GPUs, else 0; 0 keeps trials on CPU."),
    address: Optional[str] = typer.Option(None, "--address", help="Join a running Ray cluster (ray start --head ...)."),
    storage_path: Optional[str] = typer.Option(None, "--storage-path", help="Ray's results and trial checkpoints: a folder every node sees, or s3://... (needed for --scheduler pbt on several nodes). Default: the workdir's ray folder."),
    workdir: Path = typer.Option(Path(DEFAULT_WORKDIR), "--workdir", help="Embedded Optuna/MLflow stores and Ray results."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (e.g. postgresql+psycopg://...)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (e.g. http://mlflow:5000)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of every trial's training (all trials share it: same init, same data order)."),
    data_seed: int = typer.Option(0, "--data-seed", help="Seed of the data (built-in task generation, split of data without one)."),
    task_options: list[str] = typer.Option([], "--task-option", metavar="KEY=VALUE", help=TASK_OPTION_HELP),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Calibration length: the longest trial considered (without calibration: the trial length). Default: the training default."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="Fix the learning rate: calibration then trains only at this rate (trial length, image check), and trials, confirmation and train --from-search use it."),
    learning_rates: str = typer.Option("3e-4,1e-3,3e-3", "--learning-rates", help="Learning rates the calibration tries (comma-separated)."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="Calibrate learning rate, trial length and the image check on `none` first."),
    force: bool = typer.Option(False, "--force", help="Search even when calibration finds the model does not use the images."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Retrain the best candidates and none on fresh seeds, scored on the held-out confirm part, before export."),
    confirm_top_k: int = typer.Option(1, "--confirm-top-k", help="Candidates the confirmation retrains beside none: the best by selection score among searched trials, screen trials and presets, tested in that order."),
    confirm_seeds: int = typer.Option(17, "--confirm-seeds", help="Fresh seeds per confirmed candidate and none (>= 2; 17 gives power 0.79 for a +0.02 gain on 500 confirm examples: benchmarks/search_surrogate.py)."),
    confirm_holdout: bool = typer.Option(True, "--confirm-holdout/--no-confirm-holdout", help="Confirm on a held-out part of the validation split that calibration, trials and their ranking never see (--no-confirm-holdout: on the same validation examples)."),
    confirm_fraction: float = typer.Option(0.5, "--confirm-fraction", help="The held-out part's share of the validation examples, in (0, 1)."),
    screen: bool = typer.Option(True, "--screen/--no-screen", help="Before the sampler, try every op of the space alone against none (one trial each) and search combinations of those not clearly harmful."),
    race: str = typer.Option("6x1,3x2", "--race", metavar="ROUNDS", help="Before the confirmation, more seeds for the best candidates on the selection examples: KEEPxSEEDS rounds (6x1,3x2: the 6 best by the search's value and none get 1 more seed, then the 3 best by mean gain 2 more), or 'off'. The confirmation tests the race's order."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run every preset as a trial of the study."),
    reuse_workers: bool = typer.Option(True, "--reuse-workers/--no-reuse-workers", help="Keep each slot's worker process from trial to trial."),
    model: Optional[str] = typer.Option(None, "--model", metavar="NAME_OR_PATH", help="Model: the built-in tiny VLM (default), llava-tiny, or a local Hugging Face LLaVA checkpoint folder."),
    max_failures: int = typer.Option(0, "--max-failures", help="Retry a failed trial (it raised, or its worker process died) up to N times from its start on a fresh worker before recording it failed; 0: record it failed at once. Failed trials never stop the search; a search whose trials all fail exits 1 naming the first error."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with the result as one JSON object."),
) -> None:
    """Run (or resume) a policy search: calibration, trials (Optuna proposes, Ray Tune runs and stops them,
    MLflow records), then confirmation of the best candidates on fresh seeds and export."""
    from autoaug.search.controller import SearchRequest, run_search
    from autoaug.trainers.tasks import require_task_or_data

    require_task_or_data(task, data, names=TASK_OR_DATA_FLAGS)  # the library's message names its parameters
    rates = parse_learning_rates(learning_rates)
    _quiet_library_banners()
    request = SearchRequest(space=space, name=name, task=task, data=str(data) if data else None, trials=trials,
                            sampler=sampler, scheduler=scheduler, cpus_per_trial=cpus_per_trial,
                            gpus_per_trial=gpus_per_trial, address=address, workdir=str(workdir), storage=storage,
                            tracking_uri=tracking_uri, seed=seed, max_epochs=max_epochs, baselines=baselines,
                            data_seed=data_seed, task_options=parse_options(task_options) or None,
                            learning_rate=learning_rate, learning_rates=rates,
                            calibrate=calibrate, force=force, confirm=confirm, confirm_top_k=confirm_top_k,
                            confirm_seeds=confirm_seeds, confirm_holdout=confirm_holdout,
                            confirm_fraction=confirm_fraction, screen=screen, race=race, reuse_workers=reuse_workers, model=model,
                            max_failures=max_failures, storage_path=storage_path)
    try:
        result = run_search(request, console=stderr)
    except KeyboardInterrupt:  # Ctrl-C: every stage stores what finished as it finishes
        raise Interrupted(f"search {name}: interrupted; finished runs are kept: run the same command again and "
                          f"the search resumes") from None
    if result.get("error"):  # every searched trial failed: no best policy, exit 1 with the first error
        raise AutoaugError(result["error"])
    table = Table(title=f"search {name}")
    for column in ("best single-seed val (selection)", "its trial", "complete", "stopped early", "failed", "seconds"):
        table.add_column(column)
    best = "—" if result["best_value"] is None else f"{result['best_value']:.4f}"
    table.add_row(best, str(result["best_trial"]), str(result["n_complete"]), str(result["n_pruned"]),
                  str(result["n_failed"]), f"{result['seconds']:.0f}")
    stderr.print(table)
    for label, value in result["baselines"].items():
        stderr.print(f"  baseline {label}: val accuracy {value if value is None else round(value, 4)}")
    if result.get("calibration"):
        calibration = result["calibration"]
        stderr.print(_calibration_line(calibration), highlight=False)
    if result.get("screen"):
        screen = result["screen"]
        stderr.print(f"screen: {len(screen['survivors'])} of {len(screen['ops'])} ops went on to the search "
                     f"({', '.join(screen['survivors'])})", highlight=False)
    if result.get("race"):
        stderr.print(_race_line(result["race"]), highlight=False)
    if result.get("confirmation"):
        _print_confirmation(result["confirmation"])
    if result.get("result"):
        stderr.print(_result_line(result["result"]), highlight=False)
    stderr.print(f"best policy: {result['best_policy_path']}")
    stderr.print(f"records: MLflow {result['tracking_uri']} (experiment {result['mlflow_experiment_id']}), "
                 f"Optuna {result['optuna_storage']}")
    where = "" if str(workdir) == DEFAULT_WORKDIR else f" --workdir {workdir}"
    stderr.print(f"compare trials: autoaug ui --name {name}{where}   |   report: autoaug report --name {name}{where} "
                 f"--out {name}-report.html", soft_wrap=True, highlight=False)
    if as_json:
        emit_json(result)


def _result_line(result: dict) -> str:
    """The search's answer in one line: the exported policy and how its score was measured."""
    value = "—" if result.get("value") is None else f"{result['value']:.4f}"
    spread = f" ± {result['se']:.4f}" if result.get("se") is not None else ""
    verdict = f"verdict {result['verdict']}, " if result.get("verdict") else ""
    return f"result: {result['policy']} — {verdict}val accuracy {value}{spread}, {result['measured_on']}"


def _calibration_line(calibration: dict) -> str:
    """One line: the calibrated rate and length, why that length, and the image check's two numbers."""
    def score(value) -> str:
        return "failed" if value is None else f"{value:.3f}"

    if calibration.get("regime_epoch") is not None:
        why = f"none's {calibration['regime']} signal at epoch {calibration['regime_epoch']}"
    elif calibration.get("reaches_regime") is False:
        why = "none never reached the overfitting regime within the budget (--force)"
    else:  # a record from before the regime rule
        why = f"none stops rising at epoch {calibration.get('plateau_epoch')}"
    line = (f"calibration: learning rate {calibration['learning_rate']:g}, trials of {calibration['trial_epochs']} "
            f"epochs ({why}); val accuracy none {score(calibration.get('none_val_accuracy'))} vs question-only "
            f"{score(calibration.get('question_only_val_accuracy'))}")
    if calibration.get("learning_rate_chosen_on") == "train_holdout":
        line += (f"; validation differs from training data (held-out training examples peak "
                 f"{calibration['shift']:+.3f} above it): the rate was chosen on them")
    if calibration.get("image_margin_holdout") is not None:
        line += (f"; on {calibration['holdout_examples']} held-out training examples none beats question-only by "
                 f"{calibration['image_margin_holdout']:+.3f} (needed {calibration['image_margin_holdout_needed']:.3f})")
    return line


def _race_line(record: dict) -> str:
    """The race's order with each candidate's mean paired gain over none and its seeds."""
    def gain(row):
        return "no pair" if row["mean_gain"] is None else f"{row['mean_gain']:+.4f} over {row['n']} seeds"
    ranked = ", ".join(f"{row['name']} {gain(row)}" for row in record["candidates"][:3])
    return f"race ({record['runs']} runs on the selection examples): {ranked}"


def _print_confirmation(record: dict) -> None:
    """The confirmation as the search's terminal summary shows it: one row per candidate, the verdict line."""
    stderr.print(confirmation_table(record))
    stderr.print(_verdict_line(record["verdict"], record["winner"], record.get("verdict_reason")), highlight=False)


def confirmation_table(record: dict) -> Table:
    """Per candidate: mean ± SE, the difference to none paired by seed ± SE, the corrected p-value."""
    split = record.get("split", "val")
    where = "the held-out confirm part" if split == "confirm" else "validation"
    table = Table(title=f"confirmation on {len(record['seeds'])} fresh seeds ({where}, accuracy; "
                        f"difference to none paired by seed)")
    for column in ("candidate", "mean ± SE", "vs none ± SE", "p (corrected)", "gain"):
        table.add_column(column)
    for row in record["candidates"]:
        mean = "—" if row.get("mean") is None else f"{row['mean']:.4f} ± {row.get('se') or 0:.4f}"
        diff = "" if row["name"] == "none" or row.get("diff_vs_none") is None else \
            f"{row['diff_vs_none']:+.4f} ± {row.get('diff_se') or 0:.4f}"
        adjusted = row.get("p_adjusted")
        table.add_row(row["name"], mean, diff, "" if adjusted is None else f"{adjusted:.3g}",
                      "yes" if row.get("beats_none") else "")
    return table


def _verdict_line(verdict: str, winner: str, reason: Optional[str] = None) -> str:
    if verdict == "improves":
        return (f"verdict: improves — {winner} beats no augmentation on examples and seeds selection never used "
                "(one-sided paired test, corrected for every candidate); it is the export")
    if verdict == "inconclusive":
        return (f"verdict: inconclusive — {reason or 'runs the decision needs failed'}; the exported policy is `none`; "
                "run the same command again to retry the failed runs")
    return (f"verdict: no-gain — {reason or 'no candidate beat no augmentation'}; "
            "the exported policy is `none` (no augmentation)")


@app.command("export")
def export(
    name: str = typer.Option(..., "--name", metavar="STUDY", help="The study to export from."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="Policy file to write (.yaml or .json)."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Export this trial instead (a trial stopped early is refused: its value ranks with nothing). Default: the confirmation's winner — `none` unless a candidate improved on it; a search run with --no-confirm: its best full-length trial."),
    workdir: Path = typer.Option(Path(DEFAULT_WORKDIR), "--workdir", help="Where the embedded Optuna store lives."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides --workdir)."),
    allow_stopped_early: bool = typer.Option(False, "--allow-stopped-early", help="With --trial: export a trial early stopping cut (its file records no value: the rung's value ranks with nothing)."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with {path, trial, study} as JSON, plus verdict and winner when the confirmed winner is exported."),
) -> None:
    """Write the search's confirmed winner (or --trial N), with its provenance, as a file Policy.load reads."""
    from autoaug.search.export import export_from_storage

    path, number = export_from_storage(name, out, workdir=workdir, storage=storage, trial=trial,
                                       allow_stopped_early=allow_stopped_early)
    evidence = None
    if trial is None:
        from autoaug.policy import Policy

        provenance = Policy.load(path).config.provenance
        evidence = provenance.confirmation if provenance is not None else None
    if evidence is not None:
        stderr.print(_verdict_line(evidence.verdict, evidence.winner))
        stderr.print(f"wrote the confirmed policy ({evidence.winner}) of {name} to {path}")
    else:
        stderr.print(f"wrote trial {number} of {name} to {path}")
    if as_json:
        emit_json({"path": str(path), "trial": number, "study": name,
                   **({"verdict": evidence.verdict, "winner": evidence.winner} if evidence else {})})


@app.command("ui")
def ui(
    workdir: Path = typer.Option(Path(DEFAULT_WORKDIR), "--workdir", help="The search records to serve."),
    name: Optional[str] = typer.Option(None, "--name", metavar="STUDY", help="Open this study (default: list every study)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes the records to the network)."),
    port: int = typer.Option(5000, "--port", help="Port of the MLflow UI."),
    dashboard_port: Optional[int] = typer.Option(None, "--dashboard-port", help="Port of optuna-dashboard (default: --port + 1)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides --workdir)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow database store URI (overrides --workdir)."),
) -> None:
    """Serve the MLflow UI (opened on the study's trials) and optuna-dashboard; Ctrl-C stops both."""
    from autoaug.dashboards.ui import host_warning, plan, serve

    warning = host_warning(host)
    if warning:
        stderr.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    prepared = plan(workdir=workdir, name=name, host=host, port=port, dashboard_port=dashboard_port,
                    storage=storage, tracking_uri=tracking_uri)
    code = serve(prepared, Console(stderr=False, highlight=False))
    if code:
        raise typer.Exit(code)


@app.command("report")
def report(
    name: str = typer.Option(..., "--name", metavar="STUDY", help="The study to report on."),
    out: Path = typer.Option(..., "--out", metavar="FILE", help="HTML file to write (self-contained, opens offline)."),
    workdir: Path = typer.Option(Path(DEFAULT_WORKDIR), "--workdir", help="Where the search records live."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides --workdir)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (overrides --workdir)."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with {path, study, n_trials, best_value} as JSON."),
) -> None:
    """Write one self-contained HTML report of a search: cost, scores, ops, importance, curves."""
    from autoaug.dashboards.report import write_report

    summary = write_report(name, out, workdir=workdir, storage=storage, tracking_uri=tracking_uri)
    for note in summary["notes"]:
        stderr.print(f"note: {note}", highlight=False, soft_wrap=True)
    stderr.print(f"wrote the report of {name} to {summary['path']}", highlight=False, soft_wrap=True)
    if as_json:
        emit_json({key: value for key, value in summary.items() if key != "notes"})


@dataclass
class Invocation:
    """What `main` needs once a command has raised: filled by the root callback through Click's context
    object (``ctx.obj``), one per `main` call, so nothing is kept in module state between calls."""

    debug: bool = False  # the root --debug: print the traceback after the one-line message
    command: Optional[typer.core.TyperCommand] = None  # the subcommand that ran

    def flag_for(self, parameter: str) -> Optional[str]:
        """The running command's long flag whose Python parameter is ``parameter``; None when that
        parameter is no flag of this command (an argument, or a name only the library knows)."""
        if self.command is None:
            return None
        # by Click's public param_type_name: typer 0.29 vendors its own Click, so click.Option's class
        # is not the base of typer's options
        for option in self.command.params:
            if option.name == parameter and option.param_type_name == "option":
                return next((flag for flag in option.opts if flag.startswith("--")), option.opts[0])
        return None

    def message(self, error: AutoaugInputError) -> str:
        """``error``'s line, with the flag in place of the Python parameter's name where there is one."""
        flag = self.flag_for(error.parameter) if isinstance(error, ParameterError) else None
        return error.flag_message(flag) if flag else str(error)


@app.callback()
def _root(context: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="On an error, print the full traceback "
                                                            "after the one-line message.")) -> None:
    """Search augmentation policies for vision-language models."""
    invocation = context.ensure_object(Invocation)
    invocation.debug = debug
    if context.invoked_subcommand is not None:
        invocation.command = context.command.get_command(context, context.invoked_subcommand)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app and map errors onto the exit codes of the CLI contract.

    Usage errors (an unknown flag, a missing option, a value of the wrong type) and input errors raised
    by our own code become one line and exit 2, anything else one line and exit 1 — never a traceback,
    unless ``autoaug --debug`` asks for it. Click's own usage box is several lines, so the app runs
    outside its standalone mode. Every line is redacted: a library error may quote a URL with its
    password.
    """
    invocation = Invocation()
    try:
        code = app(args=argv, standalone_mode=False, obj=invocation)
    except typer.Abort:
        stderr.print("aborted", highlight=False)
        sys.exit(130)
    except typer.TyperException as error:  # Click's usage errors, vendored by typer
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `autoaug`: the help, as before
            error.show()
            sys.exit(error.exit_code)
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "autoaug"
        _print_error("error", one_line(f"{command}: {error.format_message()} (see {command} --help)"))
        sys.exit(error.exit_code)
    except Exception as raised:
        error = _reported(raised)
        if isinstance(error, AutoaugInputError):
            label, code, text = "error", 2, invocation.message(error)
        elif isinstance(error, AutoaugError):
            label, code, text = "stopped", getattr(error, "exit_code", 1), str(error)
        else:
            # a library's error spans many lines (its first says what happened); a plug-in's error
            # carries the user's own traceback on purpose
            shown = str(error) if getattr(error, "carries_user_traceback", False) else _first_line(error)
            label, code, text = "failed", 1, f"{type(error).__name__}: {shown}"
        _print_error(label, redact_url(text))
        if invocation.debug:
            import traceback

            stderr.print(redact_url("".join(traceback.format_exception(raised))), markup=False, highlight=False)
        sys.exit(code)
    # standalone mode ended every run with SystemExit; callers (and tests) rely on it, success included
    sys.exit(code if isinstance(code, int) else 0)  # an int: typer.Exit(code) from a command


def _print_error(label: str, text: str) -> None:
    stderr.print(f"[bold red]{label}:[/] ", end="", highlight=False)
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # [...] in messages is text


def _reported(error: BaseException) -> BaseException:
    """The error to report: ours when a library wrapped it (Ray Tune turns an error raised in a callback
    into a TuneError whose text is a whole traceback, with the original as its context); else the error
    itself, or the innermost one when its own text is a traceback."""
    chain, link = [], error
    while link is not None and link not in chain:
        if isinstance(link, (AutoaugInputError, AutoaugError)):
            return link
        chain.append(link)
        link = link.__cause__ or link.__context__
    return error if _first_line(error) and not _first_line(error).startswith("Traceback") else chain[-1]


def _first_line(error: BaseException) -> str:
    """Library errors (SQLAlchemy, MLflow) span many lines: the first says what happened."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


if __name__ == "__main__":
    main()
