"""A surrogate of the whole search → confirmation pipeline: error rates of confirmation rules in seconds.

    .venv/bin/python benchmarks/search_surrogate.py --simulations 2000 --seed 0

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

A simulated search scores single-seed trials on the selection examples (all 1000 validation
examples, or the 500 of the selection part when a confirm part is held out), takes the top-k searched
policies by score, ``none`` and the best preset, and hands them to a confirmation rule, which retrains
them on fresh seeds. Worlds: ``null`` (every op and preset has true effect 0: the hardest case for
false "improves"), ``measured`` (the figures below) and ``planted`` (confirmation only: k candidates,
one with a true +0.02, the others 0 — the verdict's own power at this noise).

Reported per rule variant: P(false "improves") in the null world, and in the measured world P(the
export's true gain ≥ 0.02), P(export's true gain > 0), P(a harmful export), the mean confirmation runs
(training runs, ``none`` included); the planted power. Prints a table, then one JSON line.
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

from autoaug.search.verdict import IMPROVES, Rule, decide, race_step  # noqa: E402

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


FS = "fixed-sequence"
VARIANTS = [
    Variant("old: 2SE, 3 seeds, top3, same val", "old", 3, 3, False),
    Variant("holm 6 seeds top3, same val", "new", 6, 3, False),
    Variant("holm 8 seeds top3, same val", "new", 8, 3, False),
    Variant("holm 8 seeds top3 held-out", "new", 8, 3, True),
    Variant("holm 8 seeds top2 held-out", "new", 8, 2, True),
    Variant("holm 8 seeds top1 held-out no preset", "new", 8, 1, True, preset=False),
    Variant("fixseq 6 seeds top2 held-out", "new", 6, 2, True, procedure=FS),
    Variant("fixseq 8 seeds top2 held-out", "new", 8, 2, True, procedure=FS),
    Variant("fixseq 8 seeds top3 held-out", "new", 8, 3, True, procedure=FS),
    Variant("race 4-10 top2 held-out holm", "new", 4, 2, True, race_max=10),
    Variant("race 4-10 top3 held-out fixseq", "new", 4, 3, True, race_max=10, procedure=FS),
]


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


def simulate_search(rng: np.random.Generator, world: World, n_select: int, fit_ratio: float) -> SearchOutcome:
    policies = [random_policy(rng, world.effects, index) for index in range(SEARCH_TRIALS)]
    presets = [Policy(f"preset {name}", effect) for name, effect in world.presets.items()]
    everything = [Policy("none", 0.0), *presets, *policies]
    fit = {policy.name: float(rng.normal(0.0, fit_sd(n_select, fit_ratio))) for policy in everything}
    noise = run_sd(n_select)
    score = {policy.name: policy.effect + fit[policy.name] + float(rng.normal(0.0, noise)) for policy in everything}
    ranked = sorted(policies, key=lambda policy: -score[policy.name])
    best_preset = max(presets, key=lambda policy: score[policy.name])
    return SearchOutcome(ranked, best_preset, fit)


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


def run_confirmation(rng: np.random.Generator, variant: Variant, candidates: list[Policy], fit: dict[str, float],
                     n_eval: int, rule: Rule) -> tuple[Optional[str], int]:
    """The winner's name (None: none/no-gain) and the number of training runs spent."""
    rule = replace(rule, procedure=variant.procedure)
    most = variant.race_max or variant.seeds
    all_values = confirm_values(rng, candidates, fit, n_eval, most)  # drawn up front; a race reveals them round by round
    if variant.kind == "old":
        return old_rule(all_values, variant.seeds), variant.seeds * len(candidates)
    if variant.race_max is None:
        verdict = decide(all_values, "none", list(range(variant.seeds)), n_eval, rule)
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
    return [Policy("none", 0.0), *outcome.searched[:variant.top_k], *([outcome.best_preset] if variant.preset else [])]


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
            candidates = candidates_of(outcome, variant)
            winner, runs = run_confirmation(rng, variant, candidates, fit, n_eval, rule)
            tally = tallies[variant.name]
            tally["runs"] += runs
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
            winner, _ = run_confirmation(rng, variant, candidates, fit, n_eval, rule)
            wins += winner == "trial 0"
        power[variant.name] = wins / simulations
    return power


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-effect", type=float, default=Rule().min_effect)
    parser.add_argument("--alpha", type=float, default=Rule().alpha)
    parser.add_argument("--fit-ratio", type=float, default=FIT_RATIO,
                        help="SD of a policy's fit to one example set / per-run noise SD (0: seeds are the only noise)")
    args = parser.parse_args(argv)
    if args.simulations < 1:
        parser.error(f"--simulations: expected >= 1, got {args.simulations}")
    if args.fit_ratio < 0:
        parser.error(f"--fit-ratio: expected >= 0, got {args.fit_ratio}")
    rule = Rule(alpha=args.alpha, min_effect=args.min_effect)
    started = time.perf_counter()
    fit = args.fit_ratio
    null_clean = simulate(World("null", zero=True), VARIANTS, args.simulations, args.seed, rule, 0.0)
    null = simulate(World("null", zero=True), VARIANTS, args.simulations, args.seed + 3, rule, fit)
    measured = simulate(World("measured", zero=False), VARIANTS, args.simulations, args.seed + 7, rule, fit)
    planted = planted_power(VARIANTS, args.simulations, args.seed, rule, fit)
    seconds = time.perf_counter() - started
    print(f"surrogate: {args.simulations} simulated searches per world, seed {args.seed}; n_val {N_MEASURED} (held-out: "
          f"500 select + 500 confirm); {SEARCH_TRIALS} random trials; paired SD {PAIRED_SD} at n=1000; "
          f"min effect {rule.min_effect}, alpha {rule.alpha}; fit ratio {fit} (null@fit0: no fit term)")
    columns = (("false_improves_fit0", "null@fit0"), ("false_improves", f"null@fit{fit:g}"),
               ("export_gain_ge_0.02", "meas: >=+.02"), ("export_positive", "meas: >0"),
               ("export_harmful", "meas: <0"), ("runs", "runs"), ("planted_power", "planted +.02"))
    print(f"{'rule':38}" + "".join(f"{title:>14}" for _, title in columns))
    rows = []
    for variant in VARIANTS:
        name = variant.name
        row = {"rule": name, "false_improves_fit0": null_clean[name]["improves"], "false_improves": null[name]["improves"],
               "export_gain_ge_0.02": measured[name]["gain"], "export_positive": measured[name]["positive"],
               "export_harmful": measured[name]["harmful"], "runs": measured[name]["runs"],
               "planted_power": planted[name]}
        rows.append(row)
        print(f"{name:38}" + "".join(f"{row[key]:>14.3f}" if key != "runs" else f"{row[key]:>14.1f}" for key, _ in columns))
    print(f"({seconds:.1f} s)")
    print(json.dumps({"simulations": args.simulations, "seed": args.seed, "seconds": round(seconds, 1),
                      "fit_ratio": fit, "min_effect": rule.min_effect, "alpha": rule.alpha, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
