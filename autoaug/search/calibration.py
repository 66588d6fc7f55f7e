"""Calibration: before any policy is searched, learn how to train on *this* data with no augmentation.

A search ranks policies by how they change a proxy training run, so the run must be in the regime
where augmentation can matter. Augmentation is a regulariser: it pays off once the unaugmented model
has learned what it can and starts to fit the training set better than it generalises. A model that is
still underfitting (train accuracy low, close to validation, both still rising) gains nothing from a
regulariser, so a search there ranks noise. Calibration measures the regime on the user's data instead
of trusting defaults tuned on the built-in task:

1. ``none`` at each learning rate of a small grid (default 3e-4, 1e-3, 3e-3), ``--max-epochs`` long
   (the calibration budget), trained on the training split less `HOLDOUT_FRACTION` (20 %) of it, held
   out (stratified, seeded); train, held-out and validation accuracy every epoch; and the same runs on
   the task with every image replaced by one grey image (a question-only model: the score reachable
   without looking).
2. Per learning rate, the *regime epoch*: the first epoch at which any of the regime signals
   (`REGIME_SIGNALS`, on 3-epoch trailing moving averages) fires —
   ``gap``: train accuracy is at least `GAP_OPEN` (0.10 absolute) above accuracy on the held-out
   training examples (on validation when fewer than `MIN_HOLDOUT_EXAMPLES` could be held out): against
   validation, a shift between training and validation data — a nuisance only validation has, which is
   what augmentation can fix — opened the gap from the first epochs and read as overfitting
   (measured: shapes-vqa with ``fade=0.6``, see the README);
   ``peak``: validation accuracy peaked and ended at least `VAL_DECLINE` (0.02) below its peak;
   ``fit``: train accuracy reached `FIT_ACCURACY` (0.95): the model fits its training set.
   Every threshold is an absolute accuracy, never a multiple of the validation set's sampling error:
   the same curves give the same decision whatever the validation set's size.
3. The learning rate: among the rates that reach the regime, the one whose smoothed validation
   accuracy peaks highest (a rate that never leaves the underfitting phase is not chosen over one
   that does, however close their peaks). Ties (equal peaks to 4 decimals) go to the rate that reaches
   the regime first (shorter trials: more of them per budget), then to the smaller rate. Under a
   shift — at that rate the held-out training examples peak above validation by more than 2 binomial SE
   of the difference (at least `MIN_SHIFT`) — the peaks are read on the held-out training examples
   instead (`learning_rate_choice` says why).
4. The trial length: ``TRIAL_LENGTH_FACTOR × regime epoch`` (2×), at least `MIN_TRIAL_EPOCHS` (10),
   capped at the budget. Why 2×: trials anneal their learning rate to 0 over their own length, so a
   trial of 2g epochs has by its end had about as much learning (the integral of its cosine schedule)
   as the calibration run had by epoch g, where ``none`` entered the regime; regularised policies,
   which learn more slowly at first, get the second half to catch up. The ASHA grace period (the
   record's ``plateau_epoch``, kept under that name for its readers) is the regime epoch.
5. Refusals, before the search spends its budget (each one line; ``--force`` searches anyway):
   - `NoneUnderfits` (exit 1): no learning rate reaches the regime within the budget; the line gives
     train and validation accuracy at the budget and their gap per rate, and what to try. With
     ``--force`` the rate with the highest peak is used and trials run the whole budget.
   - `ImageCheckFailed` (exit 1): every question-only run failed, so the image check cannot be made;
     the line gives each run's reason.
   - `ImageSignalMissing` (exit 1, raised by the controller from ``uses_images``): ``none`` does not beat
     the question-only model by 2 binomial standard errors of the difference (at least 0.02), neither on
     validation nor on the held-out training examples (images that carry the answer in training data but
     less in validation are a shift, which augmentation may fix, not images that carry nothing).
   Underfitting is checked first: an underfitting model may fail the image check only because it has
   not learned the images yet, and the remedy (train longer) differs.

The result is stored on the study with the settings it was made with (learning rates and budget). A
resumed search reuses it when those match; when ``--learning-rates`` changed it recalibrates if the
study has no trial yet (e.g. after a refusal), and refuses (`CalibrationSettingsChanged`, exit 2)
once trials ran at the old settings — trials trained at another learning rate or length must not be
ranked together. It is returned in the search's JSON as ``calibration`` (with every run's train and
validation curve under ``curves``) and logged as the search's ``calibration`` MLflow child run
(``<run>.val_accuracy`` and ``<run>.train_accuracy`` per epoch).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from autoaug.errors import AutoaugError, AutoaugInputError
from autoaug.search.record_schema import (CALIBRATION_ATTR, HOLDOUT_ACCURACY, METRIC, PARENT_TAG, ROLE_CALIBRATION,
                                          ROLE_TAG, STUDY_TAG, TRAIN_ACCURACY)
from autoaug.search.stages import RunOutcome, SearchContext, run_specs
from autoaug.search.trainable import RunSpec

DEFAULT_LEARNING_RATES: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
SMOOTHING_EPOCHS = 3
GAP_OPEN = 0.10  # smoothed train − val accuracy at which `none` has started to overfit
VAL_DECLINE = 0.02  # how far below its smoothed peak validation must end for the peak to count
FIT_ACCURACY = 0.95  # smoothed train accuracy at which the training set is learned
RISING_TAIL = 0.25  # "still rising": over the last quarter of the budget ...
RISING_MIN = 0.01  # ... smoothed validation accuracy rose at least this much (reported, not decided on)
TRIAL_LENGTH_FACTOR = 2.0
MIN_TRIAL_EPOCHS = 10  # a floor on trials (never above the budget): regularisers need epochs to show
MIN_IMAGE_MARGIN = 0.02
PEAK_DECIMALS = 4  # peaks equal to this many decimals are ties
HOLDOUT_FRACTION = 0.2  # of the training examples, held out of calibration runs to measure overfitting on
MIN_HOLDOUT_EXAMPLES = 20  # fewer held-out examples than this: the gap is measured against validation
MIN_SHIFT = 0.02  # the least held-out-minus-validation peak difference read as a shift


class ImageSignalMissing(AutoaugError):
    """``none`` does not beat a question-only model: a search would rank noise (exit 1)."""


class ImageCheckFailed(AutoaugError):
    """Every question-only run failed: whether the model uses the images is unknown (exit 1)."""


class NoneUnderfits(AutoaugError):
    """``none`` never leaves the underfitting phase within the calibration budget at any learning rate:
    no regulariser can help there, so a search would rank noise (exit 1)."""


class CalibrationSettingsChanged(AutoaugInputError):
    """A resume asks for other calibration settings than the study's trials were run with (exit 2)."""


