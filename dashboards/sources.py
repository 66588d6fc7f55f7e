"""What the UI launchers and the report read from a search's records.

A search writes two stores (docs/ARCHITECTURE.md, "Record contract"): the Optuna study (``--storage``, by
default ``<workdir>/optuna.db``) and the MLflow tracking store (``--tracking-uri``, by default
``<workdir>/mlflow.db``) with one experiment per study (`record_schema.experiment_name`) holding a
parent run per search and a child run per trial; the tag names are `autoaug.search.record_schema`'s.
The stores are found by `autoaug.storage.find_records` and opened read-only (`open_study`,
`tracking_client`): a missing workdir or database is a clear error, not a fresh empty store.
"""

from __future__ import annotations

import json

from autoaug.search import record_schema as schema
from autoaug.storage import optuna_storage

TRIALS_VIEW_KEY = "autoaug-trials"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's UI loads the view in tag <prefix><key> for ?viewStateShareKey=<key>
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def study_names(optuna_url: str) -> list[str]:
    """Every study in the Optuna storage, in creation order."""
    import optuna

    return [summary.study_name for summary in optuna.get_all_study_summaries(optuna_storage(optuna_url, read_only=True))]


def experiment_of(client, study: str):
    """The study's MLflow experiment, or None when the search recorded elsewhere."""
    return client.get_experiment_by_name(schema.experiment_name(study))


def parent_run(client, experiment_id: str, study: str):
    """The search's parent run (role `record_schema.ROLE_SEARCH`), or None."""
    runs = client.search_runs([experiment_id], filter_string=schema.runs_filter(schema.ROLE_SEARCH, study), max_results=1)
    return runs[0] if runs else None


def trial_runs(client, experiment_id: str, study: str) -> list:
    """The study's child runs (one per trial, baselines included)."""
    return client.search_runs([experiment_id], filter_string=schema.runs_filter(schema.ROLE_TRIAL, study),
                              max_results=50000)


def trials_view_state(param_keys: list[str], metric_keys: list[str]) -> dict:
    """The MLflow runs-table view that compares trials: only trial runs, flat (a filter or a sort
    other than by date un-nests child runs), best score first, score and ``op.*`` columns shown.

    Keys follow MLflow 3.17's UI state (search facets ``searchFilter``/``orderByKey``/``orderByAsc``
    and UI state ``selectedColumns``/``runsHiddenMode``); column keys are ``metrics.`name```-style.
    """
    shown = (schema.METRIC, schema.ROBUST_METRIC, schema.VAL_LOSS, schema.TRAIN_ACCURACY)
    metrics = [key for key in shown if key in metric_keys]
    ops = sorted(key for key in param_keys if key.startswith("op."))
    columns = [f"metrics.`{key}`" for key in metrics] + [f"tags.`{schema.STATE_TAG}`"] + [f"params.`{key}`" for key in ops]
    return {"searchFilter": f"tags.{schema.ROLE_TAG} = '{schema.ROLE_TRIAL}'", "orderByKey": f"metrics.`{schema.METRIC}`",
            "orderByAsc": False,
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
