"""Does a policy chosen on the small proxy carry over to a model at least 10x larger?

A search ranks policies with short trials of the tiny proxy model (`TinyVLM` at its defaults). A user
trains something larger. This benchmark takes the policies a finished search ranks and trains each on
the same task with the built-in `TinyVLM` made wider and deeper (``LARGE_MODEL_OPTIONS``, at least
``MIN_PARAMETER_RATIO`` times the default proxy's parameters: both counts are printed, the ratio is
checked), at the study's calibrated learning rate and trial length, with ``--seeds`` seeds shared by
every policy (paired; ``30000 + i``, apart from the search's, race's and confirmation's seeds).

The candidates, read from the study's records (the same readers as ``autoaug export``):

- the confirmed export, when the confirmation's verdict was ``improves``;
- the top ``--top`` searched trials by the search's ranking (the race's order when a race ran, then
  the search value; trials stopped early never count);
- every single op of the screen whose difference to ``none`` was positive (its better level's trial);
- ``none`` and the presets (conservative, moderate, aggressive, trivial, randaugment).

A policy found twice (a screen trial that is also a top trial) is trained once, with both roles.

What each number means:

- **proxy score**: the proxy's gain over ``none`` in validation accuracy: the race's mean paired gain
  over its seeds when the race ran the candidate, else the candidate's search value minus ``none``'s
  (one seed, the search's: the same initialisation and data order); ``none`` is 0. The column beside it
  says which.
- **large gain ± SE**: the large model's mean clean test accuracy gain over ``none`` over the seeds,
  ± the paired SE (SD of the per-seed differences / sqrt(n)); **gain/SE** their ratio. Robust accuracy
  (the corruption suite of `autoaug.trainers.evaluation`) gets the same columns.
- **rho**: Spearman's rank correlation between the proxy scores and the large-model gains over every
  candidate that has both (``none`` included). Goal >= 0.7.
- **transfer**: the confirmed winner's large-model gain in paired SE. Goal > 2 SE.

Runs go one at a time by default (``--jobs``); every finished run is written to ``--json`` at once, and
a rerun with the same ``--json`` skips the (policy, seed) pairs it holds, so an interrupted run resumes.

    .venv/bin/python benchmarks/transfer.py --name STUDY --workdir DIR --json transfer.json
    .venv/bin/python benchmarks/transfer.py --name STUDY --workdir DIR --seeds 2 --epochs 1   # a smoke run

Progress lines (each run's seconds) go to stderr; the markdown report to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRANSFER_SEED_BASE = 30_000  # apart from the search's (0, 1, ...), confirmation's (10_000+) and race's (20_000+)
# width 256 (x2.7), depth 4 (x2): 12.4x the default proxy's parameters on shapes-vqa (2.18 M vs 0.18 M)
LARGE_MODEL_OPTIONS = {"width": 256, "depth": 4, "heads": 8}
MIN_PARAMETER_RATIO = 10.0
BATCH_SIZE = 32  # the search's trials train with this (`TrialSettings.batch_size`)
TRANSFER_SE_GOAL = 2.0  # the confirmed winner's large-model gain, in paired SE
RHO_GOAL = 0.7
SE_ZERO = 1e-9  # an SE below this is float rounding of equal differences (accuracies step by 1/n_test)
NONE = "none"
REFERENCE = "the reference (0 by definition)"


# ---------------------------------------------------------------------- what the study recorded
@dataclass(frozen=True)
class StudySettings:
    """What the search trained with, as its study recorded it; each run here reuses it."""

    study: str
    task: Optional[str]            # a built-in task or module:function plug-in (None: ``data``)
    task_options: dict
    data: Optional[str]            # the resolved data path of a ``--data`` search
    data_seed: int
    search_seed: int
    learning_rate: Optional[float]  # None: the study recorded none (the training default applies)
    learning_rate_from: str
    epochs: int
    epochs_from: str
    fingerprint: Optional[str]
    model: Optional[str]           # the search's --model (None: the built-in TinyVLM)


def parse_task_identity(identity: str) -> tuple[Optional[str], dict, Optional[str]]:
    """(task, task options, data path) from the study's task attribute (`study.task_identity`):
    ``task:<name>:<options JSON>`` or ``data:<path>``. A plug-in's name holds a colon itself
    (``module:function``), so the options start at the first ``:{``, not at the second colon."""
    kind, _, rest = identity.partition(":")
    if kind == "data" and rest:
        return None, {}, rest
    if kind == "task" and ":{" in rest:
        at = rest.index(":{")
        return rest[:at], json.loads(rest[at + 1:]), None
    raise SystemExit(f"study task: expected 'task:NAME:{{options}}' or 'data:PATH', got {identity!r}")


def settings_of(name: str, attrs: dict) -> StudySettings:
    """The study's training settings from its user attributes. The trial length and learning rate are
    calibration's when it ran, else the confirmation's (what the trials ran at), else ``--max-epochs``
    and no recorded rate. Never calibration's ``max_epochs``: that is the longest length it considered."""
    from autoaug.search.record_schema import (CALIBRATION_ATTR, CONFIRMATION_ATTR, DATA_FINGERPRINT_ATTR,
                                              MAX_EPOCHS_ATTR, SEED_ATTR, TASK_ATTR)

    if TASK_ATTR not in attrs:
        raise SystemExit(f"--name {name}: the study records no task (not a study of `autoaug search`)")
    task, options, data = parse_task_identity(attrs[TASK_ATTR])
    calibration = attrs.get(CALIBRATION_ATTR) or {}
    confirmation = attrs.get(CONFIRMATION_ATTR) or {}
    if calibration.get("learning_rate"):
        rate, rate_from = float(calibration["learning_rate"]), "calibration"
    elif confirmation.get("learning_rate"):
        rate, rate_from = float(confirmation["learning_rate"]), "the confirmation's runs"
    else:
        rate, rate_from = None, "not recorded (the training default)"
    if calibration.get("trial_epochs"):
        epochs, epochs_from = int(calibration["trial_epochs"]), "calibration"
    elif confirmation.get("epochs"):
        epochs, epochs_from = int(confirmation["epochs"]), "the confirmation's runs"
    else:
        epochs, epochs_from = int(attrs[MAX_EPOCHS_ATTR]), "--max-epochs (no calibration)"
    return StudySettings(study=name, task=task, task_options=options, data=data,
                         data_seed=int(attrs.get("data_seed", 0)), search_seed=int(attrs.get(SEED_ATTR, 0)),
                         learning_rate=rate, learning_rate_from=rate_from, epochs=epochs, epochs_from=epochs_from,
                         fingerprint=attrs.get(DATA_FINGERPRINT_ATTR), model=attrs.get("model"))


def seeds_the_search_used(attrs: dict) -> set[int]:
    """Every training seed the study's records name: the search's, the race's and the confirmation's."""
    from autoaug.search.record_schema import CONFIRMATION_ATTR, RACE_ATTR, SEED_ATTR

    used = {int(attrs.get(SEED_ATTR, 0))}
    used |= set((attrs.get(CONFIRMATION_ATTR) or {}).get("seeds") or [])
    for round_ in (attrs.get(RACE_ATTR) or {}).get("rounds") or []:
        used |= set(round_.get("seeds") or [])
    return used


# ---------------------------------------------------------------------- the candidates
@dataclass
class TransferCandidate:
    """One policy to train on the large model, with why it is here and what the proxy said of it."""

    name: str                      # "trial 7", "preset moderate", "none"
    policy: dict                   # the policy as recorded, without the search's seed
    roles: list[str]               # "confirmed", "top 2", "screen op pixel_translate", "none", "preset"
    trial: Optional[int] = None
    search_value: Optional[float] = None
    proxy_score: Optional[float] = None
    proxy_source: str = ""

    @property
    def digest(self) -> str:
        """The policy's identity (name, seed and provenance aside): resumed runs must be of this policy."""
        import hashlib

        return hashlib.sha256(policy_key(self.policy).encode()).hexdigest()[:12]


def policy_key(policy: dict) -> str:
    """What makes two recorded policies the same policy (as `confirmation` dedupes its candidates)."""
    return json.dumps({key: value for key, value in policy.items()
                       if key not in ("name", "provenance", "seed", "description")}, sort_keys=True)


def unseeded(policy: dict) -> dict:
    """A recorded policy without the search's seed: each run seeds it with its own (paired) seed."""
    return {key: value for key, value in policy.items() if key != "seed"}


def race_ranked(names_by_value: list[str], race_order: Optional[list[str]]) -> list[str]:
    """The search's ranking: names in the race's order first (those the race ran), then the others in
    their search-value order (`names_by_value`, best first) — the order the confirmation tests."""
    position = {name: index for index, name in enumerate(race_order or [])}
    return sorted(names_by_value, key=lambda name: (position.get(name, len(position)), names_by_value.index(name)))


def proxy_score_of(name: str, search_value: Optional[float], none_value: Optional[float],
                   race_gains: dict[str, tuple[float, int]]) -> tuple[Optional[float], str]:
    """(score, where it comes from): the proxy's gain over ``none`` in validation accuracy. The race's
    mean paired gain when the race ran ``name``; else the search value minus ``none``'s (both trained with
    the search's seed: paired too, one seed); ``none`` is the reference, 0."""
    if name == NONE:
        return 0.0, REFERENCE
    if name in race_gains:
        gain, seeds = race_gains[name]
        return gain, f"race: mean paired gain over none, {seeds} seed{'s' if seeds != 1 else ''}"
    if search_value is not None and none_value is not None:
        return search_value - none_value, "search value - none's, 1 seed"
    return None, "none (the search has no value for it or for none)"


def top_searched(study, top: int, race: Optional[dict]) -> list:
    """The ``top`` best distinct searched trials (`confirmation.choose_candidates`: complete, full-length,
    presets aside) in the search's ranking (`race_ranked`)."""
    from autoaug.search.confirmation import PRESETS_OFF, choose_candidates

    pool = [candidate for candidate in choose_candidates(study, len(study.get_trials(deepcopy=False)) + 1, PRESETS_OFF)
            if candidate.kind == "searched"]
    by_name = {candidate.name: candidate for candidate in pool}
    order = race_ranked([candidate.name for candidate in pool], (race or {}).get("order"))
    return [by_name[name] for name in order[:top]]


def helpful_screen_ops(study) -> list[tuple[str, float, Any]]:
    """(op, difference to none, trial) of every screened op whose difference to ``none`` was positive,
    the trial at the op's better level (the one the screen judged it on). Trials stopped early or
    without a recorded policy never count."""
    from optuna.trial import TrialState

    from autoaug.search.export import stopped_early
    from autoaug.search.record_schema import POLICY_ATTR, SCREEN_ATTR, SCREEN_RECORD_ATTR
    from autoaug.search.screen import screen_key

    record = study.user_attrs.get(SCREEN_RECORD_ATTR) or {}
    trials = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE
              and not stopped_early(trial) and SCREEN_ATTR in trial.user_attrs and POLICY_ATTR in trial.user_attrs]
    helpful = []
    for row in record.get("ops") or []:
        if row.get("diff_vs_none") is None or row["diff_vs_none"] <= 0:
            continue
        levels = {level: value for level, value in (row.get("levels") or {"mid": row["val_accuracy"]}).items()
                  if value is not None}
        level = max(levels, key=lambda name: levels[name]) if levels else "mid"
        matching = [trial for trial in trials if trial.user_attrs[SCREEN_ATTR] == screen_key(row["op"], level)]
        if matching:
            helpful.append((row["op"], float(row["diff_vs_none"]), max(matching, key=lambda trial: trial.number)))
    return helpful


