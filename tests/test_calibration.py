"""Calibration's decisions, on synthetic learning curves (pure functions; no Ray, no training).

Each test names the plausible wrong implementation it catches. The curves are written out or built
from simple closed forms so that each expected epoch can be checked by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from autoaug.errors import AutoaugError, AutoaugInputError
from autoaug.search import calibration as cal
from autoaug.search.calibration import (CalibrationSettingsChanged, Dynamics, ImageCheckFailed, NoneUnderfits,
                                        decide, learning_rate_choice, refusal, reuse_recorded, smoothed,
                                        trial_length)
from autoaug.search.stages import RunOutcome
from autoaug.search.trainable import RunSpec

RATES = (3e-4, 1e-3, 3e-3)


def _run(train: list[float], val: list[float], state: str = "complete", error: str | None = None) -> RunOutcome:
    results = [{"val_accuracy": v, "train_accuracy": t} for t, v in zip(train, val)]
    return RunOutcome(RunSpec(role="calibration", label="x"), results, state, error)


def _climb(start: float, end: float, epochs: int, rate: float = 0.05) -> list[float]:
    """A saturating climb from ``start`` (epoch 1) to ``end`` (the last epoch): 1 − e^(−rate·t), rescaled."""
    shape = [1 - math.exp(-rate * t) for t in range(epochs)]
    return [start + (end - start) * s / shape[-1] for s in shape]


def _outcomes(none: dict[float, tuple[list, list]], question_only: dict[float, RunOutcome] | None = None,
              blind_val: float = 0.30) -> dict[str, RunOutcome]:
    """Calibration outcomes by label: ``none`` curves per rate; question-only flat at ``blind_val`` unless given."""
    outcomes = {}
    for rate, (train, val) in none.items():
        outcomes[cal._label(rate, False)] = _run(train, val)
        blind = (question_only or {}).get(rate) or _run([blind_val + 0.05] * len(val), [blind_val] * len(val))
        outcomes[cal._label(rate, True)] = blind
    return outcomes


# The user's data set of issue 21 (about 1000 examples per split): after the 30-epoch budget `none` has
# train 0.44 / val 0.37 at 3e-4 (and no better at the other rates), all still climbing.
USER_UNDERFIT = {
    3e-4: (_climb(0.20, 0.44, 30, rate=0.03), _climb(0.20, 0.37, 30, rate=0.03)),
    1e-3: (_climb(0.22, 0.45, 30, rate=0.05), _climb(0.22, 0.37, 30, rate=0.05)),
    3e-3: (_climb(0.25, 0.44, 30, rate=0.08), _climb(0.25, 0.357, 30, rate=0.08)),
}

# Overfits: train climbs 0.05 an epoch to 0.98, val 0.04 an epoch to 0.60. Raw gap 0.01·e up to epoch 7
# (0.07), then 0.10 at 8, 0.15 at 9. Smoothed over 3 epochs: epoch 8 (0.06+0.07+0.10)/3 = 0.077 < 0.10,
# epoch 9 (0.07+0.10+0.15)/3 = 0.107 ≥ 0.10: the gap opens at epoch 9.
OVERFIT_TRAIN = [min(0.98, 0.30 + 0.05 * e) for e in range(1, 31)]
OVERFIT_VAL = [min(0.60, 0.30 + 0.04 * e) for e in range(1, 31)]


def _prepared(train: int = 600, val: int = 1000) -> SimpleNamespace:
    """A stand-in for the search's `PreparedTask`: split sizes, and the held-out carve's size."""
    return SimpleNamespace(splits={"train": [0] * train, "val": [0] * val},
                           train_holdout_rows=lambda fraction, seed: ([0] * round(fraction * train),
                                                                      [0] * (train - round(fraction * train))))


# ---------------------------------------------------------------------- regime and trial length
def test_the_underfitting_user_curve_is_refused_with_both_numbers_and_what_to_try():
    """Catches the old plateau rule (it read this slow climb as a plateau at epoch 16 and ran 24-epoch
    trials in silence) and any rule that looks at validation alone."""
    record = decide(_outcomes(USER_UNDERFIT), RATES, cap=30, n_val=1000)
    assert record["reaches_regime"] is False and record["regime_epoch"] is None
    assert record["trial_epochs"] == 30 and record["plateau_epoch"] == 30  # forced: whole budget, no rung
    row = record["by_learning_rate"]["0.0003"]
    assert row["train_accuracy_at_end"] == pytest.approx(smoothed(USER_UNDERFIT[3e-4][0])[-1], abs=1e-4)
    assert row["val_rising_at_end"] is True
    error = refusal(record)
    assert isinstance(error, NoneUnderfits) and isinstance(error, AutoaugError)  # the CLI's exit 1
    message = str(error)
    assert "\n" not in message and "underfits after 30 epochs" in message
    end = cal.Dynamics(tuple(USER_UNDERFIT[3e-4][0]), tuple(USER_UNDERFIT[3e-4][1])).at_end()
    assert f"lr 0.0003: train {end['train_accuracy']:.3f}, val {end['val_accuracy']:.3f}, gap {end['gap']:+.3f}" in message
    assert "val still rising" in message
    assert "--max-epochs 60" in message and "--learning-rates 1e-3,3e-3,1e-2" in message and "--force" in message


def test_an_overfitting_curve_gives_a_trial_length_past_the_gap_epoch():
    """Catches the old ``ceil(1.5 × plateau)`` (14 epochs here), an unsmoothed gap (epoch 8) and a strict
    reading of the threshold that would never look at train accuracy."""
    record = decide(_outcomes({1e-3: (OVERFIT_TRAIN, OVERFIT_VAL)}), (1e-3,), cap=30, n_val=1000)
    assert record["reaches_regime"] is True and record["regime"] == "gap" and record["regime_epoch"] == 9
    assert record["trial_epochs"] == 18 and record["plateau_epoch"] == 9  # 2 × 9; ASHA grace at the regime
    assert refusal(record) is None
    # one noisy epoch whose raw gap passes 0.10 (epoch 4: train 0.62 vs val 0.46) does not open it
    spiky = list(OVERFIT_TRAIN)
    spiky[3] += 0.12
    assert decide(_outcomes({1e-3: (spiky, OVERFIT_VAL)}), (1e-3,), cap=30, n_val=1000)["regime_epoch"] == 9
    # the budget caps the length; the gap epoch stays what it was
    capped = decide(_outcomes({1e-3: (OVERFIT_TRAIN[:12], OVERFIT_VAL[:12])}), (1e-3,), cap=12, n_val=1000)
    assert capped["regime_epoch"] == 9 and capped["trial_epochs"] == 12


def test_trial_length_has_a_floor_below_the_budget():
    """Catches a length without a floor (an early gap would give 4-epoch trials) and a floor above the budget."""
    assert trial_length(2, cap=30) == cal.MIN_TRIAL_EPOCHS == 10
    assert trial_length(2, cap=6) == 6
    assert trial_length(9, cap=30) == 18 and trial_length(20, cap=30) == 30 and trial_length(None, cap=30) == 30


def test_the_same_curves_give_the_same_length_whatever_the_validation_size():
    """Catches any tolerance derived from the validation set's sampling error (the old rule gave 12 / 15
    / 20 / 24-epoch trials for one curve at 100 / 200 / 1000 / 5000 validation examples)."""
    # val climbs slowly (the old rule's plateau: epoch 19 / 22 / 26 / 28 at these sizes); the gap grows
    # 0.008 an epoch, so its 3-epoch average is 0.008 × (e − 1): ≥ 0.10 first at epoch 14
    val = _climb(0.25, 0.62, 30, rate=0.10)
    slow = {1e-3: ([v + 0.008 * e for e, v in enumerate(val, start=1)], val)}
    records = [decide(_outcomes(slow), (1e-3,), cap=30, n_val=n) for n in (100, 200, 1000, 5000)]
    lengths = {(r["regime_epoch"], r["trial_epochs"], r["learning_rate"]) for r in records}
    assert lengths == {(14, 28, 1e-3)}


def test_a_converged_model_and_a_declining_validation_reach_the_regime_without_the_gap():
    """Catches a rule that knows only the gap: an easy task where train and val both end near 0.97 is
    not underfitting (``fit``), and a validation curve that peaks and falls is overfitting (``peak``)."""
    easy = Dynamics(tuple(_climb(0.4, 0.99, 20, rate=0.4)), tuple(_climb(0.4, 0.96, 20, rate=0.4)))
    assert easy.regime == "fit" and easy.signals.get("gap") is None
    fit = easy.regime_epoch
    assert easy.smooth_train[fit - 1] >= cal.FIT_ACCURACY > easy.smooth_train[fit - 2]
    # val rises to 0.60 at epoch 10 then falls 0.01 an epoch; train tracks val (no gap), no train curve fits
    val = [0.3 + 0.03 * e for e in range(1, 11)] + [0.6 - 0.01 * e for e in range(1, 11)]
    peaked = Dynamics(tuple(v + 0.02 for v in val), tuple(val))
    smooth = smoothed(val)
    assert peaked.regime == "peak" and peaked.regime_epoch == smooth.index(max(smooth)) + 1
    # the same climb without the fall is no peak: an annealed flat end is not overfitting
    flat = Dynamics(tuple(v + 0.02 for v in val[:10] + [0.6] * 10), tuple(val[:10] + [0.6] * 10))
    assert flat.regime is None


# ---------------------------------------------------------------------- the learning rate
def test_the_learning_rate_prefers_a_rate_that_reaches_the_regime_over_a_slower_one_with_a_similar_peak():
    """Catches the old "highest validation peak wins" (3e-4 peaks 0.01 higher but never leaves the
    underfitting phase) and a tie-break that ignores how soon the regime comes."""
    slow = (_climb(0.2, 0.66, 30, rate=0.03), _climb(0.2, 0.62, 30, rate=0.03))  # gap 0.04 at the end
    # val peak 0.61; raw gaps 0.06 / 0.09 / 0.14 / 0.19 at epochs 7-10: the smoothed gap opens at epoch 10
    fast = (OVERFIT_TRAIN, [v + 0.01 for v in OVERFIT_VAL])
    record = decide(_outcomes({3e-4: slow, 1e-3: fast}), (3e-4, 1e-3), cap=30, n_val=1000)
    assert record["learning_rates"]["0.0003"] > record["learning_rates"]["0.001"]
    assert record["learning_rate"] == 1e-3 and record["reaches_regime"] is True
    assert record["regime_epoch"] == 10 and record["trial_epochs"] == 20
    # among rates that reach the regime, the higher peak wins ...
    higher = ([min(0.98, 0.30 + 0.05 * e) for e in range(1, 31)], [min(0.64, 0.30 + 0.04 * e) for e in range(1, 31)])
    dynamics = {r: Dynamics(tuple(t), tuple(v)) for r, (t, v) in {1e-3: fast, 3e-3: higher}.items()}
    assert learning_rate_choice(dynamics)[:2] == (3e-3, True)
    # ... and on equal peaks the one that reaches the regime first (shorter trials), then the smaller rate
    late = ([min(0.98, 0.30 + 0.03 * e) for e in range(1, 31)], [min(0.61, 0.30 + 0.025 * e) for e in range(1, 31)])
    dynamics = {3e-4: Dynamics(tuple(late[0]), tuple(late[1])), 3e-3: Dynamics(tuple(fast[0]), tuple(fast[1]))}
    assert dynamics[3e-4].val_peak == pytest.approx(dynamics[3e-3].val_peak)
    assert dynamics[3e-4].regime_epoch > dynamics[3e-3].regime_epoch
    assert learning_rate_choice(dynamics)[:2] == (3e-3, True)
    same = {r: Dynamics(tuple(fast[0]), tuple(fast[1])) for r in (1e-3, 3e-3)}
    assert learning_rate_choice(same)[:2] == (1e-3, True)


# ---------------------------------------------------------------------- the image check
def test_the_image_check_compares_none_with_the_best_question_only_model():
    """Catches a check against one rate's question-only model or a margin without the 0.02 floor."""
    fast = (OVERFIT_TRAIN, OVERFIT_VAL)  # smoothed val peak 0.60
    blind = {3e-4: _run([0.4] * 30, [0.33] * 30), 1e-3: _run([0.4] * 30, [0.35] * 30)}
    record = decide(_outcomes({3e-4: fast, 1e-3: fast}, blind), (3e-4, 1e-3), cap=30, n_val=300)
    assert record["question_only_val_accuracy"] == pytest.approx(0.35)
    needed = max(0.02, 2 * math.sqrt(0.6 * 0.4 / 300 + 0.35 * 0.65 / 300))
    assert record["image_margin_needed"] == pytest.approx(needed, abs=1e-4)
    assert record["uses_images"] is True and record["image_margin"] == pytest.approx(0.25, abs=1e-4)
    blind[1e-3] = _run([0.6] * 30, [0.58] * 30)
    assert decide(_outcomes({3e-4: fast, 1e-3: fast}, blind), (3e-4, 1e-3), cap=30, n_val=300)["uses_images"] is False