# ---------------------------------------------------------------------- curves and regime signals
def smoothed(curve: list[float], window: int = SMOOTHING_EPOCHS) -> list[float]:
    """Trailing moving average (the first epochs average what they have)."""
    return [sum(curve[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(curve))]


def binomial_se(accuracy: float, n: int) -> float:
    return math.sqrt(max(accuracy * (1.0 - accuracy), 1e-12) / max(n, 1))


def _first_epoch(flags: list[bool]) -> Optional[int]:
    return next((epoch for epoch, flag in enumerate(flags, start=1) if flag), None)


def gap_opens(train: list[float], val: list[float], held_out: list[float]) -> Optional[int]:
    """First epoch (1-based) where smoothed train accuracy is ≥ `GAP_OPEN` above smoothed accuracy on
    held-out data of the training distribution (``held_out``: the held-out training examples, or
    validation when there are none)."""
    return _first_epoch([t - h >= GAP_OPEN for t, h in zip(train, held_out)])


def val_peaks(train: list[float], val: list[float], held_out: list[float]) -> Optional[int]:
    """The epoch of the smoothed validation peak, if the curve ends ≥ `VAL_DECLINE` below it (a climb
    that is still going, or flattened by the annealed learning rate, is no peak)."""
    if not val:
        return None
    peak = max(val)
    return val.index(peak) + 1 if val[-1] <= peak - VAL_DECLINE else None


def train_fits(train: list[float], val: list[float], held_out: list[float]) -> Optional[int]:
    """First epoch where smoothed train accuracy reaches `FIT_ACCURACY`."""
    return _first_epoch([t >= FIT_ACCURACY for t in train])


# Each signal takes the smoothed train, val and held-out curves and returns the epoch it fires at, or
# None. Order matters only for naming a tie (two signals at the same epoch): the first listed is reported.
# The gap is measured against held-out *training* examples: against validation it would also count a
# shift between training and validation data (a nuisance only validation has: exactly what augmentation
# can fix) as overfitting, from the first epoch. The peak stays on validation: its examples are more
# (a smaller set's noise makes a spurious "peak then decline" likelier) and its decline is what the
# search is judged on.
REGIME_SIGNALS: dict[str, Callable[[list[float], list[float], list[float]], Optional[int]]] = {
    "gap": gap_opens, "peak": val_peaks, "fit": train_fits,
}


@dataclass(frozen=True)
class Dynamics:
    """What one ``none`` run's train and validation curves say about its regime (epochs 1-based)."""

    train: tuple[float, ...]  # raw per-epoch curves
    val: tuple[float, ...]
    holdout: tuple[float, ...] = ()  # accuracy on held-out training examples; () when none were held out

    @property
    def smooth_train(self) -> list[float]:
        return smoothed(list(self.train))

    @property
    def smooth_val(self) -> list[float]:
        return smoothed(list(self.val))

    @property
    def gap_reference(self) -> str:
        """What the gap is measured against: ``"train_holdout"`` (held-out training examples) or ``"val"``."""
        return "train_holdout" if self.holdout and len(self.holdout) == len(self.val) else "val"

    @property
    def smooth_held_out(self) -> list[float]:
        return smoothed(list(self.holdout)) if self.gap_reference == "train_holdout" else self.smooth_val

    @property
    def signals(self) -> dict[str, int]:
        """Each regime signal that fired, with its epoch. Without a train curve only ``peak`` can fire."""
        train = self.smooth_train if len(self.train) == len(self.val) else []
        fired = {name: signal(train, self.smooth_val, self.smooth_held_out) for name, signal in REGIME_SIGNALS.items()}
        return {name: epoch for name, epoch in fired.items() if epoch is not None}

    @property
    def regime_epoch(self) -> Optional[int]:
        """The first epoch at which ``none`` is in the regime where augmentation can matter; None: never."""
        return min(self.signals.values(), default=None)

    @property
    def regime(self) -> Optional[str]:
        signals = self.signals
        return min(signals, key=signals.get) if signals else None  # dict order breaks ties

    @property
    def val_peak(self) -> float:
        return max(self.smooth_val)

    @property
    def val_rising_at_end(self) -> bool:
        smooth = self.smooth_val
        start = min(len(smooth) - 1, int(len(smooth) * (1 - RISING_TAIL)))
        return smooth[-1] - smooth[start] >= RISING_MIN

    def at_end(self) -> dict[str, Optional[float]]:
        """Smoothed train, held-out and val accuracy at the budget; the gap (train − held-out) and the
        shift (held-out training examples − validation: how much harder validation is than unseen
        training data; None without held-out examples)."""
        val = self.smooth_val[-1]
        held_out = self.smooth_held_out[-1]
        train = self.smooth_train[-1] if self.train else None
        holdout = held_out if self.gap_reference == "train_holdout" else None
        return {"train_accuracy": train, "holdout_accuracy": holdout, "val_accuracy": val,
                "gap": None if train is None else train - held_out,
                "shift": None if holdout is None else holdout - val}

    def row(self) -> dict[str, Any]:
        end = self.at_end()
        return {"val_peak": _round(self.val_peak), "val_peak_epoch": self.smooth_val.index(self.val_peak) + 1,
                "regime": self.regime, "regime_epoch": self.regime_epoch,
                **{f"{name}_epoch": self.signals.get(name) for name in REGIME_SIGNALS},
                "train_accuracy_at_end": _round(end["train_accuracy"]), "val_accuracy_at_end": _round(end["val_accuracy"]),
                "holdout_accuracy_at_end": _round(end["holdout_accuracy"]), "gap_reference": self.gap_reference,
                "gap_at_end": _round(end["gap"]), "shift_at_end": _round(end["shift"]),
                "val_rising_at_end": self.val_rising_at_end}


def trial_length(regime_epoch: Optional[int], cap: int) -> int:
    """``TRIAL_LENGTH_FACTOR × regime_epoch``, at least `MIN_TRIAL_EPOCHS`, at most ``cap`` (the budget);
    the whole budget when ``none`` never reached the regime (forced past the refusal)."""
    if regime_epoch is None:
        return cap
    return max(1, min(cap, max(MIN_TRIAL_EPOCHS, math.ceil(TRIAL_LENGTH_FACTOR * regime_epoch))))


def two_se_of_difference(a: float, n_a: int, b: float, n_b: int, floor: float) -> float:
    """2 binomial SE of the difference of accuracies ``a`` on ``n_a`` and ``b`` on ``n_b`` examples, at
    least ``floor``: what a difference must reach to count (the image check, a shift)."""
    return max(floor, 2 * math.sqrt(binomial_se(a, n_a) ** 2 + binomial_se(b, n_b) ** 2))


def shift_of(dynamics: Dynamics, n_val: int, n_holdout: int) -> tuple[Optional[float], Optional[float]]:
    """(shift, shift needed): how far the smoothed peak on held-out training examples lies above the
    smoothed validation peak, and what counts as a shift (2 binomial SE of the difference, at least
    `MIN_SHIFT`). (None, None) without held-out curves."""
    if dynamics.gap_reference != "train_holdout":
        return None, None
    held_out, val = max(dynamics.smooth_held_out), dynamics.val_peak
    return held_out - val, two_se_of_difference(held_out, n_holdout, val, n_val, MIN_SHIFT)


def learning_rate_choice(dynamics: dict[float, Dynamics], n_val: Optional[int] = None,
                         n_holdout: Optional[int] = None) -> tuple[float, bool, str]:
    """The rate, whether it reaches the regime, and what its peak was read on (``"val"`` or
    ``"train_holdout"``).

    Among the rates that reach the regime (all of them when none does), the highest smoothed peak wins;
    ties go to the earlier regime epoch, then the smaller rate. The peak is read on validation — unless,
    at the rate validation picks, held-out training examples peak significantly higher than validation
    (`shift_of`): validation then differs from training data, and its peak rewards the rate that is
    least hurt by that difference, which is the rate that learns the training data least (measured on
    the planted gain: lr 3e-4 by validation, where colour jitter gained nothing, against 1e-3 by the
    held-out examples, where it gained +0.06). Augmentation is searched to close that difference, so
    the rate is chosen where ``none`` learns the training distribution best."""
    reached = {rate: d for rate, d in dynamics.items() if d.regime_epoch is not None}
    pool = reached or dynamics

    def best(peak: Callable[[Dynamics], float]) -> float:
        return max(pool, key=lambda r: (round(peak(pool[r]), PEAK_DECIMALS), -(pool[r].regime_epoch or math.inf), -r))

    rate = best(lambda d: d.val_peak)
    if n_val and n_holdout:
        shift, needed = shift_of(pool[rate], n_val, n_holdout)
        if shift is not None and shift >= needed and all(d.gap_reference == "train_holdout" for d in pool.values()):
            return best(lambda d: max(d.smooth_held_out)), bool(reached), "train_holdout"
    return rate, bool(reached), "val"


# ---------------------------------------------------------------------- the decision (pure)
def image_check(none_score: float, question_only: Optional[float], n: int) -> tuple[Optional[float], Optional[float], Optional[bool]]:
    """(margin, margin needed, passed) of ``none`` over the question-only model on ``n`` examples: it
    passes when the margin is at least 2 binomial SE of the difference and at least `MIN_IMAGE_MARGIN`.
    All None when there is no question-only score (every such run failed)."""
    if question_only is None:
        return None, None, None
    needed = two_se_of_difference(none_score, n, question_only, n, MIN_IMAGE_MARGIN)
    return none_score - question_only, needed, none_score - question_only >= needed


def decide(outcomes: dict[str, RunOutcome], learning_rates: tuple[float, ...], cap: int, n_val: int,
           n_holdout: Optional[int] = None) -> dict[str, Any]:
    """Turn the calibration runs into the search's choices and figures (pure: tested on its own).

    Raises `AutoaugError` only when no ``none`` run trained at all; the refusals that ``--force`` can
    override are decided from the record by `refusal`."""
    full = {rate: outcomes.get(_label(rate, False)) for rate in learning_rates}
    blind = {rate: outcomes.get(_label(rate, True)) for rate in learning_rates}
    dynamics = {rate: Dynamics(tuple(run.curve(TRAIN_ACCURACY)), tuple(run.curve()), tuple(run.curve(HOLDOUT_ACCURACY)))
                for rate, run in full.items() if _trained(run)}
    if not dynamics:
        errors = "; ".join(f"lr {rate:g}: {_error(run)}" for rate, run in full.items())
        raise AutoaugError(f"calibration: no learning rate trained ({errors})")
    rate, reached, peak_basis = learning_rate_choice(dynamics, n_val, n_holdout)
    chosen = dynamics[rate]
    shift, shift_needed = shift_of(chosen, n_val, n_holdout) if n_holdout else (None, None)
    blind_peaks = {r: max(smoothed(run.curve())) for r, run in blind.items() if _trained(run)}
    none_score = chosen.val_peak
    question_only = max(blind_peaks.values()) if blind_peaks else None
    margin, margin_needed, on_val = image_check(none_score, question_only, n_val)
    # The same check on the held-out training examples: images that carry the answer in the training
    # distribution but not (as well) in validation are a shift, which augmentation may fix, not data
    # whose images carry nothing. Either check passing is enough.
    blind_holdout = [max(smoothed(run.curve(HOLDOUT_ACCURACY))) for run in blind.values()
                     if _trained(run) and run.curve(HOLDOUT_ACCURACY)]
    on_holdout = (None, None, None)
    if chosen.gap_reference == "train_holdout" and blind_holdout and n_holdout:
        on_holdout = image_check(max(chosen.smooth_held_out), max(blind_holdout), n_holdout)
    regime_epoch = chosen.regime_epoch if reached else None
    trials = trial_length(regime_epoch, cap)
    by_rate = {}
    for r in learning_rates:
        row = dynamics[r].row() if r in dynamics else {"val_peak": None, "regime": None, "regime_epoch": None}
        by_rate[f"{r:g}"] = {**row, "question_only_peak": _round(blind_peaks.get(r)),
                             "error": None if r in dynamics else _error(full[r]),
                             "question_only_error": None if r in blind_peaks else _error(blind[r])}
    return {
        "settings": {"learning_rates": [float(r) for r in learning_rates], "max_epochs": cap},
        "learning_rate": rate,
        "learning_rate_chosen_on": peak_basis,
        # held-out training peak − validation peak at the chosen rate, and what counts as a shift
        "shift": _round(shift),
        "shift_needed": _round(shift_needed),
        "reaches_regime": reached,
        "regime": chosen.regime if reached else None,
        "regime_epoch": regime_epoch,
        # the ASHA grace period (read under this name by the trials stage): the regime epoch, or the
        # whole trial (no rung) when `none` never reached it
        "plateau_epoch": regime_epoch if regime_epoch is not None else trials,
        "trial_epochs": trials,
        "calibration_epochs": cap,
        "thresholds": {"gap_open": GAP_OPEN, "val_decline": VAL_DECLINE, "fit_accuracy": FIT_ACCURACY,
                       "trial_length_factor": TRIAL_LENGTH_FACTOR, "min_trial_epochs": MIN_TRIAL_EPOCHS,
                       "smoothing_epochs": SMOOTHING_EPOCHS},
        "by_learning_rate": by_rate,
        "learning_rates": {f"{r:g}": by_rate[f"{r:g}"]["val_peak"] for r in learning_rates},
        "question_only_by_learning_rate": {f"{r:g}": by_rate[f"{r:g}"]["question_only_peak"] for r in learning_rates},
        "none_val_curve": _curve(chosen.val),
        "none_train_curve": _curve(chosen.train),
        "none_holdout_curve": _curve(chosen.holdout),
        "gap_reference": chosen.gap_reference,
        "curves": {_label(r, b).removeprefix("calibration "): {metric: _curve(run.curve(metric))
                                                               for metric in (METRIC, TRAIN_ACCURACY, HOLDOUT_ACCURACY)}
                   for r in learning_rates for b, run in ((False, full[r]), (True, blind[r])) if run is not None},
        "none_val_accuracy": round(none_score, 4),
        "none_at_end": {key: _round(value) for key, value in chosen.at_end().items()},
        "question_only_val_accuracy": _round(question_only),
        "image_margin": _round(margin),
        "image_margin_needed": _round(margin_needed),
        "image_margin_holdout": _round(on_holdout[0]),
        "image_margin_holdout_needed": _round(on_holdout[1]),
        "holdout_examples": n_holdout,
        # None: unknown (every question-only run failed); `refusal` stops the search on it
        "uses_images": None if on_val is None else bool(on_val or on_holdout[2]),
        "val_examples": n_val,
    }


def refusal(record: dict) -> Optional[AutoaugError]:
    """The error that stops the search on this calibration unless ``--force`` (None: go on).
    Underfitting first (see the module's step 5); a record from before these checks never refuses."""
    if record.get("reaches_regime") is False:
        return NoneUnderfits(underfit_message(record))
    if record.get("uses_images", True) is None:
        return ImageCheckFailed(question_only_failed_message(record))
    return None


def underfit_message(record: dict) -> str:
    cap = record["calibration_epochs"]
    rates = [float(r) for r in record["settings"]["learning_rates"]]
    states = []
    for rate, row in record["by_learning_rate"].items():
        if row.get("val_peak") is None:
            states.append(f"lr {rate}: failed")
            continue
        rising = ", val still rising" if row["val_rising_at_end"] else ""
        gap = "n/a" if row["gap_at_end"] is None else f"{row['gap_at_end']:+.3f}"
        if row.get("holdout_accuracy_at_end") is not None:
            gap = f"held-out train {row['holdout_accuracy_at_end']:.3f}, gap {gap}"
        else:
            gap = f"gap {gap}"
        train = "n/a" if row["train_accuracy_at_end"] is None else f"{row['train_accuracy_at_end']:.3f}"
        states.append(f"lr {rate}: train {train}, val {row['val_accuracy_at_end']:.3f}, {gap}{rising}")
    against = "held-out training examples" if record.get("gap_reference") == "train_holdout" else "validation"
    return (f"calibration: with no augmentation the model still underfits after {cap} epochs at every learning "
            f"rate ({'; '.join(states)}) — train accuracy never gets {GAP_OPEN:.2f} above {against} nor reaches "
            f"{FIT_ACCURACY:.2f}, and validation never peaks, so no augmentation can help yet and a search would rank "
            f"noise. Try: a longer calibration (--max-epochs {2 * cap}, with a new --name), larger learning rates "
            f"(--learning-rates {','.join(_rate_text(r) for r in _larger_rates(rates))}); --force searches anyway "
            f"with {cap}-epoch trials.")


def question_only_failed_message(record: dict) -> str:
    reasons = "; ".join(f"lr {rate}: {row.get('question_only_error') or 'no result'}"
                        for rate, row in record["by_learning_rate"].items())
    return (f"calibration: every question-only run (images replaced by grey) failed ({reasons}), so whether the "
            f"model uses the images is unknown. Fix the cause and rerun, or --force searches anyway.")


def refusal_message(record: dict) -> str:
    return (f"calibration: the model does not learn from the images — with no augmentation it reaches val "
            f"accuracy {record['none_val_accuracy']:.3f}, a question-only model (images replaced by grey) "
            f"{record['question_only_val_accuracy']:.3f}: margin {record['image_margin']:+.3f}, needed "
            f"{record['image_margin_needed']:.3f}{_holdout_margin_text(record)}. A search would rank noise. Try: more training examples, a "
            f"longer calibration (--max-epochs), other learning rates (--learning-rates), checking that the "
            f"images decode and match their questions; --force searches anyway.")


def _holdout_margin_text(record: dict) -> str:
    if record.get("image_margin_holdout") is None:
        return ""
    return (f"; on {record['holdout_examples']} held-out training examples margin {record['image_margin_holdout']:+.3f}, "
            f"needed {record['image_margin_holdout_needed']:.3f}")


# ---------------------------------------------------------------------- resume
def recorded_settings(record: dict) -> tuple[tuple[str, ...], Optional[int]]:
    """The learning rates (as canonical text, sorted) and budget a record was made with; records from
    before ``settings`` existed carry them in ``learning_rates``' keys and ``calibration_epochs``."""
    settings = record.get("settings")
    rates = settings["learning_rates"] if settings else [float(r) for r in record.get("learning_rates", {})]
    cap = settings["max_epochs"] if settings else record.get("calibration_epochs")
    return _rate_key(rates), cap


def reuse_recorded(record: Optional[dict], learning_rates: tuple[float, ...], cap: int, n_trials: int,
                   study_name: str) -> bool:
    """Whether a resumed search reuses the stored calibration (True), or calibrates (again) (False).

    A record made with other learning rates or another budget is replaced when the study has no trial
    yet (nothing was trained at its settings, e.g. the search stopped at a calibration refusal); with
    trials it raises `CalibrationSettingsChanged`: they ran at the recorded settings."""
    if record is None:
        return False
    rates, recorded_cap = recorded_settings(record)
    if rates == _rate_key(learning_rates) and recorded_cap == cap:
        return True
    if n_trials == 0:
        return False
    raise CalibrationSettingsChanged(
        f"--learning-rates {','.join(_rate_key(learning_rates))} --max-epochs {cap}: study {study_name} was "
        f"calibrated with --learning-rates {','.join(rates)} --max-epochs {recorded_cap} and {n_trials} trial(s) "
        f"ran at its settings; resume it with those or choose another --name (its trials and calibration are kept)")


# ---------------------------------------------------------------------- the stage
def holdout_fraction(train_examples: int) -> Optional[float]:
    """`HOLDOUT_FRACTION`, or None (the gap measured against validation) when that would hold out fewer
    than `MIN_HOLDOUT_EXAMPLES` training examples."""
    return HOLDOUT_FRACTION if round(HOLDOUT_FRACTION * train_examples) >= MIN_HOLDOUT_EXAMPLES else None


def _label(rate: float, question_only: bool) -> str:
    return f"calibration {'question-only' if question_only else 'none'} lr={rate:g}"


def calibrate(context: SearchContext, learning_rates: tuple[float, ...], cap: int) -> dict[str, Any]:
    """Run (or, on resume, reuse) the calibration of this study; returns the ``calibration`` record.
    Raises `NoneUnderfits` / `ImageCheckFailed` (after storing the record) unless ``--force``."""
    study = context.study
    record = study.user_attrs.get(CALIBRATION_ATTR)
    if not reuse_recorded(record, learning_rates, cap, len(study.get_trials(deepcopy=False)), context.request.name):
        holdout = holdout_fraction(len(context.prepared.splits["train"]))
        # question-only runs hold out the same examples: the image check compares runs trained on the same data
        specs = [RunSpec(role="calibration", label=_label(rate, blind), policy="none", learning_rate=rate,
                         epochs=cap, question_only=blind, holdout_fraction=holdout)
                 for rate in learning_rates for blind in (False, True)]
        outcomes = run_specs(context, "calibration", specs)
        # counted from the same rows the runs hold out, without carving the task's tensors here
        n_holdout = None if holdout is None else len(context.prepared.train_holdout_rows(holdout, seed=context.request.seed)[0])
        record = decide(outcomes, learning_rates, cap, n_val=len(context.prepared.splits["val"]), n_holdout=n_holdout)
        record["holdout_fraction"] = holdout
        record["seconds"] = round(context.stage_seconds.get("calibration", 0.0), 1)
        study.set_user_attr(CALIBRATION_ATTR, record)
        _log(context, record, outcomes)
    error = refusal(record)
    if error is not None and not context.request.force:
        raise error
    return record


def _log(context: SearchContext, record: dict, outcomes: dict[str, RunOutcome]) -> None:
    """The calibration child run (each run's validation and train curve by epoch) and the parent's summary.

    The parent gets the choices as tags and the figures as metrics, both of which a recalibration (a
    resume with other ``--learning-rates``) may overwrite; MLflow params could not be changed."""
    import json

    from mlflow.entities import Metric, Param, RunTag

    client = context.client
    run = client.create_run(context.experiment_id, run_name="calibration",
                            tags={PARENT_TAG: context.parent, ROLE_TAG: ROLE_CALIBRATION, STUDY_TAG: context.request.name})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = []
    for label, outcome in outcomes.items():
        key = label.replace("calibration ", "").replace(" ", ".").replace("=", "_")
        for metric in (METRIC, TRAIN_ACCURACY, HOLDOUT_ACCURACY):
            metrics.extend(Metric(f"{key}.{metric}", value, now, epoch)
                           for epoch, value in enumerate(outcome.curve(metric), start=1))
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])
    scalars = {key: value for key, value in record.items()
               if isinstance(value, (int, float, str)) and not isinstance(value, bool)}
    client.log_batch(run_id, params=[Param(f"chosen.{key}", str(value)) for key, value in scalars.items()])
    client.log_text(run_id, json.dumps(record, indent=2, sort_keys=True), "calibration.json")
    client.set_terminated(run_id, "FINISHED")
    client.log_batch(context.parent,
                     tags=[RunTag(f"calibration.{key}", str(record[key]))
                           for key in ("learning_rate", "trial_epochs", "regime_epoch", "regime", "reaches_regime")],
                     metrics=[Metric(f"calibration.{key}", float(record[key]), now, 0)
                              for key in ("none_val_accuracy", "question_only_val_accuracy", "image_margin")
                              if record.get(key) is not None])


# ---------------------------------------------------------------------- small helpers
def _trained(run: Optional[RunOutcome]) -> bool:
    return run is not None and run.state == "complete" and bool(run.curve())


def _error(run: Optional[RunOutcome]) -> str:
    if run is None:
        return "never ran"
    return run.error or ("no validation result" if run.state == "complete" else f"the run {run.state}")


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def _curve(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def _rate_key(rates) -> tuple[str, ...]:
    return tuple(sorted({f"{float(r):.6g}" for r in rates}, key=float))


def _rate_text(rate: float) -> str:
    mantissa, exponent = f"{rate:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _larger_rates(rates: list[float]) -> list[float]:
    """The grid moved up: its upper rates plus the next half-decade (3e-4,1e-3,3e-3 → 1e-3,3e-3,1e-2)."""
    top = max(rates)
    upper = sorted(rates)[1:] if len(rates) > 1 else [top]
    nearest = round(math.log10(top) * 2) / 2
    return upper + [10 ** (nearest + 0.5)]
