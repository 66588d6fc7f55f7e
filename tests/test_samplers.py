"""The samplers learn from their trials (issue 16): a synthetic objective, no training.

The objective is a known function of the sampled policy: two ops help when their p and magnitude are
near a target, every other op costs a little. TPE must beat random search on it within 30 trials, and
NSGA-II's offspring must inherit p and magnitude from their parents.
"""

from __future__ import annotations

import statistics
import warnings

import optuna
import pytest

from autoaug.search.samplers import (SAMPLERS, ConditionalNSGAII, SamplerKind, SearchedOnly, SearchedStudyView,
                                     cmaes_coverage, gene_of, make_sampler, register_sampler, sampler_kind,
                                     tpe_startup_trials)
from autoaug.search.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = {"text_mask": (0.8, 0.7), "vision_random_mask": (0.6, 0.3)}  # op -> the (p, magnitude) that scores best
SEEDS = range(8)


def score(policy: dict) -> float:
    total = 0.0
    for entry in policy["entries"]:
        if entry["op"] in GOOD:
            p, magnitude = GOOD[entry["op"]]
            total += 1.0 - abs(entry["p"] - p) - 3 * abs(entry["magnitude"] - magnitude)
        else:
            total -= 0.3
    return total


def magnitude_error(policy: dict) -> list[float]:
    return [abs(entry["magnitude"] - GOOD[entry["op"]][1]) for entry in policy["entries"] if entry["op"] in GOOD]


def run(sampler_name: str, seed: int, trials: int = 30):
    space = load_space("vlm_default")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler_name, space, seed, trials))
    policies = []
    for _ in range(trials):
        trial = study.ask()
        space.suggest(trial)
        policy = space.policy_data(trial.params)
        study.tell(trial, score(policy))
        policies.append(policy)
    return study, policies


def test_tpe_beats_random_within_30_trials():
    """Mean score of the last 10 of 30 trials, TPE against random, seed by seed. If TPE learnt
    nothing, each comparison would be a coin flip: 7 or more wins of 8 has probability 9/256."""
    wins, tpe_errors, random_errors = 0, [], []
    for seed in SEEDS:
        tpe_study, tpe_policies = run("tpe", seed)
        random_study, random_policies = run("random", seed)
        tpe_last = statistics.mean(trial.value for trial in tpe_study.trials[-10:])
        random_last = statistics.mean(trial.value for trial in random_study.trials[-10:])
        wins += tpe_last > random_last
        tpe_errors += [e for policy in tpe_policies[-10:] for e in magnitude_error(policy)]
        random_errors += [e for policy in random_policies[-10:] for e in magnitude_error(policy)]
    assert wins >= 7, f"TPE beat random in only {wins} of {len(SEEDS)} seeds"
    # p and magnitude are learnt, not only which ops: TPE's good ops sit nearer their target magnitude
    # and TPE uses the good ops more often than random search does.
    assert statistics.mean(tpe_errors) < statistics.mean(random_errors)
    assert len(tpe_errors) > len(random_errors)


