"""`autoaug report`: one self-contained HTML file that shows a search to a person.

The Optuna study is the source of truth for trials (state, score, the policy each ran); the MLflow
experiment adds what Optuna does not keep: per-epoch learning curves, when each epoch trained, and
the search's wall time. Plots are plotly figures with plotly.js inlined once, so the file opens
offline (no CDN). Every section draws what the records hold and says what is missing: a study with
one trial, with only failed trials, or still running renders too.

Confirmation contract (read, never written here): when the search ran a confirmation stage, the
study's user attribute ``confirmation`` holds a JSON object ``{"candidates": [{"name", "mean", "se",
"diff_vs_none", "diff_se", "seeds"}, ...], "winner": name, "verdict": "improves" | "no-gain"}``;
the report renders it as a table, or says "no confirmation stage".
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from autoaug.dashboards import sources
from autoaug.errors import AutoaugInputError
from autoaug.search.record_schema import (BASELINE_ATTR, CONFIRMATION_ATTR, EPOCH_SECONDS, ERROR_ATTR, ERROR_TAG,
                                          MAX_EPOCHS_ATTR, METRIC, PBT_TRIAL_ATTR, POLICY_ATTR, SCHEDULER_ATTR,
                                          SEARCH_SECONDS, STATE_ATTR, TRIAL_TAG, experiment_name)
from autoaug.storage import DEFAULT_WORKDIR, find_records, open_study, tracking_client

TOP_CURVES = 5
STATE_STYLE = {  # state -> (legend label, colour); one registry for every plot and table
    "complete": ("complete", "#1f77b4"),
    "pruned": ("stopped early", "#ff7f0e"),
    "failed": ("failed", "#d62728"),
    "running": ("running", "#7f7f7f"),
}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


# ====================================================================== the records, gathered
@dataclass
class TrialRecord:
    """One trial as the report shows it."""

    number: int
    label: str  # the MLflow run name: "trial 3", "baseline none", "pbt <id>"
    baseline: Optional[str]
    state: str  # a key of STATE_STYLE
    value: Optional[float]
    robust: Optional[float]
    policy: Optional[dict]
    error: Optional[str]
    epochs: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val_accuracy)
    seconds: Optional[float] = None

    @property
    def searched(self) -> bool:
        return self.baseline is None

    def ops(self) -> list[dict]:
        return list((self.policy or {}).get("entries", []))

    def ops_text(self) -> str:
        parts = []
        for entry in self.ops():
            schedule = (entry.get("schedule") or {}).get("kind", "constant")
            parts.append(f"{entry['op']} p={entry['p']:.2f} m={effective_magnitude(entry):.2f}"
                         + ("" if schedule == "constant" else f" ({schedule})"))
        return ", ".join(parts) if parts else "no ops"


@dataclass
class SearchRecord:
    """Everything the report draws."""

    study: str
    attrs: dict
    objectives: int
    trials: list[TrialRecord]
    best: Optional[TrialRecord]
    confirmation: Optional[dict]
    wall_seconds: Optional[float] = None
    wall_source: str = ""
    training_seconds: Optional[float] = None
    trial_seconds: Optional[float] = None
    parent_status: Optional[str] = None
    mlflow_note: Optional[str] = None
    generated: str = ""

    def count(self, state: str, searched: bool = True) -> int:
        return sum(t.state == state for t in self.trials if t.searched == searched)

    @property
    def searched(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.searched]

    @property
    def baselines(self) -> list[TrialRecord]:
        return [t for t in self.trials if not t.searched]

    @property
    def running(self) -> bool:
        return any(t.state == "running" for t in self.trials) or self.parent_status == "RUNNING"

    @property
    def scored(self) -> list[TrialRecord]:
        """Searched trials with a score (finished, stopped early included)."""
        return [t for t in self.searched if t.value is not None and t.state in ("complete", "pruned")]


def effective_magnitude(entry: dict) -> float:
    """The magnitude an entry ends training with: PBT exports magnitude 1 times a piecewise schedule
    whose last value is the learned magnitude; every other schedule scales the searched magnitude."""
    schedule = entry.get("schedule") or {}
    if schedule.get("kind") == "piecewise" and schedule.get("points"):
        return float(entry.get("magnitude", 1.0)) * float(schedule["points"][-1][1])
    return float(entry.get("magnitude", 0.0))


def _trial_state(trial) -> str:
    from optuna.trial import TrialState

    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return "running"
    if trial.state == TrialState.FAIL:
        return "failed"
    if trial.state == TrialState.PRUNED:
        return "pruned"
    return trial.user_attrs.get(STATE_ATTR, "complete") if trial.user_attrs.get(STATE_ATTR) in STATE_STYLE else "complete"


def _label(trial) -> str:
    if BASELINE_ATTR in trial.user_attrs:
        return f"baseline {trial.user_attrs[BASELINE_ATTR]}"
    if PBT_TRIAL_ATTR in trial.user_attrs:
        return f"pbt {trial.user_attrs[PBT_TRIAL_ATTR]}"
    return f"trial {trial.number}"


def collect(study, client=None) -> SearchRecord:
    """Read the study (and, with a client, its MLflow experiment) into a `SearchRecord`."""
    trials = []
    for trial in study.get_trials(deepcopy=False):
        values = trial.values or []
        trials.append(TrialRecord(
            number=trial.number, label=_label(trial), baseline=trial.user_attrs.get(BASELINE_ATTR),
            state=_trial_state(trial), value=values[0] if values else None,
            robust=values[1] if len(values) > 1 else None, policy=trial.user_attrs.get(POLICY_ATTR),
            error=trial.user_attrs.get(ERROR_ATTR),
            curve=sorted((int(step), float(value)) for step, value in trial.intermediate_values.items()),
            seconds=(trial.duration.total_seconds() if trial.duration else None),
        ))
        record_last_epoch(trials[-1], study.user_attrs.get(MAX_EPOCHS_ATTR))
    chosen = exported_trial(study)
    best = next((t for t in trials if chosen is not None and t.number == chosen.number), None)
    confirmation = study.user_attrs.get(CONFIRMATION_ATTR)
    record = SearchRecord(study=study.study_name, attrs=dict(study.user_attrs), objectives=len(study.directions),
                          trials=trials, best=best, confirmation=confirmation if isinstance(confirmation, dict) else None,
                          generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    _times_from_optuna(record, study)  # MLflow's figures replace these where it has them
    if client is None:
        record.mlflow_note = "no MLflow records found: learning curves come from Optuna's intermediate values, wall time from trial timestamps"
    else:
        _add_mlflow(record, client)
    return record


def exported_trial(study):
    """The trial `autoaug export` picks by default, by the rule of `autoaug.search.controller.best_trial`
    (restated here because importing the controller loads Lightning, several times the report's own
    time; tests/test_dashboards.py checks the two agree): the best trial that ran its full length,
    searched or baseline, for two objectives among the Pareto-optimal ones."""
    from optuna.trial import TrialState

    candidates = [t for t in study.get_trials(deepcopy=False)
                  if t.state == TrialState.COMPLETE and t.user_attrs.get(STATE_ATTR, "complete") == "complete"]
    if not candidates:
        return None
    if len(study.directions) > 1:
        front = {trial.number for trial in study.best_trials}
        candidates = [trial for trial in candidates if trial.number in front] or candidates
    return max(candidates, key=lambda trial: (trial.values[0], -trial.number))


def record_last_epoch(trial: TrialRecord, max_epochs: Optional[int]) -> None:
    """Optuna keeps every epoch but the last as an intermediate value; the last is the trial's value."""
    if trial.value is None:
        trial.epochs = trial.curve[-1][0] if trial.curve else 0
        return
    last = trial.curve[-1][0] if trial.curve else 0
    if trial.state == "complete" and max_epochs and last < int(max_epochs):
        trial.curve.append((int(max_epochs), trial.value))
    elif trial.state == "pruned" and not trial.curve:
        trial.curve.append((1, trial.value))
    trial.epochs = trial.curve[-1][0] if trial.curve else 0