def candidates_of(study, top: int) -> list[TransferCandidate]:
    """The policies to train, in this order: the confirmed export (verdict ``improves`` only), the top
    searched trials, the helpful screen ops, ``none``, the presets; one candidate per distinct policy
    (its roles merged), each with its proxy score (`proxy_score_of`)."""
    from autoaug.policy import PRESETS, Policy
    from autoaug.search.record_schema import BASELINE_ATTR, CONFIRMATION_ATTR, POLICY_ATTR, RACE_ATTR
    from autoaug.search.study import baseline_outcomes
    from autoaug.search.verdict import IMPROVES

    attrs = study.user_attrs
    outcomes = baseline_outcomes(study)
    none_outcome = outcomes.get(NONE) or {}
    none_value = none_outcome.get("value") if none_outcome.get("state") == "complete" else None
    race = attrs.get(RACE_ATTR)
    race_gains = {row["name"]: (float(row["mean_gain"]), int(row["n"])) for row in (race or {}).get("candidates", [])
                  if row.get("mean_gain") is not None}
    chosen: dict[str, TransferCandidate] = {}

    def add(name: str, policy: dict, role: str, trial: Optional[int], value: Optional[float]) -> None:
        key = policy_key(policy)
        if key in chosen:
            chosen[key].roles.append(role)
        else:
            chosen[key] = TransferCandidate(name, unseeded(policy), [role], trial, value)

    confirmation = attrs.get(CONFIRMATION_ATTR)
    if confirmation and confirmation.get("verdict") == IMPROVES:
        winner = next(row for row in confirmation["candidates"] if row["name"] == confirmation["winner"])
        add(confirmation["winner"], confirmation["winner_policy"], "confirmed", confirmation.get("winner_trial"),
            winner.get("search_value"))
    for rank, candidate in enumerate(top_searched(study, top, race), 1):
        add(candidate.name, candidate.policy, f"top {rank}", candidate.trial, candidate.search_value)
    for op, difference, trial in helpful_screen_ops(study):
        add(f"trial {trial.number}", trial.user_attrs[POLICY_ATTR], f"screen op {op} ({difference:+.3f})",
            trial.number, trial.values[0])
    baselines = {trial.user_attrs[BASELINE_ATTR]: trial for trial in study.get_trials(deepcopy=False)
                 if BASELINE_ATTR in trial.user_attrs}
    for preset in PRESETS:  # none first: PRESETS starts with it
        outcome = outcomes.get(preset) or {}
        trial = baselines.get(preset)
        policy = (trial.user_attrs.get(POLICY_ATTR) if trial is not None else None) or Policy.load(preset).to_dict()
        add(NONE if preset == NONE else f"preset {preset}", policy, NONE if preset == NONE else "preset",
            trial.number if trial is not None else None,
            outcome.get("value") if outcome.get("state") == "complete" else None)
    for candidate in chosen.values():
        candidate.proxy_score, candidate.proxy_source = proxy_score_of(
            candidate.name, candidate.search_value, none_value, race_gains)
    return list(chosen.values())


