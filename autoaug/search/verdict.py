"""The confirmation's decision rule: does any candidate policy beat no augmentation? (pure arithmetic)

Every candidate and the reference (``none``) are trained with the same fresh seeds; a seed pairs a
candidate's run with ``none``'s (same initialisation, same data order), and the evidence is the
per-seed difference ``d_s = candidate_s − none_s`` of validation accuracy on ``n_eval`` examples.

The rule (`Rule.text` says it in one line, recorded with every verdict):

1. **One-sided paired t-test per candidate**, H0: mean difference ≤ 0, on the seeds where both the
   candidate and ``none`` finished: ``t = mean(d) / (sd / √k)`` with ``k − 1`` degrees of freedom.
   Fewer than two pairs: no test (p = 1).
2. **SD floor**: ``sd = max(sample SD of d, √2 / n_eval)``. Accuracy on ``n_eval`` examples moves in
   steps of ``1/n_eval``: no run's accuracy is known to better than one example, so the difference of
   two runs is known to no better than ``√2/n_eval``. An observed SD below that is the grid showing, not
   precision; without the floor, identical differences (+0.001 on every seed) give SD 0 and an infinite
   t. The floor is a lower bound only: at the built-in task's noise (paired SD 0.015–0.02, n 500–1000,
   floor 0.0014–0.0028) it never binds on real differences.
2b. **Example-level evidence** (when every paired run of the candidate and of ``none`` reported which of
   the n examples it got right, `ExampleSpread`): seeds cannot average away how a policy happens to do
   on these particular n examples (its *fit* to the example set, the same on every seed), so the SE
   also counts the examples as a sample. With ``D[s, i] = correct_candidate[s, i] − correct_none[s, i]``
   read as a two-way layout (seed effect + example effect + seed×example residual), the variance of
   the mean difference is ``σ²_seed/S + σ²_example/n + σ²_residual/(S·n)``, estimated without bias by

       SE² = sd_used² / S  +  max(MS_example − MS_residual, 0) / (S · n)

   — the seed-only SE² (which already holds the residual once: ``var_s(d) = σ²_seed + σ²_residual/n``)
   plus the example part: ``MS_example = S · var_i(mean_s D[:, i])`` and ``MS_residual`` the two-way
   residual mean square. Not ``var_i(mean_s D[:, i]) / n`` alone: that counts the residual twice, and
   the residual (which examples two runs happen to disagree on) is most of a paired difference's
   per-seed variance here, so counting it twice would inflate SE² by up to half again. The example
   part is never negative, so this test is never less strict than the seed-only one. Degrees of
   freedom: Welch–Satterthwaite over the three mean squares (S − 1 for the seed part; n − 1 and
   (S − 1)(n − 1) for the example part), about S − 1 when seed noise dominates, up to ~n when the example fit
   dominates); S − 1 when the example part is 0. Without such evidence (old records, a run that did
   not report it) the test is the seed-only one.
3. **Holm step-down over every candidate compared** (family-wise α, default 0.05): sort the m p-values,
   the i-th smallest is compared with ``α / (m − i + 1)`` and the procedure stops at the first that
   fails. Candidates dropped by a race stay in the family (m never shrinks with the data).
   ``Rule(procedure="fixed-sequence")`` instead tests the candidates in their listing order (the
   search's ranking), each at the full α, stopping at the first failure: valid when that order was
   fixed on other examples (a held-out confirm part), and more powerful for the top-ranked candidate.
4. **Minimum effect**: a significant candidate (after the correction) is a *gain* only when its mean difference is also
   ≥ ``min_effect`` (default 0.005, half a point of accuracy): a tiny but consistent difference is real
   but not worth shipping a policy for.
5. **Winner**: the gain with the highest mean paired difference — with every run finished that is the
   highest mean accuracy, since all candidates share ``none``'s seeds. Not the smallest p-value: a
   consistent small gain is more significant than a larger noisier one but is not the better policy.
   Ties: the earlier candidate in the listing.
6. **Verdict**: ``"improves"`` with a winner; ``"no-gain"`` without one; ``"inconclusive"`` when runs
   the decision needs failed (the safe export is then ``none``, but no claim is made):

   - any planned ``none`` run is missing (every comparison is paired with it), or
   - a candidate with a missing run is *still in contention*: it is not excluded by the runs it has.
     Excluded means what a race drops (`race_drops`): significantly worse than ``none`` or than the
     leader (one-sided paired t at ``alpha``) on the seeds it finished. A failure is treated as
     possibly informative (a policy may fail exactly on the seeds where it is bad), so a candidate
     whose finished runs do not already rule it out could have changed the verdict or the winner.
     This includes the would-be winner itself: a gain that rests on the runs that did not fail is not
     exported.

Racing (`race_step`): confirmation may run in rounds — all candidates on a first block of seeds, then
more seeds for the survivors, up to a maximum. After each round a candidate is dropped when it is
significantly worse (one-sided paired t at ``alpha``, no correction: a wrong drop costs power, never a
false "improves") than ``none`` or than the current leader (highest mean difference) on their shared
seeds — the futility half of irace's t-test racing and SMAC's intensification. No candidate is ever
*accepted* early: the one final test above runs once, at the end, so repeated looks cannot inflate the
false-"improves" rate (dropping only lowers it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy.special import stdtr  # Student t CDF; scipy.stats' t.sf is ~50x slower per call (the surrogate calls it millions of times)

IMPROVES, NO_GAIN, INCONCLUSIVE = "improves", "no-gain", "inconclusive"
VERDICTS = (IMPROVES, NO_GAIN, INCONCLUSIVE)


@dataclass(frozen=True)
class Rule:
    """The decision rule's knobs: ``alpha`` family-wise one-sided level in (0, 0.5); ``min_effect`` ≥ 0,
    the smallest mean paired difference (accuracy, 0–1) called a gain; ``drop_alpha`` in (0, 0.5), the
    level of a race's one-sided "significantly worse" drop test."""

    alpha: float = 0.05
    min_effect: float = 0.005
    drop_alpha: float = 0.05
    procedure: str = "holm"  # a key of PROCEDURES

    def __post_init__(self) -> None:
        if self.procedure not in PROCEDURES:
            raise ValueError(f"procedure: expected one of {', '.join(PROCEDURES)}, got {self.procedure!r}")
        for name in ("alpha", "drop_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name}: expected a level in (0, 0.5), got {value!r}")
        if not 0.0 <= self.min_effect < 1.0:
            raise ValueError(f"min_effect: expected an accuracy difference in [0, 1), got {self.min_effect!r}")

    def text(self) -> str:
        return (f"one-sided paired t-test of each candidate against none on seeds both finished (SD floored at "
                f"sqrt(2)/n_eval; with per-example correctness of every paired run, SE^2 adds the example part "
                f"(MS_example - MS_residual)/(S n), Welch-Satterthwaite df); {self.procedure} correction over every candidate compared, family-wise alpha {self.alpha:g}; "
                f"a gain also needs a mean paired difference >= {self.min_effect:g}; winner = highest mean among "
                f"the gains, else none; inconclusive when a none run failed or a candidate with a failed run is "
                f"not already significantly worse (alpha {self.drop_alpha:g}) than none or the leader")


