"""Export a trial's policy as a reusable file with provenance (docs/ARCHITECTURE.md, "Export").

The policy comes from the Optuna study (each trial stores the policy it ran), so export needs no
search space file and no Ray; exporting the same trial twice gives the same bytes (no timestamps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from optuna.trial import TrialState

from autoaug import __version__
from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.policy import Policy
from autoaug.search.record_schema import (BASELINE_ATTR, CALIBRATION_ATTR, CONFIRMATION_ATTR, MAX_EPOCHS_ATTR, METRIC,
                                          POLICY_ATTR, ROBUST_METRIC, SPACE_HASH_ATTR, SPACE_NAME_ATTR, STATE_ATTR,
                                          STOPPED_EPOCH_ATTR)
from autoaug.search.study import ROBUST_TOLERANCE, best_trial, pareto_front
from autoaug.storage import DEFAULT_WORKDIR


def stopped_early(trial) -> bool:
    """Whether the search stopped ``trial`` before its full length (ASHA): PRUNED in Optuna (what the
    search's recorder tells it), or — in studies from before it did — COMPLETE with the recorded state
    ``pruned``. A trial without a recorded state (a hand-made study) counts as complete, as `best_trial`
    counts it."""
    return trial.state == TrialState.PRUNED or trial.user_attrs.get(STATE_ATTR, "complete") == "pruned"


def stopped_early_message(study, trial) -> str:
    """One line: trial N stopped early at epoch E (of T), its value is not comparable; what to export instead."""
    epoch = trial.user_attrs.get(STOPPED_EPOCH_ATTR)
    # the trials' full length: calibration's when it ran (it sets the trial length), else --max-epochs
    length = (study.user_attrs.get(CALIBRATION_ATTR) or {}).get("trial_epochs") or study.user_attrs.get(MAX_EPOCHS_ATTR)
    at = f" at epoch {epoch}" + (f" of {length}" if length else "") if epoch is not None else ""
    value = f" ({METRIC} {trial.values[0]:.4f} there)" if trial.values else ""
    if CONFIRMATION_ATTR in study.user_attrs:
        record = study.user_attrs[CONFIRMATION_ATTR]
        instead = f"the confirmed winner is {record['winner']} (verdict {record['verdict']}): omit --trial to export it"
    else:
        complete = [other.number for other in study.get_trials(deepcopy=False)
                    if other.state == TrialState.COMPLETE and not stopped_early(other)
                    and POLICY_ATTR in other.user_attrs]
        instead = (f"complete trials: {_numbers(complete)}" if complete else "the study has no complete trial yet")
    return (f"--trial {trial.number}: trial {trial.number} was stopped early{at}{value}, its value is not "
            f"comparable with complete trials; {instead} (or pass --allow-stopped-early)")


def _numbers(numbers: list[int], shown: int = 12) -> str:
    listed = ", ".join(map(str, numbers[:shown]))
    return listed + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def export_policy(study, trial_number: int, out: Union[str, Path]) -> Path:
    """Write trial ``trial_number``'s policy, with provenance, to ``out`` (YAML, or JSON by suffix).

    A trial stopped early is written without a value (``provenance.value`` null: the value of the
    epoch it stopped at ranks with nothing) and its description says so; `export_from_storage`
    refuses such a trial unless asked."""
    trial = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number)
    data = dict(trial.user_attrs.get(POLICY_ATTR) or {})
    if not data:
        raise AutoaugInputError(f"study {study.study_name}: trial {trial_number} recorded no policy")
    attrs = study.user_attrs
    data["name"] = f"{study.study_name}-trial{trial_number}"
    if BASELINE_ATTR in trial.user_attrs:
        data["name"] += f"-{trial.user_attrs[BASELINE_ATTR]}"
    stopped = stopped_early(trial)
    if stopped:
        data["name"] += "-stopped-early"
        epoch = trial.user_attrs.get(STOPPED_EPOCH_ATTR)
        data["description"] = (f"trial {trial_number} of {study.study_name} was stopped early"
                               + (f" at epoch {epoch}" if epoch is not None else "")
                               + f"; its {METRIC} there is not comparable with complete trials, so none is recorded")
    data["provenance"] = {
        "study": study.study_name,
        "trial": trial_number,
        "metric": METRIC,
        "value": trial.values[0] if trial.values and not stopped else None,
        "seeds": {"search": int(attrs.get("seed", 0)), "trial": int(attrs.get("seed", 0))},
        "search_space": attrs.get(SPACE_NAME_ATTR),
        "search_space_hash": attrs.get(SPACE_HASH_ATTR),
        "data_fingerprint": trial.user_attrs.get("data_fingerprint") or attrs.get("data_fingerprint"),
        "task": attrs.get("task"),
        "package_version": attrs.get("package_version", __version__),
    }
    policy = Policy.from_dict(data, source=f"study {study.study_name} trial {trial_number}")
    return _write(policy, out)


def export_confirmed(study, out: Union[str, Path]) -> Path:
    """Write the confirmation's winner — possibly ``none`` — with the evidence in its provenance."""
    record = study.user_attrs[CONFIRMATION_ATTR]
    attrs = study.user_attrs
    data = dict(record["winner_policy"])
    data["name"] = f"{study.study_name}-confirmed-{record['winner'].replace(' ', '-')}"
    data.pop("seed", None)  # the training run's own seed drives the augmentation
    winner = next(row for row in record["candidates"] if row["name"] == record["winner"])
    data["provenance"] = {
        "study": study.study_name,
        "trial": record.get("winner_trial"),
        "metric": METRIC,
        "value": winner["mean"],
        "seeds": {"search": int(attrs.get("seed", 0)),
                  **{f"confirmation_{index}": seed for index, seed in enumerate(record["seeds"])}},
        "search_space": attrs.get(SPACE_NAME_ATTR),
        "search_space_hash": attrs.get(SPACE_HASH_ATTR),
        "data_fingerprint": attrs.get("data_fingerprint"),
        "task": attrs.get("task"),
        "package_version": attrs.get("package_version", __version__),
        "training": {"learning_rate": record.get("learning_rate"), "epochs": record.get("epochs")},
        "confirmation": {
            "verdict": record["verdict"], "winner": record["winner"], "metric": record["metric"],
            "split": record["split"], "seeds": record["seeds"],
            "candidates": [{key: row.get(key) for key in ("name", "mean", "se", "diff_vs_none", "diff_se", "n",
                                                          "p_adjusted")}
                           for row in record["candidates"]],
        },
    }
    policy = Policy.from_dict(data, source=f"study {study.study_name} confirmation")
    return _write(policy, out)


def export_best(study, out: Union[str, Path], best=None) -> tuple[Path, Optional[int]]:
    """The search's export: the confirmed winner when the search confirmed, else the best trial.
    ``best``: ``best_trial(study)`` when the caller has it already (a search computes it once);
    None: computed here."""
    if CONFIRMATION_ATTR in study.user_attrs:
        return export_confirmed(study, out), study.user_attrs[CONFIRMATION_ATTR].get("winner_trial")
    chosen = best if best is not None else best_trial(study)
    if chosen is None:
        raise ParameterError("name", f"{study.study_name}: the study has no complete trial to export yet")
    return export_policy(study, chosen.number, out), chosen.number


def export_search(study, name: str, exports_dir: Path, export: bool = True, *, best) -> dict:
    """What a finished search exports into ``exports_dir``: ``<name>-best.yaml`` (the confirmed winner
    when the search confirmed, else the best trial) and, for a two-objective search, its Pareto front
    as one policy file per front trial. ``export=False`` (every searched trial failed) writes nothing.
    ``best`` is ``best_trial(study)``, computed once by the caller (it scans every trial, and the
    summary needs it too); None: the study has no complete full-length trial, nothing is exported.
    Returns the result's keys: ``best_policy_path`` (None when nothing was exported) and, with two
    objectives, ``pareto_front`` and ``export_rule``."""
    best_path = exports_dir / f"{name}-best.yaml"
    # a driver killed while exporting leaves its temporary file (`_write`); this driver holds the
    # study (`exclusive`), so any temporary of this export is such a leftover
    for leftover in best_path.parent.glob(f".{best_path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    if not export or best is None:
        return {"best_policy_path": None}
    exports_dir.mkdir(parents=True, exist_ok=True)
    export_best(study, best_path, best)
    exported: dict = {"best_policy_path": str(best_path)}
    if len(study.directions) > 1:
        exported.update(_export_front(study, exports_dir / f"{name}-pareto"))
    return exported


def _export_front(study, folder: Path) -> dict:
    """A two-objective search exports its Pareto front as a set (one policy file per front trial)
    and names the rule that chose ``best_trial`` from it."""
    front = []
    for trial in pareto_front(study):
        folder.mkdir(parents=True, exist_ok=True)
        path = export_policy(study, trial.number, folder / f"trial{trial.number}.yaml")
        front.append({"trial": trial.number, METRIC: trial.values[0], ROBUST_METRIC: trial.values[1],
                      "policy_path": str(path)})
    return {"pareto_front": front,
            "export_rule": f"best {METRIC} among front trials whose {ROBUST_METRIC} is within "
                           f"{ROBUST_TOLERANCE} of the front's best"}


def _write(policy: Policy, out: Union[str, Path]) -> Path:
    """Write atomically: the text goes to a temporary file beside ``out``, then replaces it, so a
    process killed mid-write (a driver SIGKILLed during export) leaves the old file or the new one,
    never a truncated policy."""
    import os
    import tempfile

    out = Path(out)
    text = policy.dumps("json" if out.suffix == ".json" else "yaml")
    temporary = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
        return out
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise AutoaugInputError(f"--out {out}: cannot write ({error.strerror or error})") from None


def export_from_storage(name: str, out: Union[str, Path], workdir: Union[str, Path] = DEFAULT_WORKDIR,
                        storage: Optional[str] = None, trial: Optional[int] = None,
                        allow_stopped_early: bool = False) -> tuple[Path, Optional[int]]:
    """`autoaug export`: open the study, pick the policy (``trial``, else the confirmed winner, else the
    best full-length trial), write the file; returns the path and the trial number (``None`` when the
    confirmed winner is ``none``; the evidence is in the file's provenance)."""
    study = open_study(name, workdir, storage)
    if trial is None:
        return export_best(study, out)
    return export_trial(study, trial, out, allow_stopped_early), trial


def export_trial(study, trial_number: int, out: Union[str, Path], allow_stopped_early: bool = False) -> Path:
    """``--trial N``: write that trial's policy. A trial the search stopped early is refused (its value
    is the epoch it was stopped at, which ranks with nothing), unless ``allow_stopped_early``; then the
    file records no value and says why (`export_policy`)."""
    chosen = next((trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number), None)
    if chosen is None or not stopped_early(chosen):
        chosen = best_trial(study, trial_number)  # an unknown or unfinished trial: its one-line refusal
    elif not allow_stopped_early:
        raise AutoaugInputError(stopped_early_message(study, chosen))
    return export_policy(study, chosen.number, out)


def open_study(name: str, workdir: Union[str, Path] = DEFAULT_WORKDIR, storage: Optional[str] = None):
    """A search's Optuna study by name, from ``--storage`` or the embedded store of ``--workdir``
    (read-only; a missing store or an unknown name is a one-line error)."""
    from autoaug.storage import find_records
    from autoaug.storage import open_study as open_recorded_study

    return open_recorded_study(find_records(workdir, storage).optuna_url, name)