def test_every_question_only_run_failing_stops_the_search_with_the_reason():
    """Catches the old pass (no question-only score read as "uses the images"), after which the CLI
    crashed formatting None."""
    failed = {rate: _run([], [], state="failed", error=f"CUDA out of memory at {rate:g}") for rate in (3e-4, 1e-3)}
    record = decide(_outcomes({3e-4: (OVERFIT_TRAIN, OVERFIT_VAL), 1e-3: (OVERFIT_TRAIN, OVERFIT_VAL)}, failed),
                    (3e-4, 1e-3), cap=30, n_val=1000)
    assert record["uses_images"] is None and record["question_only_val_accuracy"] is None
    error = refusal(record)
    assert isinstance(error, ImageCheckFailed) and isinstance(error, AutoaugError)
    message = str(error)
    assert "\n" not in message and "every question-only run" in message
    assert "CUDA out of memory at 0.0003" in message and "CUDA out of memory at 0.001" in message
    # one question-only run left is enough to check
    failed[1e-3] = _run([0.4] * 30, [0.35] * 30)
    record = decide(_outcomes({3e-4: (OVERFIT_TRAIN, OVERFIT_VAL), 1e-3: (OVERFIT_TRAIN, OVERFIT_VAL)}, failed),
                    (3e-4, 1e-3), cap=30, n_val=1000)
    assert record["uses_images"] is True and refusal(record) is None