def confirmation_state(attrs: dict) -> str:
    """How the search ended, for the verdict line when nothing was confirmed."""
    from autoaug.search.record_schema import CONFIRMATION_ATTR

    record = attrs.get(CONFIRMATION_ATTR)
    if not record:
        return "the search ran no confirmation"
    return f"confirmation verdict {record['verdict']}: the search exported {record['winner']}"


# ---------------------------------------------------------------------- statistics (pure)
def paired_gain(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Mean of the per-seed differences ``values[s] - reference[s]`` over the seeds both have, its SE
    (SD of the differences / sqrt(n); None below 2 seeds; 0 when the differences are equal up to float
    rounding) and mean/SE (None when the SE is None or 0)."""
    seeds = sorted(values.keys() & reference.keys())
    differences = [values[seed] - reference[seed] for seed in seeds]
    if not differences:
        return {"mean": None, "se": None, "z": None, "n": 0}
    mean = statistics.fmean(differences)
    se = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else None
    if se is not None and se < SE_ZERO:  # equal gains on every seed, up to rounding: no ratio to report
        se = 0.0
    return {"mean": mean, "se": se, "z": mean / se if se else None, "n": len(differences)}


def rank_correlation(first: list[Optional[float]], second: list[Optional[float]]) -> dict[str, Any]:
    """Spearman's rho (average ranks for ties: `scipy.stats.spearmanr`) over the pairs where both values
    are known; ``rho`` None below 3 pairs or when one side is constant (no ranking to compare)."""
    pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return {"rho": None, "p_value": None, "n": len(pairs)}
    from scipy.stats import spearmanr

    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(pairs)}


def table_rows(candidates: list[TransferCandidate], runs: list[dict]) -> list[dict]:
    """Per candidate: its proxy score and the large model's mean test accuracy, and gains over ``none``
    (clean test and robust, paired by seed)."""
    def by_seed(candidate: TransferCandidate, key: str) -> dict[int, float]:
        return {run["seed"]: run[key] for run in runs
                if run["candidate"] == candidate.name and run["policy_digest"] == candidate.digest}

    none = next(candidate for candidate in candidates if candidate.name == NONE)
    rows = []
    for candidate in candidates:
        test = by_seed(candidate, "test_accuracy")
        rows.append({
            "name": candidate.name, "roles": candidate.roles, "trial": candidate.trial,
            "proxy_score": candidate.proxy_score, "proxy_source": candidate.proxy_source,
            "test_accuracy": statistics.fmean(test.values()) if test else None, "seeds": sorted(test),
            "gain": paired_gain(test, by_seed(none, "test_accuracy")),
            "robust_gain": paired_gain(by_seed(candidate, "robust_accuracy"), by_seed(none, "robust_accuracy")),
        })
    return rows


def verdict_lines(rows: list[dict], correlation: dict, no_winner_reason: str) -> list[str]:
    """The two lines the README quotes: the confirmed winner's transfer in SE, and the rank correlation."""
    winner = next((row for row in rows if "confirmed" in row["roles"]), None)
    if winner is None:
        transfer = f"transfer: the proxy had no confirmed winner ({no_winner_reason})"
    elif winner["gain"]["z"] is None:
        transfer = (f"transfer: the proxy's confirmed winner {winner['name']} cannot be judged on the large model "
                    f"({winner['gain']['n']} paired seed(s), SE {winner['gain']['se']})")
    else:
        gain = winner["gain"]
        transfer = (f"transfer: the proxy's confirmed winner {winner['name']} improves the large model by "
                    f"{gain['z']:.1f} SE ({gain['mean']:+.4f} ± {gain['se']:.4f} test accuracy over none, "
                    f"{gain['n']} paired seeds; goal > {TRANSFER_SE_GOAL:g} SE: "
                    f"{'PASS' if gain['z'] > TRANSFER_SE_GOAL else 'MISS'})")
    if correlation["rho"] is None:
        rank = (f"rank correlation rho undefined over {correlation['n']} policies with both scores "
                f"(needs >= 3, neither side constant) (goal >= {RHO_GOAL})")
    else:
        rank = (f"rank correlation rho = {correlation['rho']:.2f} (proxy score vs large-model gain, "
                f"{correlation['n']} policies, p = {correlation['p_value']:.3f}) (goal >= {RHO_GOAL}: "
                f"{'PASS' if correlation['rho'] >= RHO_GOAL else 'MISS'})")
    return [transfer, rank]


# ---------------------------------------------------------------------- resuming from the JSON
def pending_jobs(candidates: list[TransferCandidate], seeds: list[int], finished: list[dict]) -> list[tuple]:
    """(candidate, seed) pairs still to train, seed-major (machine noise spreads over the candidates
    instead of hitting one): every pair whose run of the same policy (digest) is not in ``finished``."""
    done = {(run["candidate"], run["policy_digest"], run["seed"]) for run in finished}
    return [(candidate, seed) for seed in seeds for candidate in candidates
            if (candidate.name, candidate.digest, seed) not in done]


def previous_runs(path: Optional[Path], settings: dict) -> list[dict]:
    """The runs a previous invocation wrote to ``path`` (none when it does not exist); refused when they
    were trained with other settings (the pairing would compare different trainings)."""
    if path is None or not path.exists():
        return []
    try:
        document = json.loads(path.read_text())
    except ValueError as error:
        raise SystemExit(f"--json {path}: not a JSON file of this benchmark ({error})") from None
    recorded = document.get("settings") or {}
    differing = [key for key in sorted(settings.keys() | recorded.keys()) if recorded.get(key) != settings.get(key)]
    if differing:
        key = differing[0]
        raise SystemExit(f"--json {path}: its runs were trained with other settings ({key}: {recorded.get(key)!r} there, "
                         f"{settings.get(key)!r} now); use another --json file or remove it")
    return list(document.get("runs") or [])


def write_json(path: Path, document: dict) -> None:
    """Atomically: a kill mid-write leaves the previous file, never a truncated one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, default=str))
    os.replace(temporary, path)


# ---------------------------------------------------------------------- training
def quiet_libraries() -> None:
    """Lightning's banners and tips off stderr (the progress lines say what happens). Lightning sets its
    loggers' levels when it is imported, so it is imported first."""
    import lightning.pytorch  # noqa: F401

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def prepare(settings: StudySettings):
    """The study's task, read and tokenised once; refused when its data changed since the search."""
    from autoaug.trainers.train import prepare_task

    prepared = prepare_task(settings.task, settings.data, settings.data_seed, settings.task_options or None)
    if settings.fingerprint and prepared.fingerprint != settings.fingerprint:
        raise SystemExit(f"--name {settings.study}: the task's data changed since the search (fingerprint "
                         f"{settings.fingerprint[:12]} recorded, {prepared.fingerprint[:12]} now); the proxy's scores "
                         "are about other data")
    if prepared.build_model is not None:
        raise SystemExit(f"--name {settings.study}: the task plug-in brings its own model; this benchmark widens "
                         "the built-in TinyVLM")
    return prepared


def parameter_count(prepared, model_options: dict) -> int:
    """Parameters of the built-in `TinyVLM` with ``model_options`` on ``prepared``'s vocabulary and classes."""
    from autoaug.trainers.model import build_model

    model = build_model(prepared.tokenizer, prepared.data.num_classes, image_size=prepared.data.image_size,
                        **model_options)
    return sum(parameter.numel() for parameter in model.parameters())


def train_one(prepared, job: dict) -> dict:
    """One (policy, seed) on the large model; the result dict's clean test and robust accuracy."""
    from autoaug.policy import Policy
    from autoaug.trainers.train import run_training

    started = time.perf_counter()
    policy = Policy.from_dict(job["policy"], source=f"candidate {job['candidate']}")
    result = run_training(prepared=prepared, policy=policy, seed=job["seed"], max_epochs=job["epochs"],
                          learning_rate=job["learning_rate"], batch_size=BATCH_SIZE, accelerator=job["accelerator"],
                          data_seed=job["data_seed"], model_options=job["model_options"])
    return {"candidate": job["candidate"], "policy_digest": job["policy_digest"], "seed": job["seed"],
            **{key: result[key] for key in ("test_accuracy", "robust_accuracy", "val_accuracy", "train_accuracy",
                                            "epochs")},
            "seconds": time.perf_counter() - started}


_WORKER: dict[str, Any] = {}


def _worker_start(settings: StudySettings, threads: int) -> None:
    """A ``--jobs`` worker process: its torch threads, the task prepared once."""
    import torch

    quiet_libraries()
    torch.set_num_threads(threads)
    _WORKER["prepared"] = prepare(settings)


def _worker_run(job: dict) -> dict:
    return train_one(_WORKER["prepared"], job)


def run_jobs(prepared, settings: StudySettings, jobs: list[dict], workers: int, threads: int) -> Iterable[dict]:
    """Each job's result as it finishes: in this process with ``workers`` 1, else in worker processes."""
    if workers == 1:
        import torch

        torch.set_num_threads(threads)
        for job in jobs:
            yield train_one(prepared, job)
        return
    with ProcessPoolExecutor(workers, initializer=_worker_start, initargs=(settings, threads)) as pool:
        yield from pool.map(_worker_run, jobs)


# ---------------------------------------------------------------------- report
def _number(value: Optional[float], digits: int = 4, signed: bool = False) -> str:
    return "—" if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


def _ranks(values: list[Optional[float]]) -> list[Optional[int]]:
    """Rank of each known value, 1 = highest (for the table's eye; rho uses average ranks)."""
    known = sorted((value for value in values if value is not None), reverse=True)
    return [None if value is None else known.index(value) + 1 for value in values]


def render(rows: list[dict], header: dict, lines: list[str]) -> str:
    rows = sorted(rows, key=lambda row: (row["proxy_score"] is None, -(row["proxy_score"] or 0.0)))
    proxy_ranks = _ranks([row["proxy_score"] for row in rows])
    large_ranks = _ranks([row["gain"]["mean"] for row in rows])
    out = [
        "## Transfer: policies ranked on the proxy, trained on a 10x larger model",
        "",
        f"{header['date']}; study `{header['study']}`, task {header['task']}; proxy {header['proxy_parameters']:,} "
        f"parameters (TinyVLM defaults), large {header['large_parameters']:,} ({header['parameter_ratio']:.1f}x; "
        f"options {json.dumps(header['model_options'])}); {header['epochs']} epoch(s) ({header['epochs_from']}), learning "
        f"rate {header['learning_rate']:g} ({header['learning_rate_from']}); seeds {header['seeds']} (paired); "
        f"{header['jobs']} job(s) x {header['threads']} torch thread(s) on {header['cpu_count']} CPUs; load average "
        f"before {header['load_before']}, after {header['load_after']}; {header['runs_trained']} runs trained now, "
        f"{header['runs_resumed']} read from --json.",
        "",
        f"`{header['command']}`",
        "",
        "| policy | roles | proxy score (rank) | proxy score from | large test acc | large gain ± paired SE (rank) "
        "| gain/SE | robust gain ± SE | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, proxy_rank, large_rank in zip(rows, proxy_ranks, large_ranks):
        gain, robust = row["gain"], row["robust_gain"]
        out.append(
            f"| {row['name']} | {', '.join(row['roles'])} | {_number(row['proxy_score'], signed=True)}"
            f"{'' if proxy_rank is None else f' ({proxy_rank})'} | {row['proxy_source']} | "
            f"{_number(row['test_accuracy'])} | {_number(gain['mean'], signed=True)} ± {_number(gain['se'])}"
            f"{'' if large_rank is None else f' ({large_rank})'} | {_number(gain['z'], 1, signed=True)} | "
            f"{_number(robust['mean'], signed=True)} ± {_number(robust['se'])} | {len(row['seeds'])} |")
    out += ["", *[f"- {line}" for line in lines], "",
            f"Training wall time: {header['wall_seconds']:.0f} s ({header['wall_seconds'] / 60:.1f} min)."]
    return "\n".join(out)


# ---------------------------------------------------------------------- command line
def parse_model_options(pairs: list[str]) -> dict:
    """``--model-option KEY=VALUE`` over `LARGE_MODEL_OPTIONS` (values parsed as `autoaug` parses them)."""
    from autoaug.cli import parse_options
    from autoaug.errors import AutoaugInputError

    try:
        return {**LARGE_MODEL_OPTIONS, **parse_options(pairs, "--model-option")}
    except AutoaugInputError as error:
        raise SystemExit(str(error)) from None


def arguments(argv: Optional[list[str]]) -> argparse.Namespace:
    from autoaug.storage import DEFAULT_WORKDIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the finished search's study")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="the search's --workdir")
    parser.add_argument("--storage", default=None, help="the search's --storage URL, if it used one")
    parser.add_argument("--top", type=int, default=4,
                        help="searched trials to take, in the search's ranking (default 4)")
    parser.add_argument("--seeds", type=int, default=4, help="paired seeds per policy, >= 2 (default 4)")
    parser.add_argument("--first-seed", type=int, default=TRANSFER_SEED_BASE)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the study's calibrated rate")
    parser.add_argument("--epochs", type=int, default=None, help="default: the study's trial length")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a TinyVLMConfig field of the large model over {LARGE_MODEL_OPTIONS} (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (default 1: timings stay meaningful)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per training (default: CPUs / jobs)")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (default cpu)")
    parser.add_argument("--json", dest="json_path", type=Path, default=None,
                        help="write everything here after each run; a rerun resumes from it")
    args = parser.parse_args(argv)
    for name in ("top", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected >= 1, got {getattr(args, name)}")
    if args.seeds < 2:
        parser.error(f"--seeds: expected >= 2 (a paired SE needs two), got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected >= 1, got {args.epochs}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        parser.error(f"--learning-rate: expected a positive number, got {args.learning_rate}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = arguments(argv)
    quiet_libraries()
    from autoaug.errors import AutoaugInputError
    from autoaug.search.export import open_study
    from autoaug.trainers.train import DEFAULT_LEARNING_RATE

    try:
        study = open_study(args.name, args.workdir, args.storage)
    except AutoaugInputError as error:  # a missing store or an unknown study: its one line, no traceback
        raise SystemExit(str(error)) from None
    settings = settings_of(args.name, study.user_attrs)
    if settings.model:
        raise SystemExit(f"--name {args.name}: the search trained --model {settings.model}; this benchmark scales "
                         "the built-in TinyVLM (the proxy's default model)")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    reused = sorted(set(seeds) & seeds_the_search_used(study.user_attrs))
    if reused:
        raise SystemExit(f"--first-seed {args.first_seed}: seeds {reused} were used by the search; pick seeds it "
                         "never trained with")
    candidates = candidates_of(study, args.top)
    model_options = parse_model_options(args.model_option)
    learning_rate = args.learning_rate or settings.learning_rate or DEFAULT_LEARNING_RATE
    epochs = args.epochs or settings.epochs

    prepared = prepare(settings)
    proxy_parameters, large_parameters = parameter_count(prepared, {}), parameter_count(prepared, model_options)
    print(f"parameters: proxy {proxy_parameters:,} (TinyVLM defaults), large {large_parameters:,} "
          f"({large_parameters / proxy_parameters:.1f}x, {json.dumps(model_options)})", file=sys.stderr)
    assert large_parameters >= MIN_PARAMETER_RATIO * proxy_parameters, (
        f"the large model has {large_parameters / proxy_parameters:.1f}x the proxy's parameters, below "
        f"{MIN_PARAMETER_RATIO:g}x: raise width or depth with --model-option")

    run_settings = {"study": args.name, "task": study.user_attrs.get("task"), "data_seed": settings.data_seed,
                    "learning_rate": learning_rate, "epochs": epochs, "model_options": model_options,
                    "batch_size": BATCH_SIZE, "accelerator": args.accelerator}
    runs = previous_runs(args.json_path, run_settings)
    resumed = len(runs)
    todo = pending_jobs(candidates, seeds, runs)
    jobs = [{"candidate": candidate.name, "policy": candidate.policy, "policy_digest": candidate.digest, "seed": seed,
             "epochs": epochs, "learning_rate": learning_rate, "accelerator": args.accelerator,
             "data_seed": settings.data_seed, "model_options": model_options} for candidate, seed in todo]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    print(f"{len(candidates)} policies x {len(seeds)} seeds: {len(jobs)} runs to train, {resumed} read from "
          f"--json", file=sys.stderr, flush=True)

    def document(header: Optional[dict] = None, rows: Optional[list] = None, extra: Optional[dict] = None) -> dict:
        return {"settings": run_settings, "header": header, "study_settings": asdict(settings),
                "candidates": [{**asdict(candidate), "digest": candidate.digest} for candidate in candidates],
                "runs": runs, "rows": rows, **(extra or {})}

    for done, run in enumerate(run_jobs(prepared, settings, jobs, args.jobs, threads), 1):
        runs.append(run)
        print(f"[{done}/{len(jobs)}] {run['candidate']:>18} seed {run['seed']}: test {run['test_accuracy']:.3f} "
              f"robust {run['robust_accuracy']:.3f} | {run['seconds']:.1f} s, load {os.getloadavg()[0]:.2f}",
              file=sys.stderr, flush=True)
        if args.json_path:
            write_json(args.json_path, document())

    rows = table_rows(candidates, runs)
    correlation = rank_correlation([row["proxy_score"] for row in rows], [row["gain"]["mean"] for row in rows])
    lines = verdict_lines(rows, correlation, confirmation_state(study.user_attrs))
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "study": args.name,
        "task": study.user_attrs.get("task"), "proxy_parameters": proxy_parameters,
        "large_parameters": large_parameters, "parameter_ratio": large_parameters / proxy_parameters,
        "model_options": model_options, "epochs": epochs,
        "epochs_from": "--epochs" if args.epochs else settings.epochs_from, "learning_rate": learning_rate,
        "learning_rate_from": "--learning-rate" if args.learning_rate else settings.learning_rate_from,
        "seeds": seeds, "jobs": args.jobs, "threads": threads, "cpu_count": os.cpu_count(),
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": time.perf_counter() - started, "runs_trained": len(jobs), "runs_resumed": resumed,
        "command": " ".join([".venv/bin/python", *sys.argv]),
    }
    print(render(rows, header, lines))
    if args.json_path:
        write_json(args.json_path, document(header, rows, {"spearman": correlation, "verdict": lines}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
