"""The names a search writes into its records: Optuna user attributes, MLflow tags, roles, metric keys
and the experiment name. Everyone who writes or reads the records (the search, export, dashboards,
benchmarks, tests) imports them from here, so a renamed key cannot leave a reader behind.

This module imports nothing heavy (no Ray, Optuna or MLflow): samplers and dashboards load it cheaply.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- metrics (Tune results, MLflow)
METRIC = "val_accuracy"  # clean validation accuracy: what ASHA, PBT and the export rank on
ROBUST_METRIC = "robust_val_accuracy"  # accuracy on augmented validation batches (nsga2's second objective)
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
HOLDOUT_ACCURACY = "train_holdout_accuracy"  # a calibration run's accuracy on held-out training examples
EPOCH_SECONDS = "epoch_seconds"  # one epoch's wall time, logged per epoch (stamped at the epoch's end)
SEARCH_SECONDS = "search_seconds"  # on the parent run, once per driver session
EPOCH_METRICS = (METRIC, VAL_LOSS, TRAIN_LOSS, TRAIN_ACCURACY, ROBUST_METRIC, EPOCH_SECONDS)  # per-epoch MLflow metrics
# How much the finished model relies on each modality: clean validation accuracy with the image blanked (grey)
# and with the question's words masked (`autoaug.trainers.evaluation.modality_reliance`). Reported once, with
# the last epoch of every searched and baseline trial (never calibration or confirmation runs, nor a trial
# stopped early), and logged to MLflow at that epoch's step.
IMAGE_BLANKED_METRIC = "val_accuracy_image_blanked"
TEXT_BLANKED_METRIC = "val_accuracy_text_blanked"
RELIANCE_METRICS = {"image_blanked": IMAGE_BLANKED_METRIC, "text_blanked": TEXT_BLANKED_METRIC}  # blank name -> metric
FINAL_METRICS = (IMAGE_BLANKED_METRIC, TEXT_BLANKED_METRIC)  # MLflow metrics logged at a trial's last epoch only

# ---------------------------------------------------------------------- Optuna trial user attributes
STATE_ATTR = "autoaug_state"  # complete / pruned (stopped early) / failed; early-stopped trials are also PRUNED in Optuna
POLICY_ATTR = "autoaug_policy"  # the policy the trial ran, as a dict (what export writes)
BASELINE_ATTR = "autoaug_baseline"  # the preset name, on baseline trials only
STOPPED_EPOCH_ATTR = "autoaug_epochs"  # the epochs a trial ran (recorded when it ends; < the length: stopped early)
SCREEN_ATTR = "autoaug_screen"  # the op a screen trial puts alone in its policy (autoaug.search.screen)
ERROR_ATTR = "autoaug_error"  # the one-line reason a trial failed
RETRIES_ATTR = "autoaug_failed_attempts"  # reasons of the attempts --max-failures retried
PBT_TRIAL_ATTR = "pbt_trial_id"  # the Tune trial a PBT member's Optuna trial records
RELIANCE_ATTR = "autoaug_modality_reliance"  # {FINAL_METRICS name: value} of a trial that ran its full length

# the reasons written on what a dead driver left behind (found by the next driver of the study)
STALE_REASON = "the search driver stopped while this trial ran"  # on RUNNING Optuna trials, marked failed
ORPHAN_REASON = "the search driver stopped while this run was open"  # on RUNNING MLflow child runs, KILLED

# ---------------------------------------------------------------------- Optuna study user attributes
CALIBRATION_ATTR = "calibration"
CONFIRMATION_ATTR = "confirmation"
SCREEN_RECORD_ATTR = "screen"  # the screen's verdict on each op (`ScreenResult.as_record`)
RACE_ATTR = "race"  # the selection race's record (`autoaug.search.race`): rounds, gains, the order it hands on
RACE_RUNS_ATTR = "race_runs"  # {run label: final val accuracy}: a resumed race keeps them
CONFIRMATION_RUNS_ATTR = "confirmation_runs"  # {run label: final val accuracy}: a resumed confirmation keeps them
# {run label: per-example correctness "<n>:<hex>" (autoaug.trainers.evaluation.encode_correct)}: the example-level
# evidence of the finished confirmation runs, kept on resume like their accuracies (~n/4 characters a run)
CONFIRMATION_EXAMPLES_ATTR = "confirmation_examples"
DATA_FINGERPRINT_ATTR = "data_fingerprint"
CONFIRM_SPLIT_ATTR = "confirm_split"  # the held-out confirm part {fraction, seed, val, confirm} (None: no part)
DATA_SOURCE_ATTR = "data_source"
# what the search was (set when the study is created; a resume must match the first four)
SPACE_HASH_ATTR = "space_hash"
TASK_ATTR = "task"
OBJECTIVES_ATTR = "objectives"
MAX_EPOCHS_ATTR = "max_epochs"
SPACE_NAME_ATTR = "space_name"
SAMPLER_ATTR = "sampler"
SCHEDULER_ATTR = "scheduler"
SEED_ATTR = "seed"

# ---------------------------------------------------------------------- MLflow run tags
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (the UI draws child runs under it)
ROLE_TAG = "autoaug_role"  # one of the ROLE_* values below
RESULT_TAG = "autoaug_result"  # on the parent run: the policy the search exported ("none", "trial 7", ...)
STUDY_TAG = "autoaug_study"
TRIAL_TAG = "autoaug_trial"  # "trial <n>" (the Optuna number) or "baseline <preset>"
STATE_TAG = STATE_ATTR  # the same words as the Optuna attribute, plus "running" and "killed"
ERROR_TAG = ERROR_ATTR
RAY_TRIAL_TAG = "autoaug_ray_trial_id"
NODE_ID_TAG = "autoaug_ray_node_id"  # on a trial's run: the Ray node that ran it (hex id)
NODE_IP_TAG = "autoaug_ray_node_ip"  # ... and that node's address
POLICY_NAME_TAG = "autoaug_policy_name"
RETRIES_TAG = "autoaug_retries"
RESUMED_TAG = "autoaug_resumed"
VERDICT_TAG = "autoaug_verdict"
WINNER_TAG = "autoaug_winner"

ROLE_SEARCH = "search"  # the parent run of one search
ROLE_TRIAL = "trial"  # a searched or baseline trial
ROLE_CALIBRATION = "calibration"
ROLE_CONFIRMATION = "confirmation"
ROLE_RACE = "race"


def experiment_name(study: str) -> str:
    """The MLflow experiment of study ``study`` (one experiment per study name)."""
    return f"autoaug-{study}"


def runs_filter(role: str, study: str) -> str:
    """The MLflow search filter for the runs of ``role`` in ``study``."""
    return f"tags.{ROLE_TAG} = '{role}' and tags.{STUDY_TAG} = '{study}'"