def test_underfitting_is_reported_before_the_image_check():
    """Catches the opposite order: an underfitting model can fail the image check only for want of training."""
    blind = {rate: _run([], [], state="failed", error="boom") for rate in RATES}
    record = decide(_outcomes(USER_UNDERFIT, blind), RATES, cap=30, n_val=1000)
    assert isinstance(refusal(record), NoneUnderfits)


# ---------------------------------------------------------------------- the record
def test_the_record_holds_every_runs_train_and_val_curve_and_its_settings():
    """Catches a record without the train curves or the settings a resume compares."""
    outcomes = _outcomes({1e-3: (OVERFIT_TRAIN, OVERFIT_VAL), 3e-3: (OVERFIT_TRAIN, OVERFIT_VAL)})
    record = decide(outcomes, (1e-3, 3e-3), cap=30, n_val=1000)
    assert set(record["curves"]) == {"none lr=0.001", "question-only lr=0.001", "none lr=0.003", "question-only lr=0.003"}
    assert record["curves"]["none lr=0.001"]["train_accuracy"] == [round(v, 4) for v in OVERFIT_TRAIN]
    assert record["curves"]["none lr=0.001"]["val_accuracy"] == [round(v, 4) for v in OVERFIT_VAL]
    assert record["curves"]["question-only lr=0.003"]["val_accuracy"] == [0.3] * 30
    assert record["none_train_curve"] == [round(v, 4) for v in OVERFIT_TRAIN]
    assert record["settings"] == {"learning_rates": [1e-3, 3e-3], "max_epochs": 30}


