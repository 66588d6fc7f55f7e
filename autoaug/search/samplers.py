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

Every sampler sees searched trials only (`SearchedOnly`): baseline trials (presets added to the
study without parameters) count toward no sampler's startup phase, never fill TPE's "good" set,
never shrink the space a sampler models and are never parents. Each sampler is handed a view of the
study (`SearchedStudyView`) in whose trial lists a baseline is a failed trial, which every Optuna
sampler ignores, so this holds for any sampler registered here, whatever it reads.

TPE starts modelling after `tpe_startup_trials` random trials (a quarter of the budget, 4 to 10),
and proposes with a constant liar (running trials count as bad, so parallel proposals spread out).

Adding a sampler: write its Optuna sampler (here or in a new module) and register a `SamplerKind`
with `register_sampler` at the end of this file; nothing else names samplers (`SAMPLERS` feeds the
request's validation and the CLI's help). docs/ARCHITECTURE.md walks through it.
"""

from __future__ import annotations

import copy
import itertools
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import optuna
from optuna.trial import TrialState

from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.search.record_schema import BASELINE_ATTR
from autoaug.search.study import finished_count, searched_trials


def gene_of(name: str) -> str:
    """The unit a parameter is inherited with: ``op.<name>.*`` is one gene per op; others are their own."""
    if name.startswith("op."):
        return name.rsplit(".", 1)[0]
    return name


def _as_failed(trial):
    """A baseline as a sampler sees it: the same trial (number, attributes) in state FAIL, without values."""
    stand_in = copy.copy(trial)
    stand_in.state = TrialState.FAIL
    stand_in.values = None
    return stand_in


class SearchedStudyView:
    """The study as a sampler sees it: the real study in every respect (storage, directions, system
    attributes, ``stop``) except that each baseline trial appears as a *failed* trial.

    Failed, not left out: Optuna indexes the unfiltered trial list by trial number (the genetic
    samplers' generation cache), so every number keeps its place; and every Optuna sampler and search
    space ignores failed trials — no startup count, no "good" or "bad" set, no parent, no shrinking
    of the intersection space. Optuna's samplers read trials through ``Study._get_trials`` (TPE,
    CMA-ES, NSGA-II, the intersection and group search spaces), ``get_trials`` and ``trials``: all
    three go through the stand-in here. tests/test_samplers.py::test_baselines_change_no_proposal_of_the_sampler
    fails if a sampler reads trials by another route."""

    def __init__(self, study) -> None:
        self._study = study

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        # read unfiltered, then filter: a baseline is COMPLETE in the storage and FAIL here
        trials = [_as_failed(trial) if BASELINE_ATTR in trial.user_attrs else trial
                  for trial in self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)]
        return trials if states is None else [trial for trial in trials if trial.state in states]

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list:
        return self.get_trials()


class SearchedOnly(optuna.samplers.BaseSampler):
    """Wraps the Optuna sampler ``inner`` so that it sees the study through `SearchedStudyView`:
    whatever ``inner`` reads, baselines count as failed trials. ``make_sampler`` wraps every sampler."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def __str__(self) -> str:
        return f"SearchedOnly({self.inner})"

    def infer_relative_search_space(self, study, trial) -> dict:
        return self.inner.infer_relative_search_space(SearchedStudyView(study), trial)

    def sample_relative(self, study, trial, search_space: dict) -> dict[str, Any]:
        return self.inner.sample_relative(SearchedStudyView(study), trial, search_space)

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        return self.inner.sample_independent(SearchedStudyView(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(SearchedStudyView(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(SearchedStudyView(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def searched_union(study) -> dict:
    """Every parameter any complete trial of ``study`` has (a sampler's view: searched trials only),
    with its distribution."""
    space: dict = {}
    # `Study._get_trials(use_cache=True)`: samplers call this on every suggestion, and the public
    # `get_trials` re-reads the storage each time (the cached read is what Optuna's own samplers use).
    for trial in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True):
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
        # Optuna's own dominance test (private module): the tournament must rank parents exactly as
        # Optuna's elite selection does; tests/test_samplers.py::test_private_optuna_routes_still_exist
        from optuna.study._multi_objective import _dominates

        rng = self._rng.rng
        population = list(parent_population)  # searched trials only: the sampler sees `SearchedStudyView`
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


class ConditionalNSGAII(optuna.samplers.NSGAIISampler):
    """NSGA-II whose offspring inherit conditional parameters (see `GeneCrossover`): the relative
    space is every parameter of the searched trials, not only those all of them share."""

    def __init__(self, *, seed: Optional[int], population_size: int) -> None:
        super().__init__(seed=seed, population_size=population_size)
        # The public ``child_generation_strategy`` argument needs the sampler's own RNG (``_rng``, so a
        # seeded sampler stays reproducible), which exists only once the sampler is built: set it after.
        self._child_generation_strategy = GeneCrossover(self._rng)

    def infer_relative_search_space(self, study, trial) -> dict:
        return {name: dist for name, dist in searched_union(study).items() if not dist.single()}

    # Ray Tune pickles the searcher, sampler included, to checkpoint the search. Optuna 5.1 gave its
    # genetic samplers a ``threading.Lock`` (``_ga/_base.py``), which does not pickle: the lock is
    # left out of the pickled state and a fresh one made on load (a lock guards this process's
    # threads only, so nothing is lost).
    def __getstate__(self) -> dict:
        return {name: (_LockLeftOut() if isinstance(value, _LOCK_TYPES) else value)
                for name, value in self.__dict__.items()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({name: (threading.Lock() if isinstance(value, _LockLeftOut) else value)
                              for name, value in state.items()})


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _LockLeftOut:
    """Stands in the pickled state of a sampler for a lock, which is made afresh on unpickling."""


class CoverageGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its own stop: it calls ``study.stop()`` when it believes the grid
    is exhausted — counting failed points as visited, and raising outside ``optimize`` (ask/tell, as
    Ray drives it). The search stops on distinct grid points finished instead, and queues failed
    points again (`grid_coverage`)."""

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




def grid_coverage(study, space) -> int:
    """How many grid points have a finished searched trial; queues again (once) each point whose
    trials all failed, e.g. those a stopped driver left behind."""
    grid = space.grid()
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]

    def key(params: dict) -> tuple:
        return tuple(params.get(name) for name in names)

    trials = searched_trials(study)
    covered = {key(trial.params) for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    waiting = {key(trial.system_attrs.get("fixed_params", {})) for trial in trials if trial.state == TrialState.WAITING}
    failed = {key(trial.params) for trial in trials if trial.state == TrialState.FAIL}
    for point in points:
        if key(point) in failed and key(point) not in covered | waiting:
            study.enqueue_trial(point)
    return len(covered & {key(point) for point in points})


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class SamplerKind:
    """One ``--sampler`` choice: how to build its Optuna sampler, and what the search must do for it.

    ``objectives`` is 1 (clean validation accuracy) or 2 (clean and robust: the study gets two
    directions, trials report both, no scheduler cuts them, and the search exports a Pareto front).
    The methods' defaults fit a sampler that proposes points until the trial budget is spent."""

    name: str
    build: Callable[[Any, int, int], optuna.samplers.BaseSampler]  # (space, seed, trials) -> sampler
    objectives: int = 1
    summary: str = ""  # one line for ``autoaug search --help``
    # (trials) -> how many trials the sampler can have running and still propose from results: the
    # search runs no more at once (`searched.max_concurrent`); None: any number (it learns nothing)
    concurrency: Optional[Callable[[int], int]] = None

    def check(self, space, console=None) -> None:
        """Refuse a space this sampler cannot search (before anything is written), or say what it models."""

    def budget(self, space, trials: int) -> int:
        """How many searched trials the search runs for ``--trials trials``."""
        return trials

    def finished(self, study, space) -> int:
        """How much of the budget is done (a resumed search runs only the rest)."""
        return finished_count(study)


SAMPLERS: dict[str, SamplerKind] = {}


def register_sampler(kind: SamplerKind) -> SamplerKind:
    if kind.name in SAMPLERS:
        raise ValueError(f"sampler {kind.name!r} is registered twice")
    SAMPLERS[kind.name] = kind
    return kind


def sampler_kind(name: str) -> SamplerKind:
    """The registered sampler ``name``; a one-line error naming the choices otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ParameterError("sampler", f"{name!r} is not one of {', '.join(SAMPLERS)}") from None


def make_sampler(name: str, space, seed: int, trials: int) -> "SearchedOnly":
    """The Optuna sampler ``--sampler name`` uses for ``space`` (see the module docstring), wrapped
    so that it sees searched trials only (`SearchedOnly`); the registered sampler is its ``inner``."""
    return SearchedOnly(sampler_kind(name).build(space, seed, trials))


def tpe_startup_trials(trials: int) -> int:
    """Random trials before TPE models, for a budget of ``trials`` searched trials: a quarter of the
    budget, at least 4 and at most Optuna's default of 10.

    Why: Optuna's 10 would leave a 12-trial search (the README's main command) two modelled trials;
    at least 4 so that TPE's first split (``ceil(0.1 n)`` good trials) sets one good trial against
    three or more others; beyond 10, random trials buy no more than Optuna's own default spends."""
    return min(10, max(4, trials // 4))


def _tpe(space, seed: int, trials: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():  # ``group`` is marked experimental; it is what a conditional space needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar (Optuna 5.1's default, named here because parallel trials depend on it): a
        # proposal treats running trials as bad ones, so trials proposed before any result differ
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=tpe_startup_trials(trials))


def _cmaes(space, seed: int, trials: int) -> optuna.samplers.CmaEsSampler:
    # its intersection search space is computed over searched trials (`SearchedStudyView`): a
    # baseline, which has no parameters, would otherwise empty it and turn CMA-ES into random search
    return optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=_tpe(space, seed, trials),
                                        warn_independent_sampling=False)


def _nsga2(space, seed: int, trials: int) -> "ConditionalNSGAII":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ConditionalNSGAII(seed=seed, population_size=nsga2_population(trials))


class CmaEsKind(SamplerKind):
    def check(self, space, console=None) -> None:
        """CMA-ES models only numeric parameters every trial has: refuse a space with none, say which
        parameters it models (and that TPE draws the rest) otherwise."""
        modelled, others = cmaes_coverage(space)
        if not modelled:
            raise AutoaugInputError(
                f"--sampler cmaes: {space.name} has no numeric parameter in every trial, so CMA-ES would model "
                "nothing; use --sampler tpe (or grid for a randaugment space)")
        if console is not None:
            console.print(f"cmaes: CMA-ES models {', '.join(modelled)}; the {len(others)} categorical or conditional "
                          "parameters (op choice, p, magnitude, schedule) are drawn by TPE", highlight=False)


class GridKind(SamplerKind):
    """A grid search counts distinct grid points finished (Optuna's grid sampler counts a failed point
    as visited and would fill the budget with repeats): failed points are queued again each round."""

    def check(self, space, console=None) -> None:
        space.grid()  # fails clearly unless it is a randaugment space

    def budget(self, space, trials: int) -> int:
        size = 1
        for values in space.grid().values():
            size *= len(values)
        return min(trials, size)

    def finished(self, study, space) -> int:
        return grid_coverage(study, space)


# TPE and CMA-ES (whose op choices are TPE's): as many at once as TPE's random startup trials — those
# are proposed without results anyway; afterwards a proposal sees all but the few still running
# (constant liar keeps it away from them). NSGA-II: one generation, whose members are all proposed
# from the previous generation.
register_sampler(SamplerKind("tpe", _tpe, concurrency=tpe_startup_trials,
                             summary="multivariate TPE, an op's p, magnitude and schedule modelled together"))
register_sampler(SamplerKind("random", lambda space, seed, trials: optuna.samplers.RandomSampler(seed=seed),
                             summary="independent uniform draws"))
register_sampler(CmaEsKind("cmaes", _cmaes, concurrency=tpe_startup_trials, summary=(
    "CMA-ES on the numeric parameters every trial has (max_ops, clean_fraction, augmented_loss_weight), with op "
    "choice, p, magnitude and schedule drawn by TPE, and refused for spaces without such parameters")))
register_sampler(SamplerKind("nsga2", _nsga2, objectives=2, concurrency=nsga2_population,
                             summary="clean vs robust val, exports its Pareto front"))
register_sampler(GridKind("grid", lambda space, seed, trials: CoverageGridSampler(space.grid(), seed=seed),
                          summary="a randaugment space's N x M grid"))


def sampler_help() -> str:
    """The ``--sampler`` help: every registered sampler with its summary."""
    return "; ".join(f"{name} ({kind.summary})" if kind.summary else name for name, kind in SAMPLERS.items()) + "."