def sd_floor(n_eval: int) -> float:
    """The smallest SD of a paired accuracy difference that is believable on ``n_eval`` examples:
    each run's accuracy is known to one example (1/n), their difference to √2/n."""
    if not isinstance(n_eval, int) or n_eval < 1:
        raise ValueError(f"n_eval: expected a positive number of evaluation examples, got {n_eval!r}")
    return math.sqrt(2.0) / n_eval


SE_SEEDS, SE_SEEDS_AND_EXAMPLES = "seeds", "seeds+examples"  # PairedTest.se_kind


@dataclass(frozen=True)
class ExampleSpread:
    """The example-level spread of a paired difference over S seeds × n examples (rule step 2b):
    ``ms_example = S · var_i(mean_s D[:, i])`` and ``ms_residual`` = Σ(D − row mean − column mean +
    grand mean)² / ((S − 1)(n − 1)), for ``D = correct_candidate − correct_reference`` (S, n ≥ 2)."""

    seeds: int
    examples: int
    ms_example: float
    ms_residual: float

    def __post_init__(self) -> None:
        if self.seeds < 2 or self.examples < 2:
            raise ValueError(f"ExampleSpread: expected >= 2 seeds and >= 2 examples, got {self.seeds} x {self.examples}")


def example_spread(candidate: Sequence[Sequence[bool]], reference: Sequence[Sequence[bool]]) -> ExampleSpread:
    """`ExampleSpread` of per-example correctness: ``candidate[j]`` and ``reference[j]`` are the two runs
    of the j-th paired seed, each a 0/1 (or bool) sequence over the same n examples in the same order."""
    c = np.asarray(candidate, dtype=float)
    r = np.asarray(reference, dtype=float)
    if c.ndim != 2 or c.shape != r.shape:
        raise ValueError(f"example_spread: expected two equal [seeds, examples] arrays, got {c.shape} and {r.shape}")
    d = c - r
    seeds, examples = d.shape
    row = d.mean(axis=1, keepdims=True)
    column = d.mean(axis=0, keepdims=True)
    grand = d.mean()
    ms_example = seeds * float(((column - grand) ** 2).sum()) / (examples - 1)
    residual = d - row - column + grand
    ms_residual = float((residual ** 2).sum()) / ((seeds - 1) * (examples - 1))
    return ExampleSpread(seeds, examples, ms_example, ms_residual)