def test_the_mlflow_child_run_gets_train_curves_as_metrics():
    """Catches logging the validation curves only."""
    logged = []

    class Client:
        def create_run(self, *args, **kwargs):
            return SimpleNamespace(info=SimpleNamespace(run_id="child"))

        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            logged.append((run_id, list(metrics), list(params), list(tags)))

        def log_text(self, *args):
            pass

        def set_terminated(self, *args):
            pass

    outcomes = _outcomes({1e-3: (OVERFIT_TRAIN, OVERFIT_VAL)})
    record = decide(outcomes, (1e-3,), cap=30, n_val=1000)
    context = SimpleNamespace(client=Client(), experiment_id="0", parent="parent", request=SimpleNamespace(name="s"))
    cal._log(context, record, outcomes)
    child = {(m.key, m.step): m.value for run_id, metrics, _, _ in logged if run_id == "child" for m in metrics}
    assert child[("none.lr_0.001.train_accuracy", 9)] == pytest.approx(OVERFIT_TRAIN[8])
    assert child[("none.lr_0.001.val_accuracy", 30)] == pytest.approx(OVERFIT_VAL[29])
    tags = {t.key: t.value for run_id, _, _, tags in logged if run_id == "parent" for t in tags}
    assert tags["calibration.trial_epochs"] == "18" and tags["calibration.regime"] == "gap"


