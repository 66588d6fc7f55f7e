"""A surrogate of the whole search → confirmation pipeline: error rates of confirmation rules in seconds.

    .venv/bin/python benchmarks/search_surrogate.py --simulations 2000 --seed 0      (~75 s, every rule)
    .venv/bin/python benchmarks/search_surrogate.py --simulations 10000 --seed 1 --only "fixseq k1 -preset 17s"

The confirmation's default (`autoaug.search.confirmation.default_rule`, top-1, 17 seeds, no preset) is
the row "ex fixseq k1 -preset 17s": the most power for a planted +0.02 within the run budget.

Training a policy is replaced by a draw from a noise model fitted to what was measured on the built-in
task (README, "The built-in task's regime", shapes-vqa at its defaults, 1000 val / 1000 test examples).
One simulated run of policy P with seed s, validated on example set E of n examples, scores

    acc = 0.629 + effect(P) + g_s + u_{P,s} + f_{P,E}       rounded to the 1/n grid

- ``effect(P)``: the policy's true gain over ``none`` (per-op figures below; a combination is the sum of
  its ops' effects scaled by their strength, attenuated by ``COMBO_ATTENUATION`` per extra op);
- ``g_s``: what a seed does to every policy alike (initialisation, data order; cancels in paired
  differences and in a search whose trials share a seed);
- ``u_{P,s}``: run-to-run noise of this policy under this seed. Its variance is fitted to the measured
  paired-difference SD (0.0177 at n = 1000: pixel_translate +0.021 ± 0.008 SE over 5 seeds) and split
  between training noise and evaluation-sample noise (``EVAL_SHARE`` of it scales as 1/n), so a
  smaller validation part is noisier;
- ``f_{P,E}``: how well this policy happens to fit these particular validation examples, the same for
  every seed — the part of a policy's apparent gain that belongs to the example set, not the policy
  (SD ``FIT_RATIO`` × the seed noise at n = 1000, scaling as 1/√n; the review used half). Selection and a
  confirmation on the same examples share it (the winner's curse carries into the confirmation);
  a confirmation on a held-out part draws it afresh.

Example-level evidence (rule step 2b of `autoaug.search.verdict`): a confirmation run also reports which
examples it got right. Read per example, the paired difference ``D[s, i]`` is a two-way layout: seed part
(the training noise, ``u`` minus ``EVAL_SHARE``), example part (the fit ``f``, per example
``σ²_fit = FIT_RATIO² · RUN_SD² · 1000``, so its mean over n examples has the SD above) and a seed×example
residual (the evaluation-sample noise, per example ``σ²_res = EVAL_SHARE · RUN_SD² · 1000``). The rule only
reads two mean squares of that layout (`verdict.ExampleSpread`); under normality they are independent of
the per-seed means and distributed as scaled chi-squares, ``MS_example ~ (S·2σ²_fit + 2σ²_res) χ²(n−1)/(n−1)``
and ``MS_residual ~ 2σ²_res χ²((S−1)(n−1))/((S−1)(n−1))`` (the 2: candidate and none each bring their own),
so they are drawn directly instead of S × n bits per run (`draw_spread`), and the per-seed accuracies are
drawn as before. ``evidence`` "examples" uses them as the verdict does; "examples-twice" uses the SE the
brief first proposed, ``var_s(d)/S + var_i(e)/n`` (residual counted twice), to show what that costs.

A simulated search scores single-seed trials on the selection examples (all 1000 validation
examples, or the 500 of the selection part when a confirm part is held out), takes the top-k searched
policies by score, ``none`` and the best preset, and hands them to a confirmation rule, which retrains
them on fresh seeds. Worlds: ``null`` (every op and preset has true effect 0: the hardest case for
false "improves"), ``measured`` (the figures below), ``planted`` (confirmation only: k candidates,
one with a true +0.02 ranked first, the others 0 — the verdict's own power at this noise) and
``planted in search`` (one of the 12 trials has a true +0.02, the rest, the presets and none 0; the
search's single-seed ranking decides whether and where it enters the confirmation — the pipeline's power).

Selection race (`autoaug.search.race`, variants named ``race…``): before the confirmation, rounds
``(keep, seeds)`` give the ``keep`` best so far and none ``seeds`` more runs on the selection examples
(their fit to those examples included, the same for every seed) and re-rank them by mean paired gain;
the confirmation then takes the race's top-k. ``--search-trials`` sets how many trials a simulated
search scores (the default search's screen adds one per op of the space).

Reported per rule variant: P(false "improves") in the null world at fit ratio 0, 0.25 and 0.5; the
planted powers and, in the measured world, P(the export's true gain ≥ 0.02) and P(a harmful export)
at ``--fit-ratio``; the mean confirmation runs (training runs, ``none`` included). Prints a table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoaug.search.verdict import IMPROVES, ExampleSpread, Rule, decide, race_step  # noqa: E402

# ---------------------------------------------------------------- measured figures (README, shapes-vqa)
N_MEASURED = 1000  # examples the figures were measured on (val and test are 1000 each)
NONE_ACCURACY = 0.629
PAIRED_SD = 0.0177  # SD of a paired difference over seeds at n = 1000 (0.008 SE x sqrt(5))
NONE_SEED_SD = 0.013  # none's SD over seeds (includes the shared part g_s)
EVAL_SHARE = 0.5  # share of the run noise that is evaluation-sample noise (~1/n); assumed, not measured
FIT_RATIO = 0.25  # default SD of a policy's fit to one example set, relative to the per-run noise (assumed; see --fit-ratio)
COMBO_ATTENUATION = 0.8  # an extra op keeps 80 % of the summed effect (combinations ~ sum, attenuated)
UNMEASURED_EFFECT = -0.010  # ops of the default space never measured: like the measured harmful ones

MEASURED_OPS = {
    "pixel_translate": 0.021, "pixel_random_resized_crop": 0.008, "vision_random_mask": 0.010,
    "vision_token_dropout": 0.002, "embedding_noise": -0.010, "token_cutmix": -0.011, "text_token_dropout": -0.032,
}
UNMEASURED_OPS = ("pixel_color_jitter", "pixel_gaussian_blur", "modality_dropout", "text_mask", "vision_block_mask",
                  "vision_attention_mask", "text_token_substitution", "vision_patch_substitution",
                  "vision_block_shuffle", "vision_token_budget", "random_truncation", "token_mixup", "mergemix")
PRESETS = {"conservative": -0.011, "moderate": -0.054, "aggressive": -0.071, "trivial": -0.022, "randaugment": -0.048}
OPS = {**MEASURED_OPS, **{name: UNMEASURED_EFFECT for name in UNMEASURED_OPS}}
OP_NAMES = list(OPS)

RUN_SD = PAIRED_SD / math.sqrt(2)  # per-run, per-policy noise at n = 1000
SHARED_SEED_SD = math.sqrt(max(NONE_SEED_SD ** 2 - RUN_SD ** 2, 0.0))
SEARCH_TRIALS = 12  # the README main command
GAIN = 0.02


def run_sd(n: int) -> float:
    return RUN_SD * math.sqrt((1 - EVAL_SHARE) + EVAL_SHARE * N_MEASURED / n)


def fit_sd(n: int, ratio: float) -> float:
    return ratio * RUN_SD * math.sqrt(N_MEASURED / n)


@dataclass(frozen=True)
class Variant:
    """A confirmation rule: ``kind`` "old" (diff > 2 SE, no correction) or "new" (`verdict.decide`), with
    ``seeds`` fresh seeds (racing: start with ``seeds``, add ``block`` per round up to ``max_seeds``),
    ``top_k`` searched candidates (+ none + best preset) and whether a confirm part is held out."""

    name: str
    kind: str
    seeds: int
    top_k: int
    held_out: bool
    race_max: Optional[int] = None
    block: int = 2
    preset: bool = True
    procedure: str = "holm"
    evidence: str = "seeds"  # seeds / examples / examples-twice (see the module docstring)
    ranked_presets: bool = False  # presets compete with searched trials for the top-k (confirmation.PRESETS_RANKED)
    race: tuple[tuple[int, int], ...] = ()  # selection race rounds (keep, seeds), see `race_reorder`
    race_own_seed: bool = True


FS = "fixed-sequence"
RUN_BUDGET = 35  # confirmation runs the 15-minute search can afford (about 15 s of one core each, 2 cores)
REFERENCE_VARIANTS = [  # seed-only rules, as before example-level evidence
    Variant("old: 2SE, 3 seeds, top3, same val", "old", 3, 3, False),
    Variant("seeds-only holm 8s top3 +preset, held-out", "new", 8, 3, True),
    Variant("seeds-only fixseq 8s top2 +preset, held-out", "new", 8, 2, True, procedure=FS),
    Variant("seeds-only fixseq 10s top1 -preset, held-out", "new", 10, 1, True, preset=False, procedure=FS),
]


def example_variants() -> list[Variant]:
    """The example-level rule on the held-out confirm part: procedure x top-k x preset x seeds, plus
    top-1/2 with more seeds (what the run budget allows when the preset goes) and the double-counting SE."""
    grid = []
    for procedure, short in (("holm", "holm"), (FS, "fixseq")):
        for top_k in (1, 2, 3):
            for preset in (True, False):
                if top_k == 1 and not preset and procedure == "holm":
                    continue  # one hypothesis: Holm and fixed-sequence are the same test
                for seeds in (6, 8, 10):
                    grid.append(Variant(f"ex {short} k{top_k} {'+' if preset else '-'}preset {seeds}s", "new", seeds,
                                        top_k, True, preset=preset, procedure=procedure, evidence="examples"))
    grid += [Variant(f"ex fixseq k1 -preset {seeds}s", "new", seeds, 1, True, preset=False, procedure=FS,
                     evidence="examples") for seeds in (12, 16, 17)]
    grid += [Variant(f"ex fixseq k1 ranked-preset {seeds}s", "new", seeds, 1, True, preset=False, procedure=FS,
                     evidence="examples", ranked_presets=True) for seeds in (16,)]
    races = {"race4x3": ((4, 3),), "race4x3 search-seed-left-out": ((4, 3),), "race6x2": ((6, 2),), "race6x1,3x2": ((6, 1), (3, 2)),
             "race8x1,4x2": ((8, 1), (4, 2)), "race8x1,4x1,2x2": ((8, 1), (4, 1), (2, 2)), "race6x2,3x2": ((6, 2), (3, 2)),
             "race4x1,2x2": ((4, 1), (2, 2)), "race5x1,2x2": ((5, 1), (2, 2)), "race4x2": ((4, 2),)}
    grid += [Variant(f"ex fixseq k1 ranked-preset {label} 16s", "new", 16, 1, True, preset=False, procedure=FS,
                     evidence="examples", ranked_presets=True, race=rounds, race_own_seed="left-out" not in label)
             for label, rounds in races.items()]
    # the budget trade: race runs against confirmation seeds (the default's 17 seeds x 2 runs, race 6x1,3x2 15 runs)
    grid += [Variant(f"ex fixseq k1 ranked-preset {label} {seeds}s", "new", seeds, 1, True, preset=False, procedure=FS,
                     evidence="examples", ranked_presets=True, race=races[label])
             for label, seeds in (("race6x1,3x2", 17), ("race6x1,3x2", 15), ("race4x1,2x2", 17), ("race4x1,2x2", 15),
                                  ("race5x1,2x2", 17), ("race4x2", 17))]
    grid += [Variant("ex fixseq k2 -preset 11s", "new", 11, 2, True, preset=False, procedure=FS, evidence="examples")]
    grid += [Variant("ex holm k2 -preset 10s, same val", "new", 10, 2, False, preset=False, evidence="examples")]
    grid += [Variant("ex-twice fixseq k2 -preset 10s", "new", 10, 2, True, preset=False, procedure=FS,
                     evidence="examples-twice"),
             Variant("ex-twice fixseq k1 -preset 16s", "new", 16, 1, True, preset=False, procedure=FS,
                     evidence="examples-twice")]
    return grid


VARIANTS = REFERENCE_VARIANTS + example_variants()


# ---------------------------------------------------------------- the simulated search
@dataclass
class Policy:
    name: str
    effect: float  # true gain over none


def random_policy(rng: np.random.Generator, effects: dict[str, float], index: int) -> Policy:
    """A trial of the default space: 1-3 distinct ops, each at a strength in [0.3, 1] (p and magnitude
    below the measured setting dilute the effect)."""
    count = int(rng.integers(1, 4))
    ops = rng.choice(len(OP_NAMES), size=count, replace=False)
    strengths = rng.uniform(0.3, 1.0, size=count)
    effect = sum(effects[OP_NAMES[op]] * strength for op, strength in zip(ops, strengths))
    return Policy(f"trial {index}", effect * COMBO_ATTENUATION ** (count - 1))


class World:
    """True effects of ops and presets (``zero`` for the null world)."""

    def __init__(self, name: str, zero: bool) -> None:
        self.name = name
        self.effects = {op: 0.0 for op in OPS} if zero else dict(OPS)
        self.presets = {preset: 0.0 for preset in PRESETS} if zero else dict(PRESETS)


@dataclass
class SearchOutcome:
    searched: list[Policy]  # by search score, best first
    best_preset: Policy
    fit_select: dict[str, float]  # each policy's (and none's) fit to the selection examples
    with_presets: list[Policy]  # searched trials and presets together, by search score, best first
    score: dict[str, float]  # each policy's single-seed selection score (none's included)
    n_select: int


def simulate_search(rng: np.random.Generator, world: World, n_select: int, fit_ratio: float,
                    policies: Optional[list[Policy]] = None) -> SearchOutcome:
    """Single-seed scores of ``none``, the presets and the trials (``policies``, else 12 random ones of
    the world) on ``n_select`` selection examples; the trials ranked by score."""
    policies = policies if policies is not None else [random_policy(rng, world.effects, index) for index in range(SEARCH_TRIALS)]
    presets = [Policy(f"preset {name}", effect) for name, effect in world.presets.items()]
    everything = [Policy("none", 0.0), *presets, *policies]
    fit = {policy.name: float(rng.normal(0.0, fit_sd(n_select, fit_ratio))) for policy in everything}
    noise = run_sd(n_select)
    score = {policy.name: policy.effect + fit[policy.name] + float(rng.normal(0.0, noise)) for policy in everything}
    ranked = sorted(policies, key=lambda policy: -score[policy.name])
    best_preset = max(presets, key=lambda policy: score[policy.name])
    return SearchOutcome(ranked, best_preset, fit, sorted([*policies, *presets], key=lambda policy: -score[policy.name]),
                         score, n_select)


def race_reorder(rng: np.random.Generator, outcome: SearchOutcome, ranked: list[Policy],
                 rounds: tuple[tuple[int, int], ...], own_seed: bool = True) -> tuple[list[Policy], int]:
    """The selection race: each round ``(keep, seeds)`` keeps the ``keep`` best contenders so far and
    runs ``seeds`` more seeds of each (and of none) on the selection examples (a policy's fit to those
    examples is the same for every seed: the race averages the seed noise, not the winner's curse);
    contenders are ranked by their mean paired difference to none over their seeds (``own_seed``: the
    search's own single-seed score counts as one of them). Returns the new order and the runs spent."""
    noise = run_sd(outcome.n_select)
    fit = outcome.fit_select
    gains: dict[str, list[float]] = {policy.name: ([outcome.score[policy.name] - outcome.score["none"]] if own_seed else [])
                                     for policy in ranked}
    order = list(ranked)
    runs = 0
    for keep, seeds in rounds:
        contenders = order[:keep]
        for _ in range(seeds):
            none = fit["none"] + float(rng.normal(0.0, noise))
            for policy in contenders:
                gains[policy.name].append(policy.effect + fit[policy.name] + float(rng.normal(0.0, noise)) - none)
        runs += seeds * (len(contenders) + 1)
        order = sorted(contenders, key=lambda policy: -float(np.mean(gains[policy.name]))) + order[keep:]
    return order, runs


# ---------------------------------------------------------------- the confirmation
def confirm_values(rng: np.random.Generator, candidates: list[Policy], fit: dict[str, float], n_eval: int,
                   seeds: int) -> dict[str, dict[int, float]]:
    """Accuracies of each candidate (and none, first) on ``seeds`` fresh seeds, on the 1/n grid."""
    shared = rng.normal(0.0, SHARED_SEED_SD, size=seeds)
    noise = run_sd(n_eval)
    values = {}
    for policy in candidates:
        raw = NONE_ACCURACY + policy.effect + fit[policy.name] + shared + rng.normal(0.0, noise, size=seeds)
        values[policy.name] = {seed: round(float(value) * n_eval) / n_eval for seed, value in enumerate(raw)}
    return values


def old_rule(values: dict[str, dict[int, float]], seeds: int) -> Optional[str]:
    """The rule before verdict.py: paired mean > 0 and > 2 SE (no correction, no floor); winner = highest mean."""
    none = values["none"]
    winners = []
    for name, own in values.items():
        if name == "none":
            continue
        diffs = np.array([own[s] - none[s] for s in range(seeds)])
        se = diffs.std(ddof=1) / math.sqrt(seeds)
        if diffs.mean() > 0 and diffs.mean() > 2 * se:
            winners.append((float(np.mean(list(own.values()))), name))
    return max(winners)[1] if winners else None


def draw_spread(rng: np.random.Generator, seeds: int, n_eval: int, fit_ratio: float, twice: bool) -> ExampleSpread:
    """The two mean squares a candidate's per-example evidence against none would give (module docstring);
    ``twice``: MS_residual reported as 0, so the verdict's SE becomes var_s(d)/S + var_i(e)/n."""
    residual = 2 * EVAL_SHARE * RUN_SD ** 2 * N_MEASURED
    fit = 2 * (fit_ratio * RUN_SD) ** 2 * N_MEASURED
    ms_example = (seeds * fit + residual) * rng.chisquare(n_eval - 1) / (n_eval - 1)
    df_residual = (seeds - 1) * (n_eval - 1)
    ms_residual = 0.0 if twice else residual * rng.chisquare(df_residual) / df_residual
    return ExampleSpread(seeds, n_eval, float(ms_example), float(ms_residual))


def run_confirmation(rng: np.random.Generator, variant: Variant, candidates: list[Policy], fit: dict[str, float],
                     n_eval: int, rule: Rule, fit_ratio: float = 0.0) -> tuple[Optional[str], int]:
    """The winner's name (None: none/no-gain) and the number of training runs spent. ``fit_ratio``:
    the world's fit term, which the example-level evidence (``variant.evidence``) reflects."""
    rule = replace(rule, procedure=variant.procedure)
    most = variant.race_max or variant.seeds
    all_values = confirm_values(rng, candidates, fit, n_eval, most)  # drawn up front; a race reveals them round by round
    if variant.kind == "old":
        return old_rule(all_values, variant.seeds), variant.seeds * len(candidates)
    spreads = None
    if variant.evidence != "seeds":
        if variant.race_max is not None:
            raise ValueError(f"{variant.name}: example-level evidence is simulated without racing only")
        spreads = {policy.name: draw_spread(rng, variant.seeds, n_eval, fit_ratio, variant.evidence == "examples-twice")
                   for policy in candidates if policy.name != "none"}
    if variant.race_max is None:
        verdict = decide(all_values, "none", list(range(variant.seeds)), n_eval, rule, spreads=spreads)
        return (verdict.winner if verdict.verdict == IMPROVES else None), variant.seeds * len(candidates)
    seeds = list(range(variant.seeds))
    dropped: list[str] = []
    stopped_at = {}
    while True:
        visible = {name: {s: v for s, v in own.items() if s < stopped_at.get(name, len(seeds))}
                   for name, own in all_values.items()}
        step = race_step(visible, "none", seeds, n_eval, most, variant.block, rule, dropped)
        for name in step.drop:
            dropped.append(name)
            stopped_at[name] = len(seeds)
        if step.more_seeds == 0:
            break
        seeds = list(range(len(seeds) + step.more_seeds))
    runs = sum(stopped_at.get(policy.name, len(seeds)) for policy in candidates if policy.name != "none") + len(seeds)
    verdict = decide(visible, "none", seeds, n_eval, rule, dropped=dropped)
    return (verdict.winner if verdict.verdict == IMPROVES else None), runs


def candidates_of(outcome: SearchOutcome, variant: Variant) -> list[Policy]:
    """none, then the top-k (searched only, or searched and presets ranked together), then the best
    preset as an extra candidate when ``variant.preset``."""
    ranked = outcome.with_presets if variant.ranked_presets else outcome.searched
    return [Policy("none", 0.0), *ranked[:variant.top_k], *([outcome.best_preset] if variant.preset else [])]


def raced_candidates(rng: np.random.Generator, outcome: SearchOutcome, variant: Variant) -> tuple[list[Policy], int]:
    """`candidates_of` after the variant's selection race (none when ``race_top`` is 0) and its runs."""
    if not variant.race:
        return candidates_of(outcome, variant), 0
    ranked = outcome.with_presets if variant.ranked_presets else outcome.searched
    reordered, runs = race_reorder(rng, outcome, ranked, variant.race, variant.race_own_seed)
    key = "with_presets" if variant.ranked_presets else "searched"
    return candidates_of(replace(outcome, **{key: reordered}), variant), runs


def simulate(world: World, variants: list[Variant], simulations: int, seed: int, rule: Rule,
             fit_ratio: float) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    tallies = {variant.name: {"improves": 0, "gain": 0, "positive": 0, "harmful": 0, "runs": 0} for variant in variants}
    n_val, n_half = N_MEASURED, N_MEASURED // 2
    for _ in range(simulations):
        outcomes = {False: simulate_search(rng, world, n_val, fit_ratio),
                    True: simulate_search(rng, world, n_half, fit_ratio)}
        # a held-out confirm part: every policy's fit to those examples is drawn afresh
        fresh_fit = {name: float(rng.normal(0.0, fit_sd(n_half, fit_ratio))) for name in outcomes[True].fit_select}
        for variant in variants:
            outcome = outcomes[variant.held_out]
            fit = fresh_fit if variant.held_out else outcome.fit_select
            n_eval = n_half if variant.held_out else n_val
            candidates, race_runs = raced_candidates(rng, outcome, variant)
            winner, runs = run_confirmation(rng, variant, candidates, fit, n_eval, rule, fit_ratio)
            tally = tallies[variant.name]
            tally["runs"] += runs + race_runs
            if winner is not None:
                effect = next(policy.effect for policy in candidates if policy.name == winner)
                tally["improves"] += 1
                tally["gain"] += effect >= GAIN - 1e-12
                tally["positive"] += effect > 0
                tally["harmful"] += effect < 0
    return {name: {key: value / simulations for key, value in tally.items()} for name, tally in tallies.items()}


def planted_power(variants: list[Variant], simulations: int, seed: int, rule: Rule, fit_ratio: float) -> dict[str, float]:
    """Confirmation alone: top-k candidates of which one has a true +0.02, the others (and the preset) 0,
    no winner's curse; P(the +0.02 candidate is the winner)."""
    rng = np.random.default_rng(seed + 1)
    power = {}
    for variant in variants:
        wins = 0
        for _ in range(simulations):
            candidates = [Policy("none", 0.0), Policy("trial 0", GAIN),
                          *[Policy(f"trial {i}", 0.0) for i in range(1, variant.top_k)],
                          *([Policy("preset p", 0.0)] if variant.preset else [])]
            n_eval = N_MEASURED // 2 if variant.held_out else N_MEASURED
            fit = {policy.name: float(rng.normal(0.0, fit_sd(n_eval, fit_ratio))) for policy in candidates}
            winner, _ = run_confirmation(rng, variant, candidates, fit, n_eval, rule, fit_ratio)
            wins += winner == "trial 0"
        power[variant.name] = wins / simulations
    return power


def planted_search_power(variants: list[Variant], simulations: int, seed: int, rule: Rule,
                         fit_ratio: float) -> dict[str, float]:
    """The pipeline's power: 12 trials of which one (a random one) has a true +0.02, the others, the
    presets and none 0; the search ranks them by single-seed scores on the selection examples (its
    fit to them included), the confirmation judges its top-k on fresh seeds; P(the +0.02 trial wins)."""
    rng = np.random.default_rng(seed + 2)
    world = World("null", zero=True)
    wins = {variant.name: 0 for variant in variants}
    n_val, n_half = N_MEASURED, N_MEASURED // 2
    for _ in range(simulations):
        planted = int(rng.integers(SEARCH_TRIALS))
        policies = [Policy(f"trial {index}", GAIN if index == planted else 0.0) for index in range(SEARCH_TRIALS)]
        outcomes = {False: simulate_search(rng, world, n_val, fit_ratio, policies),
                    True: simulate_search(rng, world, n_half, fit_ratio, policies)}
        fresh_fit = {name: float(rng.normal(0.0, fit_sd(n_half, fit_ratio))) for name in outcomes[True].fit_select}
        for variant in variants:
            outcome = outcomes[variant.held_out]
            fit = fresh_fit if variant.held_out else outcome.fit_select
            n_eval = n_half if variant.held_out else n_val
            candidates, _ = raced_candidates(rng, outcome, variant)
            winner, _ = run_confirmation(rng, variant, candidates, fit, n_eval, rule, fit_ratio)
            wins[variant.name] += winner == f"trial {planted}"
    return {name: count / simulations for name, count in wins.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-effect", type=float, default=Rule().min_effect)
    parser.add_argument("--alpha", type=float, default=Rule().alpha)
    parser.add_argument("--fit-ratio", type=float, default=FIT_RATIO,
                        help="SD of a policy's fit to one example set / per-run noise SD (0: seeds are the only noise)")
    parser.add_argument("--search-trials", type=int, default=12,
                        help="trials a simulated search scores (the screen's single ops count as trials)")
    parser.add_argument("--only", default=None, help="simulate only the rules whose name contains this text")
    args = parser.parse_args(argv)
    if args.simulations < 1:
        parser.error(f"--simulations: expected >= 1, got {args.simulations}")
    if args.fit_ratio < 0:
        parser.error(f"--fit-ratio: expected >= 0, got {args.fit_ratio}")
    globals()["SEARCH_TRIALS"] = args.search_trials  # the simulated searches read the module's figure
    rule = Rule(alpha=args.alpha, min_effect=args.min_effect)
    variants = [variant for variant in VARIANTS if args.only is None or args.only in variant.name]
    started = time.perf_counter()
    fit = args.fit_ratio
    sims = args.simulations
    null_by_fit = {ratio: simulate(World("null", zero=True), variants, sims, args.seed + 3 + int(100 * ratio), rule, ratio)
                   for ratio in (0.0, 0.25, 0.5)}
    measured = simulate(World("measured", zero=False), variants, sims, args.seed + 7, rule, fit)
    planted = planted_power(variants, sims, args.seed, rule, fit)
    planted_search = planted_search_power(variants, sims, args.seed, rule, fit)
    seconds = time.perf_counter() - started
    print(f"surrogate: {sims} simulated searches per world, seed {args.seed}; n_val {N_MEASURED} (held-out: "
          f"500 select + 500 confirm); {args.search_trials} random trials; paired SD {PAIRED_SD} at n=1000; "
          f"min effect {rule.min_effect}, alpha {rule.alpha}; power and measured world at fit ratio {fit}; "
          f"runs > {RUN_BUDGET} marked *")
    columns = (("false_fit0", "null fit0"), ("false_fit0.25", "null fit.25"), ("false_fit0.5", "null fit.5"),
               ("planted_power", "planted@1"), ("planted_search_power", "planted@srch"),
               ("export_gain_ge_0.02", "meas >=+.02"), ("export_harmful", "meas <0"), ("runs", "runs"))
    print(f"{'rule':46}" + "".join(f"{title:>13}" for _, title in columns))
    rows = []
    for variant in variants:
        name = variant.name
        row = {"rule": name, "procedure": variant.procedure, "top_k": variant.top_k, "preset": variant.preset,
               "seeds": variant.seeds, "evidence": variant.evidence, "held_out": variant.held_out,
               **{f"false_fit{ratio:g}": null_by_fit[ratio][name]["improves"] for ratio in null_by_fit},
               "planted_power": planted[name], "planted_search_power": planted_search[name],
               "export_gain_ge_0.02": measured[name]["gain"], "export_harmful": measured[name]["harmful"],
               "runs": measured[name]["runs"]}
        rows.append(row)
        mark = "*" if row["runs"] > RUN_BUDGET else " "
        print(f"{name:46}" + "".join(f"{row[key]:>13.3f}" if key != "runs" else f"{row[key]:>12.1f}{mark}"
                                     for key, _ in columns))
    print(f"({seconds:.1f} s)")
    print(json.dumps({"simulations": sims, "seed": args.seed, "seconds": round(seconds, 1),
                      "fit_ratio": fit, "min_effect": rule.min_effect, "alpha": rule.alpha, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