@dataclass(frozen=True)
class PairedTest:
    """One-sided paired t-test of ``diffs`` (H0: mean ≤ 0; ``worse_p``: H0 mean ≥ 0).

    ``se_kind``: ``"seeds"`` (seed-only SE, S − 1 df) or ``"seeds+examples"`` (rule step 2b);
    ``se_seed`` and ``se_example`` are the two parts (SE² = se_seed² + se_example²; se_example is
    None for a seed-only test), ``df`` the t distribution's degrees of freedom."""

    pairs: int
    mean: Optional[float]
    sd: Optional[float]  # sample SD of the differences (None below 2 pairs)
    sd_used: Optional[float]  # max(sd, floor)
    se: Optional[float]
    t: Optional[float]
    p: float  # P(T >= t): small when the candidate is better
    worse_p: float  # P(T <= t): small when the candidate is worse
    se_kind: str = SE_SEEDS
    se_seed: Optional[float] = None
    se_example: Optional[float] = None
    df: Optional[float] = None


def paired_test(diffs: Sequence[float], n_eval: int, spread: Optional[ExampleSpread] = None) -> PairedTest:
    """The one-sided paired t-test of steps 1–2b of the rule (p = 1 both ways below two pairs).
    ``spread``: the example-level evidence of exactly these pairs (same seed count), else seed-only."""
    k = len(diffs)
    if k == 0:
        return PairedTest(0, None, None, None, None, None, 1.0, 1.0)
    mean = math.fsum(diffs) / k
    if k < 2:
        return PairedTest(1, mean, None, None, None, None, 1.0, 1.0)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (k - 1))
    sd_used = max(sd, sd_floor(n_eval))
    seed_part = sd_used ** 2 / k
    if spread is None or spread.seeds != k:
        se, df, kind, example_part = math.sqrt(seed_part), float(k - 1), SE_SEEDS, None
    else:
        kind = SE_SEEDS_AND_EXAMPLES
        cells = spread.seeds * spread.examples
        example_part = max(spread.ms_example - spread.ms_residual, 0.0) / cells
        se = math.sqrt(seed_part + example_part)
        df = float(k - 1) if example_part == 0.0 else (seed_part + example_part) ** 2 / (
            seed_part ** 2 / (k - 1) + (spread.ms_example / cells) ** 2 / (spread.examples - 1)
            + (spread.ms_residual / cells) ** 2 / ((k - 1) * (spread.examples - 1)))
    t = mean / se
    return PairedTest(k, mean, sd, sd_used, se, t, float(stdtr(df, -t)), float(stdtr(df, t)), kind,
                      math.sqrt(seed_part), None if example_part is None else math.sqrt(example_part), df)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given): the i-th smallest becomes
    ``max over j ≤ i of min(1, (m − j + 1) · p_(j))``; reject where adjusted ≤ α."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def fixed_sequence(p_values: Sequence[float]) -> list[float]:
    """Fixed-sequence adjusted p-values: hypotheses tested in the given order, each at the full α,
    stopping at the first non-rejection (adjusted p_i = max of p_1..p_i). Valid when the order is fixed
    before the confirmation data is seen (the search's ranking on other examples)."""
    adjusted, running = [], 0.0
    for p in p_values:
        running = max(running, p)
        adjusted.append(running)
    return adjusted