# ---------------------------------------------------------------------- calibrate: refusals and resume
class FakeStudy:
    def __init__(self, trials: int = 0) -> None:
        self.user_attrs: dict = {}
        self.trials = [object()] * trials

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def get_trials(self, deepcopy=True):
        return self.trials


def _calibrate(monkeypatch, study, curves, rates, *, force=False, cap=30):
    runs = []

    def run_specs(context, stage, specs):
        runs.append([spec.label for spec in specs])
        return _outcomes({rate: curves[rate] for rate in rates})

    monkeypatch.setattr(cal, "run_specs", run_specs)
    monkeypatch.setattr(cal, "_log", lambda *args: None)
    context = SimpleNamespace(study=study, request=SimpleNamespace(force=force, name="s", seed=0),
                              prepared=_prepared(), stage_seconds={})
    return cal.calibrate(context, rates, cap), runs


def test_calibrate_refuses_an_underfitting_model_after_storing_the_record_and_force_goes_on(monkeypatch):
    """Catches a refusal left to the controller (it never checked) and a --force that still refuses."""
    study = FakeStudy()
    with pytest.raises(NoneUnderfits):
        _calibrate(monkeypatch, study, USER_UNDERFIT, RATES)
    assert study.user_attrs["calibration"]["reaches_regime"] is False  # stored: a --force resume reuses it
    record, runs = _calibrate(monkeypatch, study, USER_UNDERFIT, RATES, force=True)
    assert runs == [] and record["trial_epochs"] == 30


def test_a_resume_with_other_learning_rates_recalibrates_before_trials_and_refuses_after(monkeypatch):
    """Catches the old resume, which reused the stored calibration whatever --learning-rates said."""
    curves = {rate: (OVERFIT_TRAIN, OVERFIT_VAL) for rate in (*RATES, 1e-2)}
    study = FakeStudy()
    first, runs = _calibrate(monkeypatch, study, curves, RATES)
    assert len(runs) == 1 and first["settings"]["learning_rates"] == list(RATES)
    _, runs = _calibrate(monkeypatch, study, curves, (3e-3, 1e-3, 3e-4))  # same grid, other order: reused
    assert runs == []
    second, runs = _calibrate(monkeypatch, study, curves, (1e-3, 3e-3, 1e-2))  # no trial yet: recalibrated
    assert len(runs) == 1 and study.user_attrs["calibration"]["settings"]["learning_rates"] == [1e-3, 3e-3, 1e-2]
    study.trials = [object()] * 4  # trials ran at these settings: another grid is refused, nothing changed
    with pytest.raises(CalibrationSettingsChanged) as raised:
        _calibrate(monkeypatch, study, curves, RATES)
    assert isinstance(raised.value, AutoaugInputError)  # the CLI's exit 2
    message = str(raised.value)
    assert "\n" not in message and "0.0003,0.001,0.003" in message and "0.001,0.003,0.01" in message
    assert "4 trial(s)" in message and study.user_attrs["calibration"] == second


