"""The screen: every op of the space alone, paired against ``none``, before the sampler models anything.

Why: augmentation's gains on a small proxy are small (+0.01 to +0.02 validation accuracy) beside the
noise of one run, and a space holds many ops, most of which hurt. A sampler that starts from random
policies of 1–3 ops over 20 ops rarely tries the one op that helps on its own, and each policy it
tries mixes a helpful op with harmful ones. The screen spends two trials per op instead: the op alone
at fixed, clearly-applied settings (its highest declared ``p``, a constant schedule, the least clean
fraction the space allows) at two magnitudes, the middle and the top of its declared range
(`LEVELS`: an op's response to magnitude is unknown — translate helps at mid range on the built-in
task, while colour jitter must reach the top of its range to simulate washed-out test images; one
probe at mid range missed that planted gain in the search where it was tried), with the search's seed — the same
initialisation and data order as the ``none`` baseline, so the difference to ``none`` is paired
(common random numbers). The screen's trials are searched trials of the study (enqueued with fixed
parameters), so the sampler learns from them like from any other trial, and a single op can win
the search and go to the confirmation.

What survives: the search that follows considers only the ops the screen did not find clearly
harmful (`survivors`), judged on each op's better level. "Clearly" is sized by the noise of one paired difference on this data, not by a
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
# the magnitudes each op is screened at, as fractions of its declared range (0: low end, 1: top);
# "mid" first: a study screened before the second level existed holds its mid trials under the op's name
LEVELS = {"mid": 0.5, "top": 1.0}
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


def screen_key(op: str, level: str) -> str:
    """The screen trial's label (`SCREEN_ATTR`): the op's name for its mid level, ``op@level`` otherwise."""
    return op if level == "mid" else f"{op}@{level}"


def split_key(key: str) -> tuple[str, str]:
    """`screen_key`'s inverse: (op, level)."""
    op, _, level = key.partition("@")
    return op, level or "mid"


def op_of(key: str) -> str:
    return split_key(key)[0]


def screen_points(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """For each op of ``space`` and level of `LEVELS` (by `screen_key`): the trial parameters that put it
    alone in the policy, clearly applied (highest ``p``, the level's magnitude, constant schedule, least
    clean fraction, full loss weight). A level whose magnitude equals an earlier one's (a range of one
    value) is left out."""
    model = space.model
    points = {}
    for op in model.ops:
        ranges = model.sampling_ranges(op)
        alone: dict[str, Any] = {use_name(other): other == op for other in model.ops}
        if model.entries.min < model.entries.max:
            alone[MAX_OPS] = 1
        alone[op_param(op, "p")] = ranges.p[1]
        if len(model.schedules) > 1:
            alone[op_param(op, "schedule")] = CONSTANT if CONSTANT in model.schedules else model.schedules[0]
        for name, value, end in (("clean_fraction", model.clean_fraction, 0),
                                 ("augmented_loss_weight", model.augmented_loss_weight, 1)):
            if isinstance(value, tuple) and value[0] != value[1]:
                alone[name] = value[end]
        low, high = ranges.magnitude
        seen: set[float] = set()
        for level, fraction in LEVELS.items():
            magnitude = round(low + fraction * (high - low), 6)
            if magnitude not in seen:
                seen.add(magnitude)
                points[screen_key(op, level)] = {**alone, op_param(op, "magnitude"): magnitude}
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
    """Each screen trial's value by its key (`screen_key`: its latest finished trial; None while only
    failed ones exist)."""
    from optuna.trial import TrialState

    values: dict[str, Optional[float]] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get(SCREEN_ATTR)
        if key is None:
            continue
        if trial.state == TrialState.COMPLETE and trial.values:
            values[key] = float(trial.values[0])
        else:
            values.setdefault(key, None)
    return values


def best_levels(values: dict[str, Optional[float]]) -> tuple[dict[str, Optional[float]], dict[str, dict]]:
    """Per op: its better level's value (None only when every level failed) and every level's value."""
    by_op: dict[str, dict] = {}
    for key, value in values.items():
        op, level = split_key(key)
        by_op.setdefault(op, {})[level] = value
    best = {op: max((value for value in levels.values() if value is not None), default=None)
            for op, levels in by_op.items()}
    return best, by_op


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
    best, levels = best_levels(screen_values(study))
    result = judge_screen(best, none_value, len(context.prepared.splits["val"]))
    record = result.as_record()
    for row in record["ops"]:  # each level's value beside the better one the op was judged on
        row["levels"] = {level: None if value is None else round(value, 6) for level, value in levels[row["op"]].items()}
    study.set_user_attr(SCREEN_RECORD_ATTR, record)
    if console is not None:
        console.print(f"screen: {len(result.survivors)} of {len(best)} ops go on ({', '.join(result.survivors)}); "
                      f"dropped as clearly below none (by more than {result.tolerance:.3f}) or not among the best "
                      f"half: {', '.join(result.dropped) or 'none'}", highlight=False)
    return record, restricted(space, result.survivors)
