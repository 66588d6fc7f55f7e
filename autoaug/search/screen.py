"""The screen: every op of the space alone, paired against ``none``, before the sampler models anything.

Why: augmentation's gains on a small proxy are small (+0.01 to +0.02 validation accuracy) beside the
noise of one run, and a space holds many ops, most of which hurt. A sampler that starts from random
policies of 1–3 ops over 20 ops rarely tries the one op that helps on its own, and each policy it
tries mixes a helpful op with harmful ones. The screen spends one trial per op instead: the op alone
at a fixed, clearly-applied setting (its highest declared ``p``, the middle of its magnitude range,
a constant schedule, the least clean fraction the space allows), with the search's seed — the same
initialisation and data order as the ``none`` baseline, so the difference to ``none`` is paired
(common random numbers). The screen's trials are searched trials of the study (enqueued with fixed
parameters), so the sampler learns from them like from any other trial, and a single op can win
the search and go to the confirmation.

What survives: the search that follows considers only the ops the screen did not find clearly
harmful (`survivors`). "Clearly" is sized by the noise of one paired difference on this data, not by a
constant tuned on one task: an op is dropped when it is more than `DROP_SE` binomial standard errors of
a difference below ``none`` (``sqrt(2·a·(1−a)/n)`` at ``none``'s accuracy ``a`` on ``n`` validation
examples) — an upper bound of the paired noise, so a helpful op is rarely dropped by chance — and at
most the best half of the ops (at least `MIN_SURVIVORS`) go on, so the sampler's budget is spent on
combinations of what measured best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from autoaug.search.calibration import binomial_se
from autoaug.search.record_schema import SCREEN_ATTR, SCREEN_RECORD_ATTR
from autoaug.search.space import MAX_OPS, PolicySpace, SearchSpace, op_param, use_name

DROP_SE = 1.0  # an op more than this many binomial SE of a difference below none is dropped
MIN_SURVIVORS = 3
CONSTANT = "constant"


def screenable(space: SearchSpace) -> Optional[str]:
    """None when ``space`` can be screened; otherwise the one-line reason it cannot."""
    model = space.model
    if not isinstance(model, PolicySpace):
        return f"{space.name} is a {space.kind} space (the screen needs a policy space of ops)"
    if model.entries.min > 1:
        return f"{space.name} puts at least {model.entries.min} ops in every policy (no op can run alone)"
    if len(model.ops) < 2:
        return f"{space.name} has one op (nothing to screen)"
    return None


def screen_points(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """For each op of ``space``: the trial parameters that put it alone in the policy, clearly applied
    (highest ``p``, mid magnitude, constant schedule, least clean fraction, full loss weight)."""
    model = space.model
    points = {}
    for op in model.ops:
        ranges = model.sampling_ranges(op)
        params: dict[str, Any] = {use_name(other): other == op for other in model.ops}
        if model.entries.min < model.entries.max:
            params[MAX_OPS] = 1
        params[op_param(op, "p")] = ranges.p[1]
        params[op_param(op, "magnitude")] = round((ranges.magnitude[0] + ranges.magnitude[1]) / 2, 6)
        if len(model.schedules) > 1:
            params[op_param(op, "schedule")] = CONSTANT if CONSTANT in model.schedules else model.schedules[0]
        for name, value, end in (("clean_fraction", model.clean_fraction, 0),
                                 ("augmented_loss_weight", model.augmented_loss_weight, 1)):
            if isinstance(value, tuple) and value[0] != value[1]:
                params[name] = value[end]
        points[op] = params
    return points


@dataclass(frozen=True)
class ScreenResult:
    """The screen's verdict on each op: its value, its difference to ``none``, and whether it goes on."""

    none_value: float
    tolerance: float
    rows: tuple[dict, ...]

    @property
    def survivors(self) -> list[str]:
        return [row["op"] for row in self.rows if row["survives"]]

    @property
    def dropped(self) -> list[str]:
        return [row["op"] for row in self.rows if not row["survives"]]

    def as_record(self) -> dict:
        return {"none_val_accuracy": round(self.none_value, 6), "drop_below": round(self.tolerance, 6),
                "rule": (f"an op goes on unless it is more than {DROP_SE:g} binomial SE of a difference below none; "
                         f"at most the best half of the ops (at least {MIN_SURVIVORS})"),
                "ops": list(self.rows), "survivors": self.survivors, "dropped": self.dropped}


def difference_se(accuracy: float, n_val: int) -> float:
    """The binomial standard error of the difference of two accuracies near ``accuracy`` on ``n_val``
    examples, as if unpaired (an upper bound of the paired difference's noise)."""
    return math.sqrt(2.0) * binomial_se(accuracy, n_val)