def test_reuse_reads_the_settings_of_records_made_before_they_were_stored():
    """Catches a comparison that treats every old record as changed (or as unchanged)."""
    old = {"learning_rates": {"0.0003": 0.6, "0.001": 0.62, "0.003": 0.58}, "calibration_epochs": 30}
    assert reuse_recorded(old, RATES, 30, n_trials=5, study_name="s") is True
    assert reuse_recorded(old, RATES, 20, n_trials=0, study_name="s") is False
    with pytest.raises(CalibrationSettingsChanged):
        reuse_recorded(old, (1e-3,), 30, n_trials=5, study_name="s")
    assert reuse_recorded(None, RATES, 30, n_trials=5, study_name="s") is False


# ---------------------------------------------------------------------- the gap against held-out training examples
# A planted shift (shapes-vqa fade=0.6: validation images faded, training images not): validation sits
# 0.15 below unseen training data from the first epoch. Train and held-out training accuracy are the
# OVERFIT curves shifted; validation is the held-out curve less 0.15.
SHIFT = 0.15
SHIFTED_TRAIN = OVERFIT_TRAIN
SHIFTED_HOLDOUT = OVERFIT_VAL
SHIFTED_VAL = [v - SHIFT for v in OVERFIT_VAL]


def _holdout_run(train, val, holdout) -> RunOutcome:
    results = [{"val_accuracy": v, "train_accuracy": t, "train_holdout_accuracy": h} for t, v, h in zip(train, val, holdout)]
    return RunOutcome(RunSpec(role="calibration", label="x"), results, "complete")


def test_a_shift_between_training_and_validation_data_is_not_read_as_overfitting():
    """Catches the gap measured against validation: there the shift opens it at epoch 1 (train 0.35 vs
    val 0.19), giving the 10-epoch floor; against the held-out training examples it opens at epoch 9,
    as for the unshifted curves (18-epoch trials)."""
    outcomes = {cal._label(1e-3, False): _holdout_run(SHIFTED_TRAIN, SHIFTED_VAL, SHIFTED_HOLDOUT),
                cal._label(1e-3, True): _run([0.10] * 30, [0.05] * 30)}
    record = decide(outcomes, (1e-3,), cap=30, n_val=1000)
    assert record["gap_reference"] == "train_holdout"
    assert record["regime"] == "gap" and record["regime_epoch"] == 9 and record["trial_epochs"] == 18
    against_val = decide(_outcomes({1e-3: (SHIFTED_TRAIN, SHIFTED_VAL)}), (1e-3,), cap=30, n_val=1000)
    assert against_val["gap_reference"] == "val" and against_val["regime_epoch"] == 1  # the misreading it replaces
    row = record["by_learning_rate"]["0.001"]
    # the shift is reported: held-out training accuracy minus validation at the end (smoothed)
    assert row["shift_at_end"] == pytest.approx(SHIFT, abs=1e-4)
    assert row["gap_at_end"] == pytest.approx(OVERFIT_TRAIN[-1] - OVERFIT_VAL[-1], abs=1e-4)
    assert record["curves"]["none lr=0.001"]["train_holdout_accuracy"][:2] == [round(v, 4) for v in SHIFTED_HOLDOUT[:2]]
    # the peak is still read on validation: a held-out curve that peaks and falls does not fire it
    falling = [min(h, 0.5) - max(0, e - 20) * 0.01 for e, h in enumerate(SHIFTED_HOLDOUT, start=1)]
    flat_train = [0.5] * 30
    signals = Dynamics(tuple(flat_train), tuple([0.3] * 30), tuple(falling)).signals
    assert "peak" not in signals


