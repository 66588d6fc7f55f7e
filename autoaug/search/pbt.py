"""``--scheduler pbt``: Population Based Augmentation on token sequences (Ho et al. 2019).

A population of ``--trials`` trials trains at once; every ``perturbation_interval`` epochs Ray Tune's Population
Based Training replaces the worst quantile by copies of the best (weights from their checkpoint and
hyper-parameters), then explores once: each magnitude or probability moves by ±0.1 (clipped to its
range) or, with probability 0.2, is redrawn from its range — PBA's explore step, and the only one:
Ray's own perturbation is not configured (no ``hyperparam_mutations``), so it does not run first.
Ray refuses a search algorithm next to PBT, so no Optuna sampler runs here; the finished population
is added to the study afterwards, so export, resume and the JSON result read the same place as for
the other schedulers. Config keys are the search space's names (``op.<name>.p``, ``op.<name>.magnitude``).

Reproducible from ``--seed``: the initial draws come from Ray's variant generator with that seed,
explore from its own seeded generator, and PBT's exploit choices from Python's ``random``, which
Ray's scheduler uses and which is seeded before the population starts.

What is exported is what trained: the best member's history of hyper-parameters (Ray's
``pbt_policy_<trial>.txt`` log: [target, clone, target_iter, clone_iter, old_config, new_config] per
exploit) as schedules over training progress. An op whose p never changed gets one entry: magnitude
1 and a ``piecewise`` (step) schedule whose value *is* the magnitude. An op whose p changed gets one
entry per stretch of constant (p, magnitude): that p and magnitude, with a step schedule that is 1
inside the stretch and 0 outside, applied to p as well (``schedule_p``) — so at every point of
training the exported policy applies exactly the p and magnitude that trained (schema version 1).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ray.tune import Callback

from autoaug.search.record_schema import ERROR_ATTR, METRIC, PBT_TRIAL_ATTR, POLICY_ATTR, STATE_ATTR
from autoaug.search.records import MlflowRecorder, SearchProgress, error_reason
from autoaug.search.space import PbaScheduleSpace, SearchSpace, op_param, stage_sorted
from autoaug.search.study import finished_count

EXPLORE_STEP = 0.1
RESAMPLE_PROBABILITY = 0.2


class PbaExplore:
    """PBA's explore: ±``EXPLORE_STEP`` per hyper-parameter, or a fresh draw from its range."""

    def __init__(self, ranges: dict[str, tuple[float, float]], seed: int) -> None:
        self.ranges = ranges
        self.rng = random.Random(seed)

    def __call__(self, config: dict) -> dict:
        for key, (low, high) in self.ranges.items():
            if self.rng.random() < RESAMPLE_PROBABILITY:
                config[key] = self.rng.uniform(low, high)
            else:
                step = EXPLORE_STEP if self.rng.random() < 0.5 else -EXPLORE_STEP
                config[key] = min(max(config[key] + step, low), high)
        return config


class FinishedTrials(Callback):
    """Each finished member's own config and last result, as the Tune controller saw them."""

    def __init__(self) -> None:
        self.trials: dict[str, tuple[dict, dict, str]] = {}
        self.errors: dict[str, str] = {}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.trials[trial.trial_id] = (dict(trial.config), dict(trial.last_result or {}), "complete")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.trials[trial.trial_id] = (dict(trial.config), dict(trial.last_result or {}), "failed")
        self.errors[trial.trial_id] = error_reason(trial)


def hyperparameter_ranges(space: PbaScheduleSpace) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for op, op_ranges in space.ops.items():
        ranges[op_param(op, "magnitude")] = tuple(op_ranges.magnitude)
        ranges[op_param(op, "p")] = tuple(op_ranges.p)
    return ranges


def schedule_history(log_file: Path, final_config: dict) -> list[tuple[int, dict]]:
    """[(epoch, config)] from a trial's PBT policy log: the config in force from each epoch on."""
    if not log_file.is_file():
        return [(0, final_config)]
    steps = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    history = [(0, steps[0][4])] if steps else []
    for _target, _clone, _target_iter, clone_iter, _old, new_config in steps:
        history.append((int(clone_iter), new_config))
    return history or [(0, final_config)]


