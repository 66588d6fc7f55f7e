"""Where a search's records are, opened read-only for the UI launchers and the report.

A search writes two stores (DESIGN §8): the Optuna study (``--storage``, by default
``<workdir>/optuna.db``) and the MLflow tracking store (``--tracking-uri``, by default
``<workdir>/mlflow.db``) with one experiment ``autoaug-<study>`` holding a parent run per search and
a child run per trial. Opening them here never creates anything: a missing workdir or database is a
clear error, not a fresh empty store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from autoaug.errors import AutoaugInputError
from autoaug.storage.redaction import redact_url

EXPERIMENT_PREFIX = "autoaug-"  # the controller names each study's experiment autoaug-<study>
TRIALS_VIEW_KEY = "autoaug-trials"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's UI loads the view in tag <prefix><key> for ?viewStateShareKey=<key>
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


@dataclass(frozen=True)
class RecordLocations:
    """The two stores of a workdir (or of explicit URLs), checked to exist."""

    optuna_url: str
    tracking_uri: Optional[str]  # None: no MLflow records to read (the report says so)


def locate(workdir: Path | str, storage: Optional[str] = None, tracking_uri: Optional[str] = None,
           need_tracking: bool = False) -> RecordLocations:
    """Resolve the stores without creating any: SQLite files must already exist."""
    folder = Path(workdir).expanduser().resolve()
    if storage is None or (tracking_uri is None and need_tracking):
        if not folder.is_dir():
            raise AutoaugInputError(f"--workdir {workdir}: no such folder (run `autoaug search` first, or pass --workdir)")
    if storage is None:
        database = folder / "optuna.db"
        if not database.is_file():
            raise AutoaugInputError(f"--workdir {workdir}: no search records here ({database} does not exist)")
        storage = f"sqlite:///{database}"
    else:
        _check_sqlite_exists(storage, "--storage")
    if tracking_uri is None:
        database = folder / "mlflow.db"
        if database.is_file():
            tracking_uri = f"sqlite:///{database}"
        elif need_tracking:
            raise AutoaugInputError(f"--workdir {workdir}: no MLflow records here ({database} does not exist)")
    else:
        _check_sqlite_exists(tracking_uri, "--tracking-uri")
    return RecordLocations(optuna_url=storage, tracking_uri=tracking_uri)


def _check_sqlite_exists(url: str, flag: str) -> None:
    if url.startswith("sqlite:") and ":///" in url:
        path = Path(url.split(":///", 1)[1])
        if not path.is_file():
            raise AutoaugInputError(f"{flag} {redact_url(url)}: no such database file")


def study_names(optuna_url: str) -> list[str]:
    """Every study in the Optuna storage, in creation order."""
    import optuna

    from autoaug.storage import optuna_storage

    return [summary.study_name for summary in optuna.get_all_study_summaries(optuna_storage(optuna_url, read_only=True))]


def open_study(optuna_url: str, name: str):
    """Load study ``name``; an unknown name lists the studies that exist."""
    import optuna

    from autoaug.storage import optuna_storage, redact_url

    storage = optuna_storage(optuna_url, read_only=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        listing = ", ".join(known) if known else "none"
        raise AutoaugInputError(f"--name {name}: no such study in {redact_url(optuna_url)} (studies there: {listing})") from None


def mlflow_client(tracking_uri: str):
    """A client of the records' tracking store (its calls retry while the store is briefly unavailable)."""
    from autoaug.storage import tracking_client

    return tracking_client(tracking_uri)


def experiment_of(client, study: str):
    """The study's MLflow experiment, or None when the search recorded elsewhere."""
    return client.get_experiment_by_name(f"{EXPERIMENT_PREFIX}{study}")


def parent_run(client, experiment_id: str, study: str):
    """The search's parent run (tag ``autoaug_role = 'search'``), or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.autoaug_role = 'search' and tags.autoaug_study = '{study}'",
                              max_results=1)
    return runs[0] if runs else None


def trial_runs(client, experiment_id: str, study: str) -> list:
    """The study's child runs (one per trial, baselines included)."""
    return client.search_runs([experiment_id], filter_string=f"tags.autoaug_role = 'trial' and tags.autoaug_study = '{study}'",
                              max_results=50000)


def trials_view_state(param_keys: list[str], metric_keys: list[str]) -> dict:
    """The MLflow runs-table view that compares trials: only trial runs, flat (a filter or a sort
    other than by date un-nests child runs), best score first, score and ``op.*`` columns shown.

    Keys follow MLflow 3.17's UI state (search facets ``searchFilter``/``orderByKey``/``orderByAsc``
    and UI state ``selectedColumns``/``runsHiddenMode``); column keys are ``metrics.`name```-style.
    """
    metrics = [key for key in ("val_accuracy", "robust_val_accuracy", "val_loss", "train_accuracy") if key in metric_keys]
    ops = sorted(key for key in param_keys if key.startswith("op."))
    columns = [f"metrics.`{key}`" for key in metrics] + ["tags.`autoaug_state`"] + [f"params.`{key}`" for key in ops]
    return {"searchFilter": "tags.autoaug_role = 'trial'", "orderByKey": "metrics.`val_accuracy`", "orderByAsc": False,
            "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL"}


def prepare_trials_view(client, experiment_id: str, study: str) -> None:
    """Store the trials view on the experiment and mark it a model-training experiment.

    MLflow 3.17's UI chooses between its GenAI and model-training layouts from the URL query
    ``workflowType`` (remembered in the browser's localStorage), not from the experiment: the
    ``mlflow.experimentKind`` tag is only read when that switch is off. The tag is still set, so
    MLflow versions that read it agree; the URL of `trials_url` carries the query.
    """
    runs = trial_runs(client, experiment_id, study)
    params = sorted({key for run in runs for key in run.data.params})
    metrics = sorted({key for run in runs for key in run.data.metrics})
    state = trials_view_state(params, metrics)
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + TRIALS_VIEW_KEY, json.dumps(state, sort_keys=True))
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def trials_url(base: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's trials, in the model-training layout."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={TRIALS_VIEW_KEY}"