def test_the_underfit_line_names_the_held_out_examples():
    train, val = USER_UNDERFIT[3e-4]
    outcomes = {}
    for rate, (t, v) in USER_UNDERFIT.items():
        outcomes[cal._label(rate, False)] = _holdout_run(t, v, [x + 0.01 for x in v])
        outcomes[cal._label(rate, True)] = _run([0.25] * 30, [0.2] * 30)
    message = str(refusal(decide(outcomes, RATES, cap=30, n_val=1000)))
    assert "above held-out training examples" in message and "held-out train 0.3" in message


@pytest.mark.parametrize("train_examples, expected", [(600, 0.2), (100, 0.2), (97, None), (40, None)])
def test_examples_are_held_out_only_when_there_are_enough(train_examples, expected):
    """20 % of the training split, when that is at least 20 examples (round(0.2 × 97) = 19: too few, the
    gap is read against validation). Catches a fraction applied to any size (4 held-out examples)."""
    assert cal.holdout_fraction(train_examples) == expected


def test_calibration_runs_hold_out_the_same_training_examples(monkeypatch):
    """Every calibration run (question-only ones too: the image check compares runs trained on the same
    data) gets the held-out fraction. Catches question-only runs trained on the whole split."""
    import optuna

    asked = []

    def run_specs(context, stage, specs, on_finished=None):
        asked.extend(specs)
        return {spec.label: _holdout_run(OVERFIT_TRAIN, OVERFIT_VAL, OVERFIT_VAL) if not spec.question_only
                else _run([0.1] * 30, [0.05] * 30) for spec in specs}

    monkeypatch.setattr(cal, "run_specs", run_specs)
    study = optuna.create_study(direction="maximize")
    context = SimpleNamespace(study=study, request=SimpleNamespace(force=False, name="s", seed=0), client=None,
                              prepared=_prepared(), stage_seconds={})
    monkeypatch.setattr(cal, "_log", lambda *args: None)
    record = cal.calibrate(context, (1e-3,), 30)
    assert len(asked) == 2 and {spec.holdout_fraction for spec in asked} == {0.2}
    assert record["holdout_fraction"] == 0.2 and record["gap_reference"] == "train_holdout" and record["holdout_examples"] == 120


def test_the_image_check_passes_on_held_out_training_examples_when_validation_is_shifted():
    """A shift that washes out validation images: on validation none beats the question-only model by
    0.04 (needed ~0.06 at 1000 examples), on 120 held-out training examples by 0.25 (needed ~0.13): the
    images carry the answer, so the search goes on. Catches a check on validation alone (refuses the
    planted-gain task) and one that passes without any question-only comparison on held-out data."""
    none_val = [0.40] * 30
    blind_val = [0.36] * 30
    none = _holdout_run(OVERFIT_TRAIN, none_val, [0.65] * 30)
    blind = RunOutcome(RunSpec(role="calibration", label="x"),
                       [{"val_accuracy": v, "train_accuracy": 0.45, "train_holdout_accuracy": 0.40} for v in blind_val],
                       "complete")
    record = decide({cal._label(1e-3, False): none, cal._label(1e-3, True): blind}, (1e-3,), cap=30, n_val=1000,
                    n_holdout=120)
    assert record["image_margin"] == pytest.approx(0.04) and record["image_margin"] < record["image_margin_needed"]
    assert record["image_margin_holdout"] == pytest.approx(0.25)
    needed = 2 * math.sqrt(0.65 * 0.35 / 120 + 0.40 * 0.60 / 120)
    assert record["image_margin_holdout_needed"] == pytest.approx(needed, abs=1e-4)
    assert record["uses_images"] is True and record["holdout_examples"] == 120
    # the same held-out margin on too few examples to pass (needed > 0.25 at 25 examples): refused, and
    # the line gives both checks
    small = decide({cal._label(1e-3, False): none, cal._label(1e-3, True): blind}, (1e-3,), cap=30, n_val=1000,
                   n_holdout=25)
    assert small["uses_images"] is False
    message = cal.refusal_message(small)
    assert "margin +0.040" in message and "on 25 held-out training examples margin +0.250" in message
    # without held-out curves (an old record, or too few training examples) only validation counts
    plain = decide(_outcomes({1e-3: (OVERFIT_TRAIN, none_val)}, blind_val=0.36), (1e-3,), cap=30, n_val=1000)
    assert plain["uses_images"] is False and plain["image_margin_holdout"] is None