def _times_from_optuna(record: SearchRecord, study) -> None:
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    if starts and ends:
        record.wall_seconds = (max(ends) - min(starts)).total_seconds()
        record.wall_source = "first trial start to last trial end (Optuna timestamps)"
    record.trial_seconds = sum(t.seconds or 0.0 for t in record.trials) or None


def _add_mlflow(record: SearchRecord, client) -> None:
    """Curves by epoch, epoch timing and the search's wall time from the MLflow experiment."""
    experiment = sources.experiment_of(client, record.study)
    if experiment is None:
        record.mlflow_note = f"no MLflow experiment {experiment_name(record.study)} in the tracking store: curves from Optuna only"
        return
    runs = {run.data.tags.get(TRIAL_TAG): run for run in sources.trial_runs(client, experiment.experiment_id, record.study)}
    intervals: list[tuple[float, float]] = []
    trial_seconds = 0.0
    now_ms = time.time() * 1000
    for trial in record.trials:
        run = runs.get(trial.label)
        if run is None:
            continue
        history = sorted(client.get_metric_history(run.info.run_id, METRIC), key=lambda m: m.step)
        if history:
            trial.curve = [(int(m.step), float(m.value)) for m in history]
            trial.epochs = trial.curve[-1][0]
        for metric in client.get_metric_history(run.info.run_id, EPOCH_SECONDS):  # stamped at the epoch's end
            end = metric.timestamp / 1000.0
            intervals.append((end - float(metric.value), end))
        trial_seconds += ((run.info.end_time or now_ms) - run.info.start_time) / 1000.0
        if trial.state == "failed" and not trial.error:
            trial.error = run.data.tags.get(ERROR_TAG)
    record.trial_seconds = trial_seconds or None
    record.training_seconds = _union_length(intervals) if intervals else None
    parent = sources.parent_run(client, experiment.experiment_id, record.study)
    if parent is None:
        record.mlflow_note = "the search's parent MLflow run is missing: wall time from trial timestamps"
        return
    record.parent_status = parent.info.status
    sessions = client.get_metric_history(parent.info.run_id, SEARCH_SECONDS)
    if parent.info.status == "RUNNING" or not sessions:
        record.wall_seconds = (now_ms - parent.info.start_time) / 1000.0 if parent.info.status == "RUNNING" else \
            ((parent.info.end_time or now_ms) - parent.info.start_time) / 1000.0
        record.wall_source = "since the search started (still running)" if parent.info.status == "RUNNING" else "parent run start to end"
    else:
        record.wall_seconds = sum(float(m.value) for m in sessions)
        record.wall_source = f"sum of {len(sessions)} driver session{'s' if len(sessions) > 1 else ''}, as the search measured"


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one interval (epochs of parallel trials overlap)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