def test_one_name_per_op_parameter_whatever_its_position():
    """200 random draws: each op has at most use / p / magnitude / schedule, plus max_ops and the two
    scalars — 19 × 4 + 3 names (the position-indexed design produced 163)."""
    space = load_space("vlm_default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names: set[str] = set()
    for _ in range(200):
        trial = study.ask()
        space.suggest(trial)
        names |= set(trial.params)
        study.tell(trial, 0.0)
    assert len(names) <= 4 * len(space.model.ops) + 3
    per_op = {name.rsplit(".", 1)[1] for name in names if name.startswith("op.")}
    assert per_op == {"use", "p", "magnitude", "schedule"}


def two_objectives(policy: dict) -> tuple[float, float]:
    return score(policy), -float(len(policy["entries"]))


def inherited_share(sampler, generations: int = 4, population: int = 6, seed: int = 0) -> float:
    """Share of the p / magnitude values of generation >= 1 children that equal a value their op had
    in some earlier trial (a float drawn afresh never does)."""
    space = load_space("vlm_default")
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    # a baseline without parameters must not stop inheritance (it empties the intersection space)
    study.add_trial(optuna.trial.create_trial(values=[0.0, 0.0], user_attrs={"autoaug_baseline": "none"}))
    seen: dict[str, set] = {}
    inherited = total = 0
    for number in range(generations * population):
        trial = study.ask()
        space.suggest(trial)
        for name, value in trial.params.items():
            if name.endswith((".p", ".magnitude")):
                if number >= population:
                    total += 1
                    inherited += value in seen.get(name, set())
        for name, value in trial.params.items():
            seen.setdefault(name, set()).add(value)
        study.tell(trial, two_objectives(space.policy_data(trial.params)))
    return inherited / max(total, 1)


def test_nsga2_offspring_inherit_p_and_magnitude():
    """With Optuna's stock NSGA-II, p and magnitude (present only in trials that used the op) are
    outside the intersection space and drawn at random every time: share 0. Ours inherits them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        share = inherited_share(ConditionalNSGAII(seed=0, population_size=6))
        stock = inherited_share(optuna.samplers.NSGAIISampler(seed=0, population_size=6))
    assert stock == 0.0
    assert share >= 0.3  # measured 0.4: the rest are ops neither parent considered, and mutations


def test_gene_keeps_an_ops_parameters_together():
    assert gene_of("op.text_mask.p") == gene_of("op.text_mask.magnitude") == gene_of("op.text_mask.use") == "op.text_mask"
    assert gene_of("clean_fraction") == "clean_fraction"


def test_cmaes_models_the_numeric_parameters_every_trial_has_even_with_baselines():
    space = load_space("vlm_default")
    modelled, others = cmaes_coverage(space)
    assert modelled == ["augmented_loss_weight", "clean_fraction", "max_ops"]
    assert "op.text_mask.magnitude" in others and "op.text_mask.use" in others
    study = optuna.create_study(direction="maximize", sampler=make_sampler("cmaes", space, 0, 12))
    study.add_trial(optuna.trial.create_trial(value=0.0, user_attrs={"autoaug_baseline": "none"}))
    for _ in range(4):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, score(space.policy_data(trial.params)))
    relative = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert sorted(relative) == modelled
    # on the study itself Optuna's intersection counts the baseline and models nothing: what
    # `SearchedStudyView` spares CMA-ES (an unwrapped CMA-ES would be random search here)
    assert optuna.search_space.IntersectionSearchSpace().calculate(study) == {}
    assert set(modelled) <= set(optuna.search_space.IntersectionSearchSpace().calculate(SearchedStudyView(study)))


def test_cmaes_refuses_a_space_it_cannot_model():
    modelled, _ = cmaes_coverage(load_space("randaugment"))
    assert modelled == []


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"grid"}))  # grid: randaugment spaces only (below)
def test_every_sampler_builds_policies_within_the_cap(sampler):
    space = load_space("vlm_default")
    directions = ["maximize"] * sampler_kind(sampler).objectives
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=directions, sampler=make_sampler(sampler, space, 1, 12))
        for _ in range(14):
            trial = study.ask()
            space.suggest(trial)
            policy = space.policy_data(trial.params)
            ops = [entry["op"] for entry in policy["entries"]]
            assert 1 <= len(ops) <= trial.params.get("max_ops", 4) and len(set(ops)) == len(ops)
            values = two_objectives(policy) if sampler == "nsga2" else score(policy)
            study.tell(trial, values)


def test_grid_requeues_a_failed_point_and_counts_distinct_points(tmp_path):
    """Issue 16 item 12: Optuna's grid sampler counts a failed point as visited; the search queues it
    again and counts coverage in distinct grid points, so it stops exactly when the grid is covered."""
    from optuna.trial import TrialState

    from autoaug.search.samplers import grid_coverage

    path = tmp_path / "grid.yaml"
    path.write_text("kind: randaugment\nname: g\nops: [vision_token_dropout, text_mask]\nn: [1, 2]\nm: [0.2, 0.6]\n")
    space = load_space(path)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("grid", space, 0, 4))
    trial = study.ask()
    space.suggest(trial)
    failed = (trial.params["n"], trial.params["m"])
    study.tell(trial, state=TrialState.FAIL)  # e.g. running when the driver was killed
    for _ in range(3):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.0)
    assert grid_coverage(study, space) == 3  # 4 trials, 3 distinct points done; the failed one queued
    assert grid_coverage(study, space) == 3  # and queued once, not once per call
    assert sum(t.state == TrialState.WAITING for t in study.trials) == 1
    trial = study.ask()
    space.suggest(trial)
    assert (trial.params["n"], trial.params["m"]) == failed
    study.tell(trial, 0.0)
    assert grid_coverage(study, space) == 4


def test_the_registry_names_every_choice_and_refuses_unknown_and_repeated_names():
    from autoaug.errors import ParameterError

    assert list(SAMPLERS) == ["tpe", "random", "cmaes", "nsga2", "grid"]
    assert [name for name, kind in SAMPLERS.items() if kind.objectives == 2] == ["nsga2"]
    with pytest.raises(ParameterError, match=r"^sampler: 'annealing' is not one of tpe, random, cmaes, nsga2, grid$"):
        sampler_kind("annealing")
    with pytest.raises(ValueError, match="registered twice"):
        register_sampler(SamplerKind("tpe", lambda space, seed, trials: None))
    assert SAMPLERS["tpe"].build is not None and len(SAMPLERS) == 5  # the refused one changed nothing
    from autoaug.search.samplers import sampler_help

    assert [part.split(" (")[0] for part in sampler_help().rstrip(".").split("; ")] == list(SAMPLERS)


def test_grid_budget_is_the_grid_size_and_other_budgets_are_the_trials():
    space = load_space("randaugment")
    size = 1
    for values in space.grid().values():
        size *= len(values)
    assert sampler_kind("grid").budget(space, 10_000) == size and sampler_kind("grid").budget(space, 2) == 2
    assert sampler_kind("tpe").budget(space, 10_000) == 10_000


def test_private_optuna_routes_still_exist():
    """The samplers reach into Optuna where it has no public route (each use says why): a release that
    renames one of these must fail here, not silently turn CMA-ES or NSGA-II into random search."""
    from optuna.study._multi_objective import _dominates

    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, [1.0, 1.0])
    (cached,) = study._get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,), use_cache=True)
    assert cached.values == [1.0, 1.0]
    better, worse = [optuna.trial.create_trial(values=v) for v in ([2.0, 2.0], [1.0, 1.0])]
    assert _dominates(better, worse, study.directions) and not _dominates(worse, better, study.directions)

    space = load_space("vlm_default")
    nsga2 = make_sampler("nsga2", space, 0, 8).inner
    assert isinstance(nsga2, ConditionalNSGAII) and nsga2._child_generation_strategy._rng is nsga2._rng
    assert hasattr(nsga2._rng, "rng")  # GeneCrossover draws from the sampler's seeded RandomState


# ---------------------------------------------------------------------- baselines never reach a sampler
def toy_suggest(trial) -> None:
    """A conditional space whose proposals depend on nothing but the sampler (the policy spaces order
    their ops by trial number, which baselines shift)."""
    trial.suggest_float("x", 0.0, 1.0)
    if trial.suggest_categorical("k", ["a", "b"]) == "a":
        trial.suggest_float("a.p", 0.0, 1.0)


def toy_value(params: dict) -> float:
    return -(params["x"] - 0.3) ** 2 + (0.2 if params["k"] == "a" else 0.0) - abs(params.get("a.p", 0.5) - 0.7)


def toy_proposals(sampler, baselines: int, objectives: int, count: int = 14) -> list[dict]:
    """What ``sampler`` proposes over ``count`` trials of the toy space, after ``baselines`` baseline
    trials that score higher than any searched trial can (so they would win every "good" set)."""
    study = optuna.create_study(directions=["maximize"] * objectives, sampler=sampler)
    for index in range(baselines):
        study.add_trial(optuna.trial.create_trial(values=[10.0] * objectives,
                                                  user_attrs={"autoaug_baseline": f"preset{index}"}))
    proposed = []
    for _ in range(count):
        trial = study.ask()
        toy_suggest(trial)
        proposed.append(dict(trial.params))
        study.tell(trial, [toy_value(trial.params)] * objectives)
    return proposed


# cmaes and grid are left out: Optuna seeds CMA-ES per trial by the trial's number and numbers a grid
# point by it, and six baselines shift every number (their own checks: the CMA-ES intersection test
# above, and the grid coverage test).
@pytest.mark.parametrize("name", ["tpe", "random", "nsga2"])
def test_baselines_change_no_proposal_of_the_sampler(name):
    """Six baselines (the default presets) in the study, scoring above every searched trial, change
    nothing a sampler proposes for the same seed.

    Catches: TPE counting baselines toward ``n_startup_trials`` and putting them in its "good" set
    (Optuna's TPE on the raw study, the old wiring: the proposals differ from the 5th trial on); and
    a view that *drops* baselines from the trial list (NSGA-II indexes that list by trial number:
    IndexError)."""
    kind = sampler_kind(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = toy_proposals(make_sampler(name, None, 0, 16), 0, kind.objectives)
        with_baselines = toy_proposals(make_sampler(name, None, 0, 16), 6, kind.objectives)
    assert with_baselines == without


def test_unwrapped_tpe_is_moved_by_baselines():
    """The check above can fail: Optuna's TPE given the raw study proposes otherwise with baselines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = sampler_kind("tpe").build(None, 0, 16)
        assert toy_proposals(raw, 6, 1) != toy_proposals(sampler_kind("tpe").build(None, 0, 16), 0, 1)


def test_every_sampler_is_wrapped_and_sees_baselines_as_failed_trials():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=10.0, user_attrs={"autoaug_baseline": "none"}))
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"x": 0.2},
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    view = SearchedStudyView(study)
    complete = optuna.trial.TrialState.COMPLETE
    # every route a sampler reads trials by; numbers keep their places (Optuna indexes by them)
    for trials in (view._get_trials(deepcopy=False, use_cache=True), view.get_trials(), view.trials):
        assert [(t.number, t.state) for t in trials] == [(0, optuna.trial.TrialState.FAIL), (1, complete)]
    assert [t.number for t in view._get_trials(states=(complete,))] == [1]
    assert study.trials[0].state == complete and study.trials[0].value == 10.0  # the study itself is untouched
    assert view.directions == study.directions and view._study_id == study._study_id
    for name in SAMPLERS:
        space = load_space("randaugment" if name == "grid" else "vlm_default")
        assert isinstance(make_sampler(name, space, 0, 12), SearchedOnly)


# ---------------------------------------------------------------------- TPE's budget-sized startup
def test_tpe_startup_is_a_quarter_of_the_budget_between_4_and_10():
    assert [tpe_startup_trials(n) for n in (1, 12, 16, 24, 40, 200)] == [4, 4, 4, 6, 10, 10]
    tpe = make_sampler("tpe", None, 0, 24).inner
    assert tpe._n_startup_trials == 6 and tpe._constant_liar  # constant liar: parallel proposals spread out


def test_tpe_models_after_its_startup_trials():
    """With a budget of 12, TPE's first 4 proposals are its random sampler's draws and the 5th is
    modelled. Catches Optuna's default of 10 startup trials (the 5th would still be random)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tpe = toy_proposals(make_sampler("tpe", None, 7, 12), 0, 1, count=5)
        random_draws = toy_proposals(optuna.samplers.RandomSampler(seed=7), 0, 1, count=5)
    assert tpe[:4] == random_draws[:4]
    assert tpe[4] != random_draws[4]