def _flat_run(train_end: float, val: float, holdout: float, epochs: int = 30) -> Dynamics:
    """Train climbing linearly to ``train_end`` (so the gap to ``holdout`` opens), flat val and held-out."""
    train = [0.3 + (train_end - 0.3) * e / epochs for e in range(1, epochs + 1)]
    return Dynamics(tuple(train), tuple([val] * epochs), tuple([holdout] * epochs))


def test_under_a_shift_the_learning_rate_is_chosen_on_held_out_training_examples():
    """The planted-gain calibration (fade=0.6, seed 0, measured): validation peaks 0.450 at 3e-4 and 0.427
    at 1e-3, held-out training examples 0.57 and 0.64. At 3e-4 the held-out peak is 0.12 above validation,
    beyond 2 SE of the difference at 120 / 500 examples (0.101): a shift, so the rate is chosen where none
    learns the training distribution best (1e-3). Catches a rule on validation alone (3e-4) and one that
    always uses the held-out examples (at 60 of them the same 0.12 is within 2 SE (0.135): validation)."""
    dynamics = {3e-4: _flat_run(0.75, 0.4498, 0.5714), 1e-3: _flat_run(0.85, 0.427, 0.6387)}
    assert all(d.regime_epoch is not None for d in dynamics.values())
    assert cal.learning_rate_choice(dynamics, n_val=500, n_holdout=120) == (1e-3, True, "train_holdout")
    shift, needed = cal.shift_of(dynamics[3e-4], 500, 120)
    assert shift == pytest.approx(0.5714 - 0.4498) and needed == pytest.approx(
        2 * math.sqrt(0.5714 * 0.4286 / 120 + 0.4498 * 0.5502 / 500))
    assert cal.learning_rate_choice(dynamics, n_val=500, n_holdout=60) == (3e-4, True, "val")
    # no shift (held-out and validation agree): validation's choice, as before
    agree = {3e-4: _flat_run(0.75, 0.4498, 0.46), 1e-3: _flat_run(0.85, 0.427, 0.43)}
    assert cal.learning_rate_choice(agree, n_val=500, n_holdout=120) == (3e-4, True, "val")
    # the record says what the rate was chosen on, and the shift
    outcomes = {}
    for rate, d in dynamics.items():
        outcomes[cal._label(rate, False)] = _holdout_run(list(d.train), list(d.val), list(d.holdout))
        outcomes[cal._label(rate, True)] = _run([0.3] * 30, [0.25] * 30)
    record = decide(outcomes, (3e-4, 1e-3), cap=30, n_val=500, n_holdout=120)
    assert record["learning_rate"] == 1e-3 and record["learning_rate_chosen_on"] == "train_holdout"
    assert record["shift"] == pytest.approx(0.6387 - 0.427, abs=1e-4)  # at the chosen rate


def test_the_search_line_says_when_the_rate_and_the_image_check_used_held_out_training_examples():
    """Catches a line that shows only validation's margin (the planted task: none 0.427 vs question-only
    0.430 on validation, which reads as a refusal the search did not make)."""
    from autoaug.cli import _calibration_line

    record = {"learning_rate": 1e-3, "trial_epochs": 30, "regime": "gap", "regime_epoch": 23,
              "none_val_accuracy": 0.427, "question_only_val_accuracy": 0.430, "learning_rate_chosen_on": "train_holdout",
              "shift": 0.2228, "image_margin_holdout": 0.1625, "image_margin_holdout_needed": 0.1267,
              "holdout_examples": 119}
    line = _calibration_line(record)
    assert "peak +0.223 above it): the rate was chosen on them" in line
    assert "on 119 held-out training examples none beats question-only by +0.163 (needed 0.127)" in line
    plain = _calibration_line({**record, "learning_rate_chosen_on": "val", "image_margin_holdout": None})
    assert "held-out" not in plain and plain.endswith("vs question-only 0.430")
