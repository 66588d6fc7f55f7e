"""What a two-objective (``--sampler nsga2``) search exports, on studies built by hand whose Pareto
front and export choice are known (issue 24 item 2): the front holds searched, full-length trials
only, the choice is the best clean accuracy within 0.02 robust accuracy of the front's best, and a
generation is a third of ``--trials`` (at least 4).

Values are (clean, robust) validation accuracy; every case says which wrong implementation it catches.
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.trial import TrialState

from autoaug.search.record_schema import BASELINE_ATTR, STATE_ATTR
from autoaug.search.samplers import make_sampler, nsga2_population
from autoaug.search.space import load_space
from autoaug.search.study import ROBUST_TOLERANCE, best_trial, pareto_choice, pareto_front

optuna.logging.set_verbosity(optuna.logging.WARNING)

# number: (clean, robust, how it was recorded); the front and the choice follow from the values by hand
COMPLETE, BASELINE, PRUNED, OLD_PRUNED = "complete", "baseline", "pruned", "complete but stopped early"
TRIALS = {
    0: (0.80, 0.600, COMPLETE),    # front: the best clean accuracy, but robust 0.10 below the best
    1: (0.70, 0.700, COMPLETE),    # front: the best robust accuracy
    2: (0.75, 0.685, COMPLETE),    # front, within 0.02 of 0.70 (not within 0.01): THE CHOICE
    3: (0.78, 0.670, COMPLETE),    # front, 0.03 below the best robust: out of the tolerance
    4: (0.70, 0.600, COMPLETE),    # dominated by 0 and 1
    5: (0.75, 0.685, COMPLETE),    # the same values as 2: on the front, loses the tie to the lower number
    6: (0.90, 0.900, BASELINE),    # a preset: dominates every searched trial, yet never on the front
    7: (0.95, 0.950, PRUNED),      # stopped early (Optuna PRUNED): its values are an early epoch's
    8: (0.95, 0.950, OLD_PRUNED),  # stopped early as older studies record it: COMPLETE, state "pruned"
}
FRONT = [0, 3, 2, 5, 1]  # by clean accuracy, best first (ties: robust, then number)
CHOICE = 2


def _add(study, clean: float, robust: float, recorded: str) -> None:
    attrs = {STATE_ATTR: "pruned" if recorded in (PRUNED, OLD_PRUNED) else "complete"}
    if recorded == BASELINE:
        attrs[BASELINE_ATTR] = "aggressive"
    state = TrialState.PRUNED if recorded == PRUNED else TrialState.COMPLETE
    if state == TrialState.PRUNED:  # Optuna keeps no values on a pruned trial; its last report is the value
        trial = optuna.trial.create_trial(state=state, user_attrs=attrs, intermediate_values={1: clean})
    else:
        trial = optuna.trial.create_trial(state=state, values=[clean, robust], user_attrs=attrs)
    study.add_trial(trial)


def _study(trials: dict = TRIALS):
    study = optuna.create_study(directions=["maximize", "maximize"])
    for number in sorted(trials):
        _add(study, *trials[number])
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={STATE_ATTR: "failed"}))
    return study


def test_the_front_is_the_searched_full_length_non_dominated_trials_by_clean_accuracy():
    """Catches: a baseline on the front (6 dominates everything: the front would be [6]), a trial stopped
    early on it (7 or 8), a dominated trial kept (4), equal trials dropped (5), another order."""
    assert [trial.number for trial in pareto_front(_study())] == FRONT


def test_the_export_is_the_best_clean_accuracy_within_0_02_of_the_front_s_best_robust_accuracy():
    """Catches: the best clean accuracy on the front (0), the best robust accuracy (1), a tolerance of
    0.03 or more (3) or 0.01 or less (1), the later of two equal trials (5), a baseline or a trial
    stopped early exported (6, 7, 8)."""
    study = _study()
    assert ROBUST_TOLERANCE == 0.02
    assert pareto_choice(pareto_front(study)).number == CHOICE
    assert best_trial(study).number == CHOICE


@pytest.mark.parametrize("robust_of_2, choice", [(0.681, 2), (0.679, 1)])
def test_the_tolerance_is_0_02_on_either_side(robust_of_2, choice):
    """Trial 2 just inside (0.70 - 0.019) and just outside (0.70 - 0.021) the tolerance; 3 and 5 removed
    so that 2 is the only candidate between 0 and 1. Catches a tolerance of 0.015 or 0.025."""
    trials = {number: value for number, value in TRIALS.items() if number not in (3, 5)}
    trials[2] = (0.75, robust_of_2, COMPLETE)
    assert pareto_choice(pareto_front(_study(trials))).number == choice


def test_a_study_of_baselines_and_early_stopped_trials_only_has_no_front_and_no_export():
    """No searched full-length trial: the front is empty (nothing to export as a set), and the single
    export is none of them (a two-objective export comes from the front). Catches a front that takes baselines in
    when no searched trial is there."""
    study = _study({6: TRIALS[6], 7: TRIALS[7], 8: TRIALS[8]})
    assert pareto_front(study) == []
    assert pareto_choice([]) is None
    assert best_trial(study) is None


@pytest.mark.parametrize("trials, generation", [(1, 4), (12, 4), (14, 4), (15, 5), (24, 8), (90, 30)])
def test_a_generation_is_a_third_of_the_trials_and_at_least_4(trials, generation):
    """Catches Optuna's default of 50 left in place, a floor other than 4, or half instead of a third."""
    assert nsga2_population(trials) == generation
    assert make_sampler("nsga2", load_space("vlm_default"), 0, trials).inner.population_size == generation


def test_the_sampler_proposes_generations_of_that_size():
    """15 trials one after the other: three generations of 5, as the sampler itself records them.
    Catches a population size set on the object but not the one the sampler reads."""
    space = load_space("vlm_default")
    sampler = make_sampler("nsga2", space, 0, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
        for index in range(15):
            trial = study.ask()
            space.suggest(trial)
            study.tell(trial, [0.5 + 0.01 * index, 0.6 - 0.01 * index])
    key = type(sampler.inner)._get_generation_key()
    generations = [trial.system_attrs[key] for trial in study.trials]
    assert generations == [0] * 5 + [1] * 5 + [2] * 5, generations