# ====================================================================== figures
@dataclass
class Section:
    """One part of the report: a title, a figure or an HTML table, and what it could not show."""

    key: str
    title: str
    caption: str
    figure: Any = None
    figure_html: Optional[str] = None
    table_html: Optional[str] = None
    note: Optional[str] = None


def _layout(fig, height: int = 420, **extra) -> Any:
    fig.update_layout(template="plotly_white", height=height, margin=dict(l=60, r=20, t=30, b=50),
                      legend=dict(orientation="h", y=-0.18), **extra)
    return fig


def best_so_far_section(record: SearchRecord) -> Section:
    import plotly.graph_objects as go

    section = Section("best-so-far", "Best score so far",
                      "Running best validation accuracy over trials that ran the full length, in trial order; "
                      "dotted lines are the baselines run in the same study.")
    complete = sorted((t for t in record.searched if t.state == "complete" and t.value is not None), key=lambda t: t.number)
    if not complete:
        section.note = "no trial has finished its full length yet: nothing to draw"
        return section
    best, xs, ys = -math.inf, [], []
    for trial in complete:
        best = max(best, trial.value)
        xs.append(trial.number)
        ys.append(best)
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", name="best so far",
                               hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    for baseline in record.baselines:
        if baseline.value is not None:
            fig.add_hline(y=baseline.value, line_dash="dot", line_color="#999",
                          annotation_text=baseline.label, annotation_position="top left")
    section.figure = _layout(fig, xaxis_title="trial number", yaxis_title=METRIC.replace("_", " "))
    return section


def scores_by_state_section(record: SearchRecord) -> Section:
    import plotly.graph_objects as go

    section = Section("scores", "Every trial's score",
                      "Each searched trial's validation accuracy (its last reported epoch), coloured by how it ended; "
                      "failed trials have no score and sit on the axis.")
    if not record.searched:
        section.note = "the study has no searched trial yet"
        return section
    fig = go.Figure()
    floor = min((t.value for t in record.scored), default=0.0)
    for state, (label, colour) in STATE_STYLE.items():
        chosen = [t for t in record.searched if t.state == state]
        if not chosen:
            continue
        ys = [t.value if t.value is not None else floor for t in chosen]
        text = [f"{t.label}: {t.ops_text()}" + (f"<br>error: {html.escape((t.error or '')[-160:])}" if t.error else "")
                for t in chosen]
        fig.add_trace(go.Scatter(x=[t.number for t in chosen], y=ys, mode="markers", name=f"{label} ({len(chosen)})",
                                 marker=dict(color=colour, size=10, symbol="x" if state == "failed" else "circle"),
                                 text=text, hovertemplate="%{text}<br>score %{y:.4f}<extra></extra>"))
    section.figure = _layout(fig, xaxis_title="trial number", yaxis_title=METRIC.replace("_", " "))
    return section