PROCEDURES = {"holm": holm, "fixed-sequence": fixed_sequence}


def _pairs(values: Mapping[int, float], reference: Mapping[int, float], seeds: Sequence[int]) -> list[float]:
    return [values[seed] - reference[seed] for seed in seeds if seed in values and seed in reference]


def spreads_of(values: Mapping[str, Mapping[int, float]], examples: Mapping[str, Mapping[int, Sequence[bool]]],
               reference: str, seeds: Sequence[int], n_eval: int) -> dict[str, ExampleSpread]:
    """Each candidate's `ExampleSpread` against ``reference`` on the seeds both finished, for the
    candidates whose every such pair has per-example correctness of ``n_eval`` examples on both sides
    (``examples``: name → seed → correctness); the others are left out (their test is seed-only)."""
    reference_values, reference_examples = values.get(reference, {}), examples.get(reference, {})
    spreads = {}
    for name, own in values.items():
        if name == reference:
            continue
        paired = [seed for seed in seeds if seed in own and seed in reference_values]
        mine = examples.get(name, {})
        complete = all(seed in mine and seed in reference_examples and len(mine[seed]) == n_eval
                       and len(reference_examples[seed]) == n_eval for seed in paired)
        if len(paired) >= 2 and n_eval >= 2 and complete:
            spreads[name] = example_spread([mine[seed] for seed in paired], [reference_examples[seed] for seed in paired])
    return spreads


@dataclass(frozen=True)
class CandidateResult:
    name: str
    test: PairedTest
    p_adjusted: float
    holm_rejected: bool
    gain: bool  # Holm-rejected and mean ≥ min_effect
    missing: int  # planned seeds without a finished run (races: seeds it was run on)
    dropped: bool  # a race dropped it (its missing seeds were never run, not failed)
    in_contention: bool  # missing runs and not excluded by the runs it has


@dataclass(frozen=True)
class Verdict:
    verdict: str
    winner: Optional[str]  # None: the reference (none) stays
    candidates: list[CandidateResult]
    reason: str
    rule: Rule = field(default_factory=Rule)


