"""The searched-trials stage (issue 21 item 2): where ASHA's rung is, what Optuna is told about a trial
ASHA stopped, how many trials run at once, and what orders a trial's ops. No training and no Ray
cluster: Ray's searcher and scheduler objects are built and driven by hand on in-memory studies.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter

from autoaug.errors import AutoaugInputError
from autoaug.search.record_schema import STOPPED_EPOCH_ATTR, METRIC, SEED_ATTR, STATE_ATTR
from autoaug.search.records import RecordingOptunaSearch
from autoaug.search.samplers import SearchedOnly, nsga2_population
from autoaug.search.searched import LATE_RUNG_FRACTION, max_concurrent, rungs, scheduler, searcher_for
from autoaug.search.space import consideration_order, load_space
from autoaug.search.study import best_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------- the rung
@pytest.mark.parametrize("epochs, plateau, rung", [
    (26, 17, 23),  # the README main command: calibrated plateau 17, trials of 26 (the old rung was 17)
    (24, 16, 21),  # the --data run of issue 21
    (26, 25, 25),  # a plateau later than 85 %: never before the plateau
    (40, None, 34),  # no calibration: the same fraction (the old rule put it at 20)
    (7, None, 6),  # the shortest trial with a rung
])
def test_the_single_rung_is_at_85_percent_of_the_trial_and_never_before_the_plateau(epochs, plateau, rung):
    """Catches the old rule (rung at the plateau, 2/3 of a ceil(1.5 x plateau) trial) and a rule that
    forgets the plateau."""
    calibration = {"plateau_epoch": plateau} if plateau else None
    assert rungs(epochs, calibration) == (rung,)


@pytest.mark.parametrize("epochs", range(1, 7))
def test_trials_too_short_for_a_late_rung_run_to_the_end(epochs):
    """85 % of a trial under 7 epochs is its last epoch: no rung (FIFO), rather than one at 50 %."""
    request = SimpleNamespace(scheduler="asha")
    assert rungs(epochs, None) == ()
    assert type(scheduler(request, epochs, None, 1)).__name__ == "FIFOScheduler"


@pytest.mark.parametrize("epochs", range(7, 61))
def test_the_rung_is_where_the_cosine_learning_rate_has_decayed(epochs):
    """For every trial length: exactly one rung, at or past 85 % of the trial, where the cosine
    learning rate is at most 5.5 % of its peak (what is left of the trial reorders little)."""
    (rung,) = rungs(epochs, {"plateau_epoch": 1})
    assert LATE_RUNG_FRACTION * epochs <= rung < epochs
    assert 0.5 * (1 + math.cos(math.pi * rung / epochs)) <= 0.055


def test_ray_asha_compares_trials_at_that_rung_only():
    """The scheduler Tune gets has the rung `rungs` names (Ray derives its rungs from the grace
    period, the reduction factor and max_t: a grace period that left a second rung would show here)."""
    request = SimpleNamespace(scheduler="asha")
    asha = scheduler(request, 26, {"plateau_epoch": 17}, 1)
    (bracket,) = asha._brackets
    assert [milestone for milestone, _ in bracket._rungs] == [23]
    assert type(scheduler(request, 26, None, 2)).__name__ == "FIFOScheduler"  # two objectives: never cut


# ---------------------------------------------------------------------- a stopped trial reaches Optuna as PRUNED
class _Policy:
    def to_dict(self) -> dict:
        return {"entries": []}


def _searcher(max_epochs: int) -> RecordingOptunaSearch:
    def space(trial) -> None:
        trial.suggest_float("x", 0.0, 1.0)

    return RecordingOptunaSearch(space=space, metric=METRIC, mode="max", policy_of=lambda config: _Policy(),
                                 max_epochs=max_epochs, sampler=optuna.samplers.RandomSampler(seed=0))


def test_a_trial_asha_stopped_is_pruned_in_optuna_with_its_rung_value_and_never_best():
    """Trial "cut" is stopped at the epoch-23 rung with 0.70, higher than the 0.60 the complete trial
    ends with. Ray's own searcher tells Optuna COMPLETE with 0.70: TPE would learn the cut policy is
    the best one, and the export would pick it. It must be PRUNED, with 0.70 as an intermediate value
    at epoch 23 (TPE ranks pruned trials below complete ones, by that value), and never best."""
    searcher = _searcher(max_epochs=26)
    for trial_id in ("cut", "full"):
        searcher.suggest(trial_id)
    # Tune reports at the rung (its 1st report: training_iteration 1), then stops the trial there
    rung = {METRIC: 0.70, "epoch": 23, "training_iteration": 1}
    searcher.on_trial_result("cut", rung)
    searcher.on_trial_complete("cut", result=rung)
    searcher.on_trial_result("full", {METRIC: 0.55, "epoch": 23, "training_iteration": 1})
    searcher.on_trial_complete("full", result={METRIC: 0.60, "epoch": 26, "training_iteration": 2})

    study = searcher._ot_study
    cut, full = study.trials
    # (Optuna files a pruned trial's last intermediate value as its value, too)
    assert (cut.state, cut.values, cut.intermediate_values) == (TrialState.PRUNED, [0.70], {23: 0.70})
    assert cut.user_attrs[STATE_ATTR] == "pruned"
    # intermediate values are filed by epoch, not by Tune's report count (Ray's own would say {1: ...})
    assert (full.state, full.values, full.intermediate_values) == (TrialState.COMPLETE, [0.60], {23: 0.55})
    assert full.user_attrs[STATE_ATTR] == "complete"
    # the epochs each ran, for the export's refusal ("stopped at epoch 23 of 26")
    assert (cut.user_attrs[STOPPED_EPOCH_ATTR], full.user_attrs[STOPPED_EPOCH_ATTR]) == (23, 26)
    assert best_trial(study).number == full.number and study.best_trial.number == full.number
    # `autoaug export --trial N` refuses it (it exported the rung value as if complete, issue 21 point 6)
    with pytest.raises(AutoaugInputError, match="trial is pruned"):
        best_trial(study, cut.number)


def test_a_trial_stopped_without_a_rung_report_still_keeps_its_value():
    """Tune can stop a trial on a result the searcher never saw as intermediate (its last): the value is
    reported at that epoch on the way to PRUNED, once."""
    searcher = _searcher(max_epochs=10)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result={METRIC: 0.4, "epoch": 9, "training_iteration": 1})
    (trial,) = searcher._ot_study.trials
    assert (trial.state, trial.intermediate_values) == (TrialState.PRUNED, {9: 0.4})


def test_failed_and_resultless_trials_end_as_ray_tells_them():
    searcher = _searcher(max_epochs=10)
    searcher.suggest("failed")
    searcher.suggest("silent")
    searcher.on_trial_complete("failed", error=True)
    searcher.on_trial_complete("silent", result=None)
    failed, silent = searcher._ot_study.trials
    assert (failed.state, failed.user_attrs[STATE_ATTR]) == (TrialState.FAIL, "failed")
    assert (silent.state, silent.user_attrs[STATE_ATTR]) == (TrialState.PRUNED, "pruned")


# ---------------------------------------------------------------------- parallel proposals
def _context(sampler: str, trials: int):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    settings = SimpleNamespace(policy_for=lambda config: _Policy(), max_epochs=10)
    request = SimpleNamespace(sampler=sampler, seed=0, trials=trials, name="s")
    return SimpleNamespace(request=request, study=study, space=load_space("vlm_default"), storage=storage,
                           settings=settings)


@pytest.mark.parametrize("slots, expected", [(2, 2), (4, 4), (16, 4), (64, 4)])
def test_tpe_runs_at_most_its_startup_trials_at_once(slots, expected):
    """12 TPE trials on 16 slots would all be proposed before any result (random search); Tune gets our
    searcher behind a ConcurrencyLimiter of min(slots, TPE's 4 startup trials), and TPE's constant
    liar spreads the ones running together. Catches: no limiter, or the limit left at the slots."""
    limited, searcher = searcher_for(_context("tpe", 12), slots)
    assert isinstance(limited, ConcurrencyLimiter) and limited.searcher is searcher
    assert limited.max_concurrent == expected
    sampler = searcher._ot_study.sampler
    assert isinstance(sampler, SearchedOnly) and sampler.inner._constant_liar


def test_concurrency_follows_what_each_sampler_can_propose_blind():
    assert max_concurrent("tpe", 40, 64) == 10  # TPE's startup is at most 10
    assert max_concurrent("cmaes", 12, 64) == 4  # its op choices are TPE's
    assert max_concurrent("nsga2", 24, 64) == nsga2_population(24)  # one generation at a time
    assert max_concurrent("random", 12, 64) == 64  # learns nothing: every slot
    assert max_concurrent("tpe", 12, 1) == 1


# ---------------------------------------------------------------------- op order follows --seed
OPS = list(load_space("vlm_default").model.ops)


def test_op_order_depends_on_the_seed_and_the_trial_number():
    """Catches the old order, a permutation of the trial number alone (the same for every --seed)."""
    assert consideration_order(OPS, 3, 5) == consideration_order(OPS, 3, 5)
    differ = sum(consideration_order(OPS, 0, n) != consideration_order(OPS, 1, n) for n in range(20))
    assert differ == 20  # two permutations of 19 ops agree by chance with probability 1/19!
    assert consideration_order(OPS, 0, 0) != consideration_order(OPS, 0, 1)
    assert sorted(consideration_order(OPS, 7, 2)) == sorted(OPS)


def _use_questions(seed):
    """The ``use`` questions the first trial of a search with ``seed`` asks, in order (same sampler)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    if seed is not None:
        study.set_user_attr(SEED_ATTR, seed)
    trial = study.ask()
    load_space("vlm_default").suggest(trial)
    return [name for name in trial.params if name.endswith(".use")]


def test_a_trial_reads_the_search_seed_from_its_study():
    assert _use_questions(1) == _use_questions(1)
    assert _use_questions(1) != _use_questions(2)
    assert _use_questions(None) == _use_questions(0)  # a study made outside `autoaug search`: seed 0