def ops_section(record: SearchRecord) -> Section:
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    section = Section("ops", "Score against each op's magnitude and probability",
                      "One panel per op that appeared in a scored trial: x is the op's magnitude (for PBT the learned "
                      "final value), y the trial's score, colour its probability p; open markers were stopped early.")
    points: dict[str, list[tuple[float, float, float, TrialRecord]]] = {}
    for trial in record.scored:
        for entry in trial.ops():
            points.setdefault(entry["op"], []).append((effective_magnitude(entry), float(entry["p"]), trial.value, trial))
    if not points:
        section.note = "no scored trial with ops yet"
        return section
    ops = sorted(points)
    columns = min(4, len(ops))
    rows = math.ceil(len(ops) / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=ops, shared_yaxes=True,
                        horizontal_spacing=0.04, vertical_spacing=min(0.12, 0.5 / rows))
    for index, op in enumerate(ops):
        row, column = divmod(index, columns)
        data = points[op]
        fig.add_trace(go.Scatter(
            x=[m for m, _, _, _ in data], y=[v for _, _, v, _ in data], mode="markers", showlegend=False,
            marker=dict(color=[p for _, p, _, _ in data], coloraxis="coloraxis", size=10,
                        symbol=["circle-open" if t.state == "pruned" else "circle" for _, _, _, t in data],
                        line=dict(width=1.5)),
            text=[t.label for _, _, _, t in data], name=op,
            hovertemplate="%{text}<br>magnitude %{x:.3f}<br>p %{marker.color:.2f}<br>score %{y:.4f}<extra>" + op + "</extra>",
        ), row=row + 1, col=column + 1)
        fig.update_xaxes(range=[-0.05, 1.05], row=row + 1, col=column + 1)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1, colorbar=dict(title="p")))
    section.figure = _layout(fig, height=max(320, 240 * rows))
    section.figure.update_layout(legend=None, margin=dict(l=50, r=20, t=40, b=30))
    return section


def importance_features(trial: TrialRecord) -> dict[str, float]:
    """A policy as fixed-length numbers: ``op.<name>.p``/``.magnitude`` (0 when the op is absent, which
    is what p = 0 means), clean fraction, loss weight and modality balance."""
    policy = trial.policy or {}
    features: dict[str, float] = {}
    for key in ("clean_fraction", "augmented_loss_weight"):
        if isinstance(policy.get(key), (int, float)):
            features[key] = float(policy[key])
    for modality, value in (policy.get("balance") or {}).items():
        features[f"balance.{modality}"] = float(value)
    for entry in trial.ops():
        # an op drawn twice counts with its strongest entry
        features[f"op.{entry['op']}.p"] = max(features.get(f"op.{entry['op']}.p", 0.0), float(entry["p"]))
        features[f"op.{entry['op']}.magnitude"] = max(features.get(f"op.{entry['op']}.magnitude", 0.0), effective_magnitude(entry))
    return features