def piecewise_policy(space: SearchSpace, history: list[tuple[int, dict]], max_epochs: int, name: str) -> dict:
    """The exported policy: each op's magnitude and p over training, as they trained (module docstring)."""
    model = space.model
    entries = []
    for op in model.ops:
        stretches: list[list] = []  # [start progress, p, magnitude]
        for epoch, config in history:
            progress = min(epoch / max_epochs, 1.0)  # exact: a rounded-up point would start a stretch late
            p, magnitude = (round(value, 6) for value in model.op_settings(config, op))
            if stretches and stretches[-1][0] == progress:
                stretches[-1][1:] = [p, magnitude]  # a later exploit at the same epoch wins
            elif not stretches or stretches[-1][1:] != [p, magnitude]:
                stretches.append([progress, p, magnitude])
        if len({p for _, p, _ in stretches}) == 1:
            points, last = [], None
            for start, _, magnitude in stretches:
                if magnitude != last:
                    points.append([start, magnitude])
                    last = magnitude
            entries.append({"op": op, "p": stretches[0][1], "magnitude": 1.0,
                            "schedule": {"kind": "piecewise", "points": points, "interpolation": "step"}})
            continue
        for index, (start, p, magnitude) in enumerate(stretches):
            points = [[0.0, 0.0]] if start > 0 else []
            points.append([start, 1.0])
            if index + 1 < len(stretches):
                points.append([stretches[index + 1][0], 0.0])
            entries.append({"op": op, "p": p, "magnitude": magnitude, "schedule_p": True,
                            "schedule": {"kind": "piecewise", "points": points, "interpolation": "step"}})
    policy = space.policy_data({}, name=name)
    policy["entries"] = stage_sorted(entries)
    return policy


def pbt_setup(model: PbaScheduleSpace, seed: int):
    """(param_space, scheduler, search_alg) of a PBT run: seeded initial draws, one explore step."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    ranges = hyperparameter_ranges(model)
    param_space: dict[str, Any] = {}
    for op, op_ranges in model.ops.items():
        param_space[op_param(op, "magnitude")] = model.initial_magnitude
        param_space[op_param(op, "p")] = tune.uniform(*op_ranges.p)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric=METRIC, mode="max",
        perturbation_interval=model.perturbation_interval,
        quantile_fraction=model.quantile_fraction, custom_explore_fn=PbaExplore(ranges, seed),
        log_config=True,
    )
    return param_space, scheduler, BasicVariantGenerator(random_state=seed)


def run_pbt(context) -> None:
    """Run the population (unless the study already holds a finished one) and add it to the study."""
    import optuna
    from optuna.trial import TrialState
    from ray import tune

    request, study, space, settings, console = context.request, context.study, context.space, context.settings, context.console

    model: PbaScheduleSpace = space.model
    population = request.trials  # --trials is the population size under PBT
    if finished_count(study) >= population:
        return
    param_space, scheduler, variants = pbt_setup(model, request.seed)
    random.seed(request.seed)  # Ray's PBT draws its exploit choices from Python's global generator
    finished = FinishedTrials()
    progress = SearchProgress(console, population, METRIC, f"pbt {request.name}") if console else None
    recorder = MlflowRecorder(context.client, context.experiment_id, context.parent, request.name,
                              label_of=lambda trial: f"pbt {trial.trial_id}", policy_of=settings.policy_for,
                              max_epochs=settings.max_epochs, on_finished=progress.record if progress else None,
                              track_config=True)
    # under "search", the stage whose seconds PBT's wall time always counted in, so its cost counts its trials
    results = context.fit(
        "search", param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=variants, num_samples=population),
        callbacks=[recorder, finished] + ([progress] if progress else []),
        # PBT clones from other trials' checkpoints: deleting old ones races with that (Ray warns),
        # and the tiny proxy model's checkpoints cost little, so all are kept.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None))
    experiment = Path(results.experiment_path)
    # Each member's own record: a result's reported trial_id can name the member it was cloned from.
    for trial_id, (config, last, state) in sorted(finished.trials.items()):
        value = last.get(METRIC)
        if state == "failed" or value is None:
            reason = finished.errors.get(trial_id) or f"reported no {METRIC}"
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL,
                                                      user_attrs={STATE_ATTR: "failed", ERROR_ATTR: reason}))
            continue
        history = schedule_history(experiment / f"pbt_policy_{trial_id}.txt", config)
        policy = piecewise_policy(space, history, settings.max_epochs, name=f"{request.name}-pbt")
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[float(value)],
            user_attrs={STATE_ATTR: "complete", POLICY_ATTR: policy, PBT_TRIAL_ATTR: trial_id,
                        "pbt_exploits": len(history) - 1},
        ))