def judge_screen(values: dict[str, Optional[float]], none_value: float, n_val: int) -> ScreenResult:
    """Which ops go on, from each op's screen value (None: its trial failed — it goes on, unjudged,
    since a failure says nothing about the op's effect and the search may retry it)."""
    tolerance = DROP_SE * difference_se(none_value, n_val)
    measured = sorted(((op, value) for op, value in values.items() if value is not None),
                      key=lambda item: (-item[1], item[0]))
    keep = max(MIN_SURVIVORS, math.ceil(len(values) / 2))
    kept = {op for rank, (op, value) in enumerate(measured) if rank < keep and value >= none_value - tolerance}
    if len(kept) < MIN_SURVIVORS:  # the floor: the best few always go on, however they did
        kept |= {op for op, _ in measured[:MIN_SURVIVORS]}
    rows = []
    for op in values:
        value = values[op]
        rows.append({"op": op, "val_accuracy": None if value is None else round(value, 6),
                     "diff_vs_none": None if value is None else round(value - none_value, 6),
                     "survives": value is None or op in kept})
    return ScreenResult(none_value, tolerance, tuple(rows))


def restricted(space: SearchSpace, survivors: list[str]) -> SearchSpace:
    """``space`` with only the ``survivors`` among its ops (same ranges, schedules and scalars; the cap
    on ops per policy shrinks to fit). Parameter names are unchanged, so trials before and after the
    restriction share one study and the sampler learns across them; a dropped op is never even asked
    (fixing its ``use`` to False would not do: the floor ``entries.min`` can force an op in unasked)."""
    model = space.model
    ops = {op: ranges for op, ranges in model.ops.items() if op in survivors}
    entries = model.entries.model_copy(update={"max": min(model.entries.max, len(ops)),
                                               "min": min(model.entries.min, len(ops))})
    return SearchSpace(model.model_copy(update={"ops": ops, "entries": entries}), space.source)


# ---------------------------------------------------------------------- the stage
def screen_values(study) -> dict[str, Optional[float]]:
    """Each screened op's value (its latest finished screen trial; None while only failed ones exist)."""
    from optuna.trial import TrialState

    values: dict[str, Optional[float]] = {}
    for trial in study.get_trials(deepcopy=False):
        op = trial.user_attrs.get(SCREEN_ATTR)
        if op is None:
            continue
        if trial.state == TrialState.COMPLETE and trial.values:
            values[op] = float(trial.values[0])
        else:
            values.setdefault(op, None)
    return values


def run_screen(context) -> tuple[Optional[dict], SearchSpace]:
    """Run the screen (or, on resume, what is missing of it) and judge it; returns the screen's record
    (stored on the study) and the space the search goes on with, or (None, space) when this search
    cannot be screened (the reason is printed)."""
    from optuna.trial import TrialState

    from autoaug.search.searched import run_trials
    from autoaug.search.study import baseline_outcomes

    study, space, console = context.study, context.space, context.console
    reason = screenable(space)
    none = baseline_outcomes(study).get("none") or {}
    none_value = none.get("value") if none.get("state") == "complete" else None
    if reason is None and none_value is None:
        reason = "the none baseline did not finish (run with --baselines): there is nothing to pair the ops with"
    if reason is not None:
        if console is not None:
            console.print(f"screen: skipped — {reason}", highlight=False)
        return None, space
    points = screen_points(space)

    done_or_queued = {trial.user_attrs[SCREEN_ATTR] for trial in study.get_trials(deepcopy=False)
                      if SCREEN_ATTR in trial.user_attrs
                      and trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)}
    for op in points:  # enqueued: Optuna hands them out before the sampler proposes anything
        if op not in done_or_queued:
            study.enqueue_trial(points[op], user_attrs={SCREEN_ATTR: op})
    waiting = lambda: sum(1 for trial in study.get_trials(deepcopy=False)  # noqa: E731
                          if SCREEN_ATTR in trial.user_attrs and trial.state == TrialState.WAITING)
    # full length, like the baselines it is paired with: a rung would judge the ops before they catch up
    run_trials(context, "screen", waiting, full_length=True)
    result = judge_screen(screen_values(study), none_value, len(context.prepared.splits["val"]))
    record = result.as_record()
    study.set_user_attr(SCREEN_RECORD_ATTR, record)
    if console is not None:
        console.print(f"screen: {len(result.survivors)} of {len(points)} ops go on ({', '.join(result.survivors)}); "
                      f"dropped as clearly below none (by more than {result.tolerance:.3f}) or not among the best "
                      f"half: {', '.join(result.dropped) or 'none'}", highlight=False)
    return record, restricted(space, result.survivors)
