"""The Optuna samplers of `autoaug search`, built for a conditional policy space (`space.py`).

What each models (the README's "What each sampler models" is this list):

- ``tpe``: multivariate TPE with ``group=True``: parameters that occur together (one op's ``p``,
  ``magnitude`` and ``schedule``; the ``use`` questions; ``max_ops`` and the scalars) are modelled
  jointly, each group from every trial that has it — so what is learnt about an op's magnitude comes
  from every trial that used the op, wherever it ran in the policy.
- ``random``: independent uniform draws (the reference the others must beat).
- ``cmaes``: CMA-ES on the numeric parameters every trial has (in ``vlm_default``: ``max_ops``,
  ``clean_fraction``, ``augmented_loss_weight``); CMA-ES cannot model categorical or conditional
  parameters, so op choice, p, magnitude and schedule go to TPE (its ``independent_sampler``). The
  search says so when it starts; a space with no numeric parameter in every trial is refused.
- ``nsga2``: NSGA-II over (clean, robust) validation accuracy; Optuna's own elite selection
  (non-dominated sorting, crowding distance), with offspring made per *gene* (`GeneCrossover`): an
  op's ``use``, ``p``, ``magnitude`` and ``schedule`` travel together from one parent, so children
  inherit p and magnitude even though those exist only in trials that used the op.
- ``grid``: Optuna's grid sampler over a randaugment space's N × M grid; grid points whose trial
  failed are queued again, and the search stops when every point has a finished trial.

Baseline trials (presets added to the study without parameters) are never parents and never shrink
the space a sampler models: the spaces below are computed over searched trials only.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import optuna

from autoaug.search.record_schema import BASELINE_ATTR


def gene_of(name: str) -> str:
    """The unit a parameter is inherited with: ``op.<name>.*`` is one gene per op; others are their own."""
    if name.startswith("op."):
        return name.rsplit(".", 1)[0]
    return name


def searched_complete(study) -> list:
    from optuna.trial import TrialState

    return [trial for trial in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            if BASELINE_ATTR not in trial.user_attrs]


class SearchedIntersection:
    """Optuna's intersection search space, over searched trials only: a baseline (a trial without
    parameters) would otherwise empty the intersection and turn CMA-ES into random search."""

    def calculate(self, study, use_cache: bool = False) -> dict:
        space: Optional[dict] = None
        for trial in searched_complete(study):
            if space is None:
                space = dict(trial.distributions)
            else:
                space = {name: dist for name, dist in space.items() if trial.distributions.get(name) == dist}
        return dict(sorted((space or {}).items()))


def searched_union(study) -> dict:
    """Every parameter any complete searched trial has, with its distribution."""
    space: dict = {}
    for trial in searched_complete(study):
        space.update(trial.distributions)
    return dict(sorted(space.items()))


class GeneCrossover:
    """NSGA-II offspring for a conditional space (Optuna's ``child_generation_strategy`` hook).

    Two parents by binary tournament on Pareto dominance from the elite population Optuna selected;
    with probability ``crossover_prob`` each gene comes from either parent (``swapping_prob``), else
    the child copies one parent. A gene the chosen parent lacks (it never considered the op) comes
    from the other parent. Each gene is then dropped with probability 1 / genes (mutation): the
    trial draws it afresh. The child's params are offered to the trial; ones it does not ask (an op
    after its cap) are never recorded."""

    def __init__(self, rng, crossover_prob: float = 0.9, swapping_prob: float = 0.5) -> None:
        self._rng = rng
        self.crossover_prob = crossover_prob
        self.swapping_prob = swapping_prob

    def __call__(self, study, search_space: dict, parent_population: list) -> dict[str, Any]:
        from optuna.study._multi_objective import _dominates

        rng = self._rng.rng
        population = [trial for trial in parent_population if BASELINE_ATTR not in trial.user_attrs]
        if not population:
            return {}
        first = self._tournament(study, population, rng, _dominates)
        second = self._tournament(study, [t for t in population if t is not first] or population, rng, _dominates)
        genes_first, genes_second = _genes(first, search_space), _genes(second, search_space)
        child: dict[str, Any] = {}
        crossing = rng.rand() < self.crossover_prob
        names = sorted(set(genes_first) | set(genes_second))
        for gene in names:
            take_first = rng.rand() >= self.swapping_prob if crossing else True
            source, other = (genes_first, genes_second) if take_first else (genes_second, genes_first)
            chosen = source.get(gene, other.get(gene))
            child.update(chosen or {})
        mutation = 1.0 / max(1, len(names))
        kept = {gene for gene in names if rng.rand() >= mutation}
        return {name: value for name, value in child.items() if gene_of(name) in kept}

    @staticmethod
    def _tournament(study, population: Sequence, rng, dominates: Callable):
        a, b = (population[int(i)] for i in rng.choice(len(population), size=2, replace=len(population) < 2))
        if dominates(a, b, study.directions):
            return a
        if dominates(b, a, study.directions):
            return b
        return a if rng.rand() < 0.5 else b


def _genes(trial, search_space: dict) -> dict[str, dict[str, Any]]:
    genes: dict[str, dict[str, Any]] = {}
    for name, value in trial.params.items():
        if name in search_space:
            genes.setdefault(gene_of(name), {})[name] = value
    return genes


def nsga2_population(trials: int) -> int:
    """NSGA-II's generation size for a budget of ``trials``: about three generations (Optuna's
    default of 50 would keep a 24-trial search in generation 0 — random search throughout)."""
    return max(4, trials // 3)


def make_sampler(name: str, space, seed: int, trials: int):
    """The Optuna sampler ``--sampler name`` uses for ``space`` (see the module docstring)."""
    import warnings

    def tpe():
        with warnings.catch_warnings():  # ``group`` is marked experimental; it is what a conditional space needs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)

    def cmaes():
        sampler = optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=tpe(), warn_independent_sampling=False)
        sampler._search_space = SearchedIntersection()
        return sampler

    def nsga2():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ConditionalNSGAII(seed=seed, population_size=nsga2_population(trials))

    factories = {
        "tpe": tpe,
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": cmaes,
        "nsga2": nsga2,
        "grid": lambda: CoverageGridSampler(space.grid(), seed=seed),
    }
    return factories[name]()


class ConditionalNSGAII(optuna.samplers.NSGAIISampler):
    """NSGA-II whose offspring inherit conditional parameters (see `GeneCrossover`): the relative
    space is every parameter of the searched trials, not only those all of them share."""

    def __init__(self, *, seed: Optional[int], population_size: int) -> None:
        super().__init__(seed=seed, population_size=population_size)
        self._child_generation_strategy = GeneCrossover(self._rng)

    def infer_relative_search_space(self, study, trial) -> dict:
        return {name: dist for name, dist in searched_union(study).items() if not dist.single()}


class CoverageGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its own stop: it calls ``study.stop()`` when it believes the grid
    is exhausted — counting failed points as visited, and raising outside ``optimize`` (ask/tell, as
    Ray drives it). The search stops on distinct grid points finished instead, and queues failed
    points again (`controller.grid_coverage`)."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def cmaes_coverage(space) -> tuple[list[str], list[str]]:
    """(parameters CMA-ES models, parameters it leaves to TPE) for ``space``: numeric parameters
    that every trial has are modelled; categorical and conditional ones are not."""
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: list[dict] = []
    for _ in range(64):
        trial = study.ask()
        space.suggest(trial)
        seen.append(dict(trial.distributions))
        study.tell(trial, 0.0)
    always = set.intersection(*(set(d) for d in seen)) if seen else set()
    every = sorted(set().union(*(set(d) for d in seen)))
    modelled = sorted(name for name in always
                      if not isinstance(seen[0][name], CategoricalDistribution) and not seen[0][name].single())
    return modelled, [name for name in every if name not in modelled]


