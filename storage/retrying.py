"""Store clients whose calls survive a restarting server (see `autoaug.storage.resilience`).

`RetryingRDBStorage` is Optuna's `RDBStorage` with every storage call behind `call_with_retry`:
Ray's `OptunaSearch`, the study and our records all go through it, so a PostgreSQL restart mid-search
costs a pause, not the search. `RetryingMlflowClient` does the same for the MLflow calls a search
makes (on top of MLflow's own HTTP retries for a tracking server).
"""

from __future__ import annotations

import mlflow
from optuna.storages import RDBStorage

from autoaug.storage.redaction import redact_url
from autoaug.storage.resilience import call_with_retry

# Optuna's storage API (BaseStorage and RDBStorage's public methods) and the private ones Optuna's own
# `_CachedStorage` (what a study wraps an RDBStorage in) calls directly. Not wrapped: the constructor
# (a store that cannot be opened at start is bad input, checked by `optuna_storage`), remove_session
# and the schema-version helpers.
OPTUNA_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
    "get_trial_params", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "record_heartbeat",
    "_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids",
)

# The MLflow client calls a search, the UI launcher and the report make.
MLFLOW_CALLS = (
    "create_run", "update_run", "set_terminated", "get_run", "search_runs", "log_batch", "log_metric",
    "log_param", "set_tag", "delete_tag", "log_text", "log_dict", "log_artifact", "log_artifacts",
    "get_experiment", "get_experiment_by_name", "create_experiment", "set_experiment_tag", "get_metric_history",
    "list_artifacts", "download_artifacts",
)


def _retried(base: type, name: str, store_of):
    original = getattr(base, name)

    def call(self, *args, **kwargs):
        return call_with_retry(store_of(self), original, self, *args, **kwargs)

    call.__name__, call.__qualname__, call.__doc__ = name, f"{base.__name__}.{name}", original.__doc__
    return call


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage; each call retried while the database is transiently unavailable."""

    @property
    def store_label(self) -> str:
        return f"--storage {redact_url(self.url)}"


for _name in OPTUNA_CALLS:
    setattr(RetryingRDBStorage, _name, _retried(RDBStorage, _name, lambda storage: storage.store_label))


class RetryingMlflowClient(mlflow.MlflowClient):
    """MLflow's client; each call retried while the tracking store is transiently unavailable."""

    @property
    def store_label(self) -> str:
        return f"--tracking-uri {redact_url(self.tracking_uri)}"


for _name in MLFLOW_CALLS:
    setattr(RetryingMlflowClient, _name, _retried(mlflow.MlflowClient, _name, lambda client: client.store_label))
