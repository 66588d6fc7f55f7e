"""Calibration: before any policy is searched, learn how to train on *this* data with no augmentation.

A search ranks policies by how they change a proxy training run, so the run must be in the regime
where augmentation can matter: a learning rate that trains, a length at which ``none`` has stopped
improving on validation (augmentation is a regulariser; it pays off once the unaugmented model starts
to overfit), and evidence that the model uses the images at all. Calibration measures these on the
user's data instead of trusting defaults tuned on the built-in task:

1. ``none`` at each learning rate of a small grid (default 3e-4, 1e-3, 3e-3), ``--max-epochs`` long,
   validation accuracy every epoch; and the same runs on the task with every image replaced by one
   grey image (a question-only model: the score reachable without looking).
2. The learning rate: the one whose (3-epoch moving average of) validation accuracy peaks highest.
3. The plateau: the first epoch whose smoothed validation accuracy is within one binomial standard
   error of that peak — where ``none`` stops rising. Trials run ``ceil(1.5 × plateau)`` epochs (capped
   at ``--max-epochs``) so that regularised policies, which learn more slowly at first, get time past
   that point; early-stopping rungs start at the plateau, never before it.
4. The image check: ``none`` must beat the question-only model by a clear margin (2 binomial standard
   errors of the difference, at least 0.02); otherwise the search stops before spending its budget
   (`ImageSignalMissing`, exit 1) unless ``--force``.

The result is stored on the study (a resumed search reuses it), returned in the search's JSON as
``calibration`` and logged as the search's ``calibration`` MLflow child run.
"""

from __future__ import annotations

import math
import time
from typing import Any

from autoaug.errors import AutoaugError
from autoaug.search.record_schema import CALIBRATION_ATTR, PARENT_TAG, ROLE_CALIBRATION, ROLE_TAG, STUDY_TAG
from autoaug.search.stages import METRIC, RunOutcome, SearchContext, run_specs
from autoaug.search.trainable import RunSpec

DEFAULT_LEARNING_RATES: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
SMOOTHING_EPOCHS = 3
TRIAL_LENGTH_FACTOR = 1.5
MIN_IMAGE_MARGIN = 0.02


class ImageSignalMissing(AutoaugError):
    """``none`` does not beat a question-only model: a search would rank noise (exit 1)."""