def importance_section(record: SearchRecord) -> Section:
    import optuna
    import plotly.graph_objects as go

    section = Section("importance", "What mattered: parameter importance",
                      "Optuna's importance evaluator (its default, PED-ANOVA) over the scored trials, with each policy "
                      "written as op.<name>.p / op.<name>.magnitude (0 when the op is absent), clean fraction, loss "
                      "weight and balance. Few trials give rough estimates.")
    scored = record.scored
    if len(scored) < 2:
        section.note = f"needs at least 2 scored trials, the study has {len(scored)}"
        return section
    rows = [(importance_features(t), t.value) for t in scored]
    keys = sorted({key for features, _ in rows for key in features})
    ranges = {key: [features.get(key, 0.0) for features, _ in rows] for key in keys}
    varying = [key for key in keys if max(ranges[key]) > min(ranges[key])]
    if not varying or len({value for _, value in rows}) < 2:
        section.note = "every scored trial has the same score or the same parameters: no importance to estimate"
        return section
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    derived = optuna.create_study(direction="maximize")  # in memory: the real study is never written
    distributions = {key: optuna.distributions.FloatDistribution(min(ranges[key]), max(ranges[key])) for key in varying}
    for features, value in rows:
        derived.add_trial(optuna.trial.create_trial(
            params={key: features.get(key, 0.0) for key in varying}, distributions=distributions, value=value))
    try:
        importances = optuna.importance.get_param_importances(derived)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        section.note = f"Optuna could not estimate importances from these trials ({str(error).splitlines()[0][:200]})"
        return section
    top = list(importances.items())[:15][::-1]
    fig = go.Figure(go.Bar(x=[v for _, v in top], y=[k for k, _ in top], orientation="h",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>", marker_color="#2ca02c"))
    section.figure = _layout(fig, height=max(260, 28 * len(top) + 80), xaxis_title="importance (sums to 1)")
    section.figure.update_layout(margin=dict(l=260, r=20, t=20, b=50))
    return section


def curves_section(record: SearchRecord) -> Section:
    import plotly.graph_objects as go

    section = Section("curves", f"Learning curves: top {TOP_CURVES} trials against the baselines",
                      "Validation accuracy by epoch of the best-scoring searched trials (solid) and of the baselines "
                      "run in the same study (dotted).")
    top = sorted((t for t in record.scored if t.curve), key=lambda t: (-t.value, t.number))[:TOP_CURVES]
    baselines = [t for t in record.baselines if t.curve]
    if not top and not baselines:
        section.note = "no trial reported an epoch yet"
        return section
    fig = go.Figure()
    for trial in top:
        fig.add_trace(go.Scatter(x=[e for e, _ in trial.curve], y=[v for _, v in trial.curve], mode="lines+markers",
                                 name=f"{trial.label} ({trial.value:.4f})", text=[trial.ops_text()] * len(trial.curve),
                                 hovertemplate="epoch %{x}: %{y:.4f}<br>%{text}<extra></extra>"))
    for baseline in baselines:
        fig.add_trace(go.Scatter(x=[e for e, _ in baseline.curve], y=[v for _, v in baseline.curve], mode="lines",
                                 line=dict(dash="dot"), name=baseline.label))
    if not baselines:
        section.note = "no baselines in this study (search with --baselines to draw them here)"
    section.figure = _layout(fig, xaxis_title="epoch", yaxis_title=METRIC.replace("_", " "))
    return section


def pareto_section(record: SearchRecord) -> Optional[Section]:
    import plotly.graph_objects as go

    if record.objectives < 2:
        return None
    section = Section("pareto", "Pareto front: clean vs robust validation accuracy",
                      "NSGA-II's two objectives for every scored trial; the front (no trial better on both) is joined.")
    scored = [t for t in record.scored if t.robust is not None]
    if not scored:
        section.note = "no trial with both objectives yet"
        return section
    front = [t for t in scored if not any(o.value >= t.value and o.robust >= t.robust and (o.value, o.robust) != (t.value, t.robust)
                                          for o in scored)]
    front.sort(key=lambda t: t.value)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[t.value for t in scored], y=[t.robust for t in scored], mode="markers", name="trials",
                             marker=dict(color="#aaa", size=9), text=[f"{t.label}: {t.ops_text()}" for t in scored],
                             hovertemplate="%{text}<br>clean %{x:.4f}, robust %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[t.value for t in front], y=[t.robust for t in front], mode="lines+markers",
                             name=f"Pareto front ({len(front)})", marker=dict(color="#d62728", size=11),
                             text=[f"{t.label}: {t.ops_text()}" for t in front],
                             hovertemplate="%{text}<br>clean %{x:.4f}, robust %{y:.4f}<extra></extra>"))
    section.figure = _layout(fig, xaxis_title="clean val accuracy", yaxis_title="robust val accuracy")
    return section


