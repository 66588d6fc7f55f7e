"""Export a trial's policy as a reusable file with provenance (DESIGN §8).

The policy comes from the Optuna study (each trial stores the policy it ran), so export needs no
search space file and no Ray; exporting the same trial twice gives the same bytes (no timestamps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from autoaug import __version__
from autoaug.errors import AutoaugInputError
from autoaug.policy import Policy
from autoaug.search.records import BASELINE_ATTR, POLICY_ATTR


def export_policy(study, trial_number: int, out: Union[str, Path]) -> Path:
    """Write trial ``trial_number``'s policy, with provenance, to ``out`` (YAML, or JSON by suffix)."""
    trial = next(trial for trial in study.get_trials(deepcopy=False) if trial.number == trial_number)
    data = dict(trial.user_attrs.get(POLICY_ATTR) or {})
    if not data:
        raise AutoaugInputError(f"study {study.study_name}: trial {trial_number} recorded no policy")
    attrs = study.user_attrs
    data["name"] = f"{study.study_name}-trial{trial_number}"
    if BASELINE_ATTR in trial.user_attrs:
        data["name"] += f"-{trial.user_attrs[BASELINE_ATTR]}"
    data["provenance"] = {
        "study": study.study_name,
        "trial": trial_number,
        "metric": "val_accuracy",
        "value": trial.values[0] if trial.values else None,
        "seeds": {"search": int(attrs.get("seed", 0)), "trial": int(attrs.get("seed", 0))},
        "search_space": attrs.get("space_name"),
        "search_space_hash": attrs.get("space_hash"),
        "data_fingerprint": trial.user_attrs.get("data_fingerprint") or attrs.get("data_fingerprint"),
        "task": attrs.get("task"),
        "package_version": attrs.get("package_version", __version__),
    }
    policy = Policy.from_dict(data, source=f"study {study.study_name} trial {trial_number}")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return policy.dump(out)
    except OSError as error:
        raise AutoaugInputError(f"--out {out}: cannot write ({error.strerror or error})") from None


def export_from_storage(name: str, out: Union[str, Path], workdir: Union[str, Path] = "autoaug-runs",
                        storage: Optional[str] = None, trial: Optional[int] = None) -> tuple[Path, int]:
    """`autoaug export`: open the study, pick the trial (best by default), write the file."""
    import optuna

    from autoaug.search.controller import best_trial
    from autoaug.storage import optuna_storage, redact

    if storage is None:
        database = Path(workdir).expanduser().resolve() / "optuna.db"
        if not database.is_file():
            raise AutoaugInputError(f"--workdir {workdir}: no search records here ({database} does not exist)")
        storage = f"sqlite:///{database}"
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(storage))
    except KeyError:
        raise AutoaugInputError(f"--name {name}: no such study in {redact(storage)}") from None
    chosen = best_trial(study, trial)
    if chosen is None:
        raise AutoaugInputError(f"--name {name}: the study has no complete trial to export yet")
    return export_policy(study, chosen.number, out), chosen.number