def smoothed(curve: list[float], window: int = SMOOTHING_EPOCHS) -> list[float]:
    """Trailing moving average (the first epochs average what they have)."""
    return [sum(curve[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(curve))]


def binomial_se(accuracy: float, n: int) -> float:
    return math.sqrt(max(accuracy * (1.0 - accuracy), 1e-12) / max(n, 1))


def plateau_epoch(curve: list[float], n_val: int) -> int:
    """The first epoch (1-based) whose smoothed accuracy is within one binomial SE of the smoothed peak."""
    smooth = smoothed(curve)
    peak = max(smooth)
    tolerance = binomial_se(peak, n_val)
    return next(epoch for epoch, value in enumerate(smooth, start=1) if value >= peak - tolerance)


def trial_length(plateau: int, cap: int) -> int:
    return max(1, min(cap, math.ceil(TRIAL_LENGTH_FACTOR * plateau)))


def decide(outcomes: dict[str, RunOutcome], learning_rates: tuple[float, ...], cap: int, n_val: int) -> dict[str, Any]:
    """Turn the calibration runs into the search's choices and figures (pure: tested on its own)."""
    rows = {}
    for rate in learning_rates:
        full, blind = outcomes.get(_label(rate, False)), outcomes.get(_label(rate, True))
        rows[rate] = {
            "none_peak": max(smoothed(full.curve())) if full and full.state == "complete" and full.curve() else None,
            "question_only_peak": max(smoothed(blind.curve())) if blind and blind.state == "complete" and blind.curve() else None,
            "none_curve": [round(v, 4) for v in full.curve()] if full else [],
            "error": (full.error if full and full.state != "complete" else None),
        }
    trained = {rate: row for rate, row in rows.items() if row["none_peak"] is not None}
    if not trained:
        errors = "; ".join(f"lr {rate:g}: {row['error']}" for rate, row in rows.items())
        raise AutoaugError(f"calibration: no learning rate trained ({errors})")
    # highest peak; a tie goes to the smaller rate (the gentler one)
    rate = max(trained, key=lambda r: (round(trained[r]["none_peak"], 6), -r))
    curve = outcomes[_label(rate, False)].curve()
    plateau = plateau_epoch(curve, n_val)
    none_score = trained[rate]["none_peak"]
    blind_scores = [row["question_only_peak"] for row in rows.values() if row["question_only_peak"] is not None]
    question_only = max(blind_scores) if blind_scores else None
    margin_needed = None
    if question_only is not None:
        margin_needed = max(MIN_IMAGE_MARGIN, 2 * math.sqrt(binomial_se(none_score, n_val) ** 2
                                                             + binomial_se(question_only, n_val) ** 2))
    return {
        "learning_rate": rate,
        "learning_rates": {f"{r:g}": (None if row["none_peak"] is None else round(row["none_peak"], 4))
                           for r, row in rows.items()},
        "question_only_by_learning_rate": {f"{r:g}": (None if row["question_only_peak"] is None else round(row["question_only_peak"], 4))
                                           for r, row in rows.items()},
        "none_val_curve": [round(v, 4) for v in curve],
        "calibration_epochs": cap,
        "plateau_epoch": plateau,
        "trial_epochs": trial_length(plateau, cap),
        "none_val_accuracy": round(none_score, 4),
        "question_only_val_accuracy": None if question_only is None else round(question_only, 4),
        "image_margin": None if question_only is None else round(none_score - question_only, 4),
        "image_margin_needed": None if margin_needed is None else round(margin_needed, 4),
        "uses_images": question_only is None or none_score - question_only >= margin_needed,
        "val_examples": n_val,
    }


def _label(rate: float, question_only: bool) -> str:
    return f"calibration {'question-only' if question_only else 'none'} lr={rate:g}"


def calibrate(context: SearchContext, learning_rates: tuple[float, ...], cap: int) -> dict[str, Any]:
    """Run (or, on resume, reuse) the calibration of this study; returns the ``calibration`` record."""
    study = context.study
    recorded = study.user_attrs.get(CALIBRATION_ATTR)
    if recorded is not None:
        return recorded
    specs = [RunSpec(role="calibration", label=_label(rate, blind), policy="none", learning_rate=rate,
                     epochs=cap, question_only=blind)
             for rate in learning_rates for blind in (False, True)]
    outcomes = run_specs(context, "calibration", specs)
    record = decide(outcomes, learning_rates, cap, n_val=len(context.prepared.splits["val"]))
    record["seconds"] = round(context.stage_seconds.get("calibration", 0.0), 1)
    study.set_user_attr(CALIBRATION_ATTR, record)
    _log(context, record, outcomes)
    return record


def _log(context: SearchContext, record: dict, outcomes: dict[str, RunOutcome]) -> None:
    """The calibration child run (each run's validation curve by epoch) and the parent's summary."""
    import json

    from mlflow.entities import Metric, Param

    client = context.client
    run = client.create_run(context.experiment_id, run_name="calibration",
                            tags={PARENT_TAG: context.parent, ROLE_TAG: ROLE_CALIBRATION, STUDY_TAG: context.request.name})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = []
    for label, outcome in outcomes.items():
        key = label.replace("calibration ", "").replace(" ", ".").replace("=", "_")
        for epoch, value in enumerate(outcome.curve(), start=1):
            metrics.append(Metric(f"{key}.{METRIC}", value, now, epoch))
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])
    scalars = {key: value for key, value in record.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    client.log_batch(run_id, params=[Param(f"chosen.{key}", str(value)) for key, value in scalars.items()])
    client.log_text(run_id, json.dumps(record, indent=2, sort_keys=True), "calibration.json")
    client.set_terminated(run_id, "FINISHED")
    client.log_batch(context.parent, params=[Param(f"calibration.{key}", str(record[key]))
                                              for key in ("learning_rate", "trial_epochs", "plateau_epoch")],
                     metrics=[Metric(f"calibration.{key}", float(record[key]), now, 0)
                              for key in ("none_val_accuracy", "question_only_val_accuracy", "image_margin")
                              if record.get(key) is not None])


def refusal_message(record: dict) -> str:
    return (f"calibration: the model does not learn from the images — with no augmentation it reaches val "
            f"accuracy {record['none_val_accuracy']:.3f}, a question-only model (images replaced by grey) "
            f"{record['question_only_val_accuracy']:.3f}: margin {record['image_margin']:+.3f}, needed "
            f"{record['image_margin_needed']:.3f}. A search would rank noise. Try: more training examples, a "
            f"longer calibration (--max-epochs), other learning rates (--learning-rates), checking that the "
            f"images decode and match their questions; --force searches anyway.")