def schedules_section(record: SearchRecord) -> Optional[Section]:
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    if record.attrs.get(SCHEDULER_ATTR) != "pbt":
        return None
    section = Section("schedules", "PBT: the learned magnitude schedule per op",
                      "Each member's piecewise magnitude schedule over training (held between exploit steps); the "
                      "best member is drawn bold.")
    members = [t for t in record.scored if any((e.get("schedule") or {}).get("kind") == "piecewise" for e in t.ops())]
    if not members:
        section.note = "no finished PBT member yet"
        return section
    max_epochs = int(record.attrs.get(MAX_EPOCHS_ATTR) or 1)
    ops = sorted({e["op"] for t in members for e in t.ops()})
    fig = make_subplots(rows=1, cols=len(ops), subplot_titles=ops, shared_yaxes=True)
    for column, op in enumerate(ops, start=1):
        for trial in sorted(members, key=lambda t: t is record.best):
            entry = next((e for e in trial.ops() if e["op"] == op), None)
            if entry is None:
                continue
            points = (entry.get("schedule") or {}).get("points") or [[0.0, 1.0]]
            xs = [p * max_epochs for p, _ in points] + [max_epochs]
            ys = [v * float(entry.get("magnitude", 1.0)) for _, v in points]
            ys.append(ys[-1])
            bold = trial is record.best
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", showlegend=bold and column == 1,
                                     name=f"best: {trial.label}" if bold else trial.label,
                                     line=dict(width=4 if bold else 1, color="#d62728" if bold else "#bbb"),
                                     hovertemplate=f"{trial.label}<br>epoch %{{x}}: magnitude %{{y:.2f}}<extra>{op}</extra>"),
                          row=1, col=column)
        fig.update_xaxes(title_text="epoch", row=1, col=column)
    fig.update_yaxes(title_text="magnitude", row=1, col=1)
    section.figure = _layout(fig, height=380)
    return section