def decide(values: Mapping[str, Mapping[int, float]], reference: str, seeds: Sequence[int], n_eval: int,
           rule: Rule = Rule(), dropped: Sequence[str] = (),
           spreads: Optional[Mapping[str, ExampleSpread]] = None) -> Verdict:
    """The verdict of the rule in the module docstring.

    ``values``: candidate name → seed → accuracy, the reference included (mapping order is the listing
    order for ties; a missing seed is a failed run); ``seeds``: the planned seeds; ``dropped``: candidates
    a race stopped early (their unrun seeds are not failures); ``spreads``: the example-level evidence of
    the candidates that have it (`spreads_of`), a candidate without one is tested on seeds only."""
    reference_values = values.get(reference, {})
    names = [name for name in values if name != reference]
    spreads = spreads or {}
    tests = {name: paired_test(_pairs(values[name], reference_values, seeds), n_eval, spreads.get(name)) for name in names}
    adjusted = dict(zip(names, PROCEDURES[rule.procedure]([tests[name].p for name in names])))
    rejected = {name: adjusted[name] <= rule.alpha for name in names}
    gains = [name for name in names if rejected[name] and tests[name].mean >= rule.min_effect]
    leader = max(gains, key=lambda name: (tests[name].mean, -names.index(name))) if gains else None
    incomplete = any(seed not in values[name] for name in names for seed in seeds)
    excluded = set(race_drops(values, reference, seeds, n_eval, rule, candidates=names)) if incomplete else set()
    results = []
    for name in names:
        missing = sum(1 for seed in seeds if seed not in values[name])
        is_dropped = name in dropped
        results.append(CandidateResult(name, tests[name], adjusted[name], rejected[name], name in gains, missing,
                                       is_dropped, missing > 0 and not is_dropped and name not in excluded))
    missing_reference = [seed for seed in seeds if seed not in reference_values]
    contenders = [result.name for result in results if result.in_contention]
    if missing_reference:
        return Verdict(INCONCLUSIVE, None, results, f"{len(missing_reference)} of {len(seeds)} {reference} runs failed", rule)
    if contenders:
        return Verdict(INCONCLUSIVE, None, results,
                       f"runs failed of {', '.join(contenders)}, which the finished runs do not rule out", rule)
    if leader is None:
        return Verdict(NO_GAIN, None, results, f"no candidate is a significant gain ({rule.procedure}, family-wise "
                                               f"alpha {rule.alpha:g}) of at least {rule.min_effect:g}", rule)
    return Verdict(IMPROVES, leader, results, f"{leader} has the highest mean among the significant gains", rule)


def race_drops(values: Mapping[str, Mapping[int, float]], reference: str, seeds: Sequence[int], n_eval: int,
               rule: Rule = Rule(), candidates: Optional[Sequence[str]] = None) -> list[str]:
    """Candidates significantly worse (one-sided paired t at ``rule.drop_alpha``) than the reference or
    than the leader — the candidate with the highest mean paired difference to the reference — on the
    seeds they share. The leader itself is never dropped by its own comparison. Seed-only tests: these
    decide which candidates to stop running and whether a failed run blocks the verdict, never whether a
    gain is claimed (the one final test does), so the example-level part is left out here."""
    reference_values = values.get(reference, {})
    names = list(candidates) if candidates is not None else [name for name in values if name != reference]
    means = {name: paired_test(_pairs(values[name], reference_values, seeds), n_eval).mean for name in names}
    ranked = [name for name in names if means[name] is not None]
    leader = max(ranked, key=lambda name: (means[name], -names.index(name))) if ranked else None
    drops = []
    for name in names:
        worse_than_reference = paired_test(_pairs(values[name], reference_values, seeds), n_eval).worse_p
        worse_than_leader = 1.0 if leader in (None, name) else \
            paired_test(_pairs(values[name], values[leader], seeds), n_eval).worse_p
        if min(worse_than_reference, worse_than_leader) < rule.drop_alpha:
            drops.append(name)
    return drops


@dataclass(frozen=True)
class RaceStep:
    drop: list[str]  # to stop running (newly dropped)
    survivors: list[str]
    more_seeds: int  # how many seeds to add for the survivors (0: judge now)


def race_step(values: Mapping[str, Mapping[int, float]], reference: str, seeds: Sequence[int], n_eval: int,
              max_seeds: int, block: int, rule: Rule = Rule(), dropped: Sequence[str] = ()) -> RaceStep:
    """After a round on ``seeds``: which still-racing candidates to drop and how many seeds (at most
    ``block``, never past ``max_seeds``) to add for the survivors; 0 when none survives or the maximum
    is reached (then `decide` judges). Failed runs are simply absent pairs here; `decide` handles them."""
    racing = [name for name in values if name != reference and name not in dropped]
    drop = race_drops(values, reference, seeds, n_eval, rule, candidates=racing)
    survivors = [name for name in racing if name not in drop]
    more = min(block, max_seeds - len(seeds)) if survivors else 0
    return RaceStep(drop, survivors, max(more, 0))