def confirmation_section(record: SearchRecord) -> Section:
    section = Section("confirmation", "Confirmation on fresh seeds",
                      "The top candidates retrained on seeds the search never used: mean ± standard error, and the "
                      "paired difference against no augmentation.")
    data = record.confirmation
    if not data:
        section.note = "no confirmation stage: this search did not retrain its top candidates on fresh seeds"
        return section
    rows = []
    for candidate in data.get("candidates") or []:
        winner = candidate.get("name") == data.get("winner")
        rows.append("<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            ' class="winner"' if winner else "", html.escape(str(candidate.get("name"))),
            _pm(candidate.get("mean"), candidate.get("se")), _pm(candidate.get("diff_vs_none"), candidate.get("diff_se"), signed=True),
            html.escape(_seeds_text(candidate.get("seeds")))))
    verdict = html.escape(str(data.get("verdict", "—")))
    section.table_html = (
        f'<p class="verdict">verdict: <b>{verdict}</b> — winner <b>{html.escape(str(data.get("winner", "—")))}</b></p>'
        '<table><thead><tr><th>policy</th><th>mean ± SE</th><th>vs none (paired) ± SE</th><th>seeds</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>")
    return section


def _pm(mean, se, signed: bool = False) -> str:
    if not isinstance(mean, (int, float)):
        return "—"
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return text + (f" ± {se:.4f}" if isinstance(se, (int, float)) else "")


def _seeds_text(seeds) -> str:
    if isinstance(seeds, (list, tuple)):
        return ", ".join(str(s) for s in seeds)
    return "—" if seeds is None else str(seeds)


def trials_table_section(record: SearchRecord) -> Section:
    section = Section("trials", "All trials", "Every trial of the study, best first; failed trials show their error.")
    if not record.trials:
        section.note = "the study has no trial yet"
        return section
    order = sorted(record.trials, key=lambda t: (t.value is None, -(t.value or 0.0), t.number))
    rows = []
    for trial in order:
        label, colour = STATE_STYLE[trial.state]
        score = "—" if trial.value is None else f"{trial.value:.4f}"
        if trial.robust is not None:
            score += f" / robust {trial.robust:.4f}"
        detail = html.escape(trial.ops_text() if trial.policy else "")
        if trial.error:
            detail += f'<div class="error">{html.escape(trial.error.strip().splitlines()[-1][:300])}</div>'
        row_class = ' class="winner"' if trial is record.best else ""
        rows.append(f'<tr{row_class}><td>{html.escape(trial.label)}</td>'
                    f'<td><span class="dot" style="background:{colour}"></span>{label}</td><td>{score}</td>'
                    f"<td>{trial.epochs or '—'}</td><td>{detail}</td></tr>")
    section.table_html = ('<table><thead><tr><th>trial</th><th>state</th><th>score</th><th>epochs</th><th>policy</th></tr>'
                          f"</thead><tbody>{''.join(rows)}</tbody></table>")
    return section


SECTIONS: list[Callable[[SearchRecord], Optional[Section]]] = [
    best_so_far_section, scores_by_state_section, ops_section, importance_section, curves_section,
    pareto_section, schedules_section, confirmation_section, trials_table_section,
]


# ====================================================================== summary and page
def summary_facts(record: SearchRecord) -> list[tuple[str, str]]:
    """(label, value) rows of the summary box: what ran, how it ended, what it cost."""
    attrs = record.attrs
    facts = [
        ("search", f"sampler {attrs.get('sampler', '?')}, scheduler {attrs.get('scheduler', '?')}, "
                   f"space {attrs.get('space_name', '?')}, up to {attrs.get('max_epochs', '?')} epochs per trial"),
        ("task", str(attrs.get("task", "?"))),
        ("trials", f"{len(record.searched)} searched: {record.count('complete')} complete, {record.count('pruned')} stopped "
                   f"early, {record.count('failed')} failed, {record.count('running')} running"
                   + (f"; {len(record.baselines)} baselines" if record.baselines else "")),
    ]
    if record.best is not None:
        stopped = ""
        facts.append(("best", f"{METRIC.replace('_', ' ')} {record.best.value:.4f}, {record.best.label}{stopped}: "
                              f"{record.best.ops_text()}"))
    else:
        facts.append(("best", "none yet (no trial ran its full length)"))
    if record.wall_seconds is not None:
        facts.append(("wall time", f"{_duration(record.wall_seconds)} ({record.wall_source})"))
    if record.trial_seconds is not None:
        facts.append(("trial time", f"{_duration(record.trial_seconds)} summed over trials"))
    if record.training_seconds is not None and record.wall_seconds:
        outside = max(0.0, record.wall_seconds - record.training_seconds)
        facts.append(("time outside training", f"{_duration(outside)} ({100 * outside / record.wall_seconds:.0f} % of the wall "
                                               "time no trial was in a training iteration: Ray start-up, trial start-up, "
                                               "scheduling, records)"))
    return facts


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def status_notes(record: SearchRecord) -> list[str]:
    """What the reader must know before trusting the figures."""
    notes = []
    if not record.trials:
        notes.append("the study has no trial yet")
    elif not record.scored and record.count("failed") and not record.count("running"):
        notes.append(f"every searched trial failed ({record.count('failed')}): no scores to plot; the errors are in the table below")
    elif len(record.scored) == 1:
        notes.append("one scored trial: comparisons need more trials")
    if record.running:
        notes.append(f"the search is still running ({record.count('running')} trial(s) in progress, or left running by a driver "
                     "that stopped: a resume marks those failed); this report shows what had finished")
    if record.mlflow_note:
        notes.append(record.mlflow_note)
    return notes


def render(record: SearchRecord) -> str:
    """The report as one HTML string with plotly.js inlined."""
    import jinja2
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    sections = [section for build in SECTIONS if (section := build(record)) is not None]
    for section in sections:
        if section.figure is not None:
            section.figure_html = pio.to_html(section.figure, include_plotlyjs=False, full_html=False,
                                              div_id=f"plot-{section.key}", config=PLOT_CONFIG)
    environment = jinja2.Environment(loader=jinja2.PackageLoader("autoaug.dashboards", "templates"),
                                     autoescape=jinja2.select_autoescape(["html"]))
    template = environment.get_template("report.html")
    return template.render(record=record, sections=sections, facts=summary_facts(record), notes=status_notes(record),
                           plotly_js=get_plotlyjs(), metric=METRIC.replace("_", " "))


def write_report(name: str, out: Path | str, workdir: Path | str = DEFAULT_WORKDIR, storage: Optional[str] = None,
                 tracking_uri: Optional[str] = None) -> dict:
    """`autoaug report`: read the records, render, write ``out``; returns a summary for the CLI."""
    where = find_records(workdir, storage, tracking_uri)
    study = open_study(where.optuna_url, name)
    client = tracking_client(where.tracking_uri) if where.tracking_uri else None
    record = collect(study, client)
    page = render(record)
    out = Path(out)
    if out.is_dir():
        raise AutoaugInputError(f"--out {out}: is a folder; give a file name such as {out / (name + '.html')}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as error:
        raise AutoaugInputError(f"--out {out}: cannot write ({error.strerror or error})") from None
    return {"path": str(out.resolve()), "study": name, "n_trials": len(record.searched),
            "best_value": record.best.value if record.best else None,
            "best_trial": record.best.number if record.best else None, "notes": status_notes(record)}
