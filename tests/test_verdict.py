"""The confirmation's decision rule (`autoaug.search.verdict`) and the held-out confirm split.

Expected values are computed here from scipy.stats (t.sf / t.isf) and by hand, never by calling the
code under test. Differences are built as ``mean + scale * Z`` with Z = (-1.5, -0.5, 0.5, 1.5): four
seeds, sample SD of Z = sqrt(5/3), so the t statistic of a candidate is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from autoaug.search.trainable import RunSpec
from autoaug.search.verdict import (IMPROVES, INCONCLUSIVE, NO_GAIN, Rule, decide, example_spread, holm, paired_test,
                                    race_step, spreads_of)
from autoaug.trainers.evaluation import decode_correct, encode_correct
from autoaug.trainers.prepared import CONFIRM_SPLIT, PreparedTask
from autoaug.trainers.shapes_vqa import make_shapes_vqa

SEEDS = [0, 1, 2, 3]
Z = [-1.5, -0.5, 0.5, 1.5]
SD_Z = math.sqrt(5 / 3)
N_EVAL = 1000  # floor sqrt(2)/1000 = 0.0014: far below the SDs used unless a test is about the floor
NONE = {seed: 0.60 + 0.01 * seed for seed in SEEDS}  # none's own level varies by seed; pairing removes it


def runs(diffs: list[float]) -> dict[int, float]:
    return {seed: NONE[seed] + diff for seed, diff in zip(SEEDS, diffs)}


def shaped(mean: float, scale: float = 0.01) -> list[float]:
    return [mean + scale * z for z in Z]


def mean_for_p(p: float, scale: float = 0.01) -> float:
    """The mean difference whose one-sided paired t-test (4 seeds, SD = scale*SD_Z) has p-value ``p``."""
    return stats.t.isf(p, len(SEEDS) - 1) * scale * SD_Z / math.sqrt(len(SEEDS))


def values(**candidates: list[float]) -> dict[str, dict[int, float]]:
    return {"none": dict(NONE), **{name.replace("_", " "): runs(diffs) for name, diffs in candidates.items()}}


# ---------------------------------------------------------------- threshold
@pytest.mark.parametrize("factor, expected", [(0.99, NO_GAIN), (1.01, IMPROVES)])
def test_threshold_is_the_holm_adjusted_one_sided_critical_value(factor, expected):
    # Two candidates, the other clearly harmful (p ~ 1): Holm compares the best with alpha/2, so the
    # critical mean is t.isf(0.025, 3) * SE. Catches: no correction (p < 0.05 accepts at 0.99x), the old
    # 2-SE rule (2 SE = 0.0129 < 0.0205 accepts at 0.99x), a two-sided test (t.isf(0.0125, 3) rejects 1.01x).
    critical = mean_for_p(0.05 / 2)
    assert 2 * 0.01 * SD_Z / 2 < 0.99 * critical  # the old rule would have accepted below the threshold
    verdict = decide(values(trial_1=shaped(factor * critical), trial_2=shaped(-0.05)), "none", SEEDS, N_EVAL)
    assert verdict.verdict == expected
    assert verdict.winner == ("trial 1" if expected == IMPROVES else None)
    result = next(result for result in verdict.candidates if result.name == "trial 1")
    t = factor * critical / (0.01 * SD_Z / 2)
    assert result.test.p == pytest.approx(stats.t.sf(t, 3), rel=1e-9)
    assert result.p_adjusted == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-9)


# ---------------------------------------------------------------- winner
def test_winner_is_the_highest_mean_among_significant_gains_not_the_smallest_p_or_largest_single_difference():
    steady = [0.030, 0.031, 0.029, 0.030]  # tiny SD: the smallest p-value
    better = shaped(0.065)  # noisier, higher mean, still significant
    erratic = [0.20, -0.10, -0.05, 0.0]  # the largest single difference, not significant
    verdict = decide(values(steady=steady, better=better, erratic=erratic), "none", SEEDS, N_EVAL)
    by_name = {result.name: result for result in verdict.candidates}
    assert by_name["steady"].test.p < by_name["better"].test.p  # a "smallest p" rule picks steady
    assert by_name["steady"].gain and by_name["better"].gain and not by_name["erratic"].gain
    assert verdict.verdict == IMPROVES and verdict.winner == "better"  # "largest difference" picks erratic


# ---------------------------------------------------------------- SD floor and minimum effect
def test_identical_tiny_differences_are_no_gain_because_of_the_sd_floor():
    # SD 0 without the floor (an infinite t): with it, SD = sqrt(2)/1000, t = 0.001/(0.001414/2) = 1.414.
    rule = Rule(min_effect=0.0)  # the floor alone must stop it
    verdict = decide(values(trial_1=[0.001] * 4), "none", SEEDS, N_EVAL, rule)
    t = 0.001 / (math.sqrt(2) / N_EVAL / 2)
    assert verdict.candidates[0].test.p == pytest.approx(stats.t.sf(t, 3), rel=1e-9) and stats.t.sf(t, 3) > 0.05
    assert verdict.verdict == NO_GAIN
    # the floor does not hide a real consistent gain: +0.01 on every seed is t = 14
    assert decide(values(trial_1=[0.01] * 4), "none", SEEDS, N_EVAL, rule).verdict == IMPROVES


def test_a_significant_difference_below_the_minimum_effect_is_no_gain():
    small = [0.004, 0.0041, 0.0039, 0.004]  # p ~ 1e-6, mean 0.004 < 0.005
    assert decide(values(trial_1=small), "none", SEEDS, N_EVAL).verdict == NO_GAIN
    assert decide(values(trial_1=small), "none", SEEDS, N_EVAL, Rule(min_effect=0.003)).winner == "trial 1"


# ---------------------------------------------------------------- Holm step-down
def test_holm_adjusted_p_values_by_hand():
    # sorted p 0.01, 0.02, 0.04 with m = 3: 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])


def test_holm_steps_down_past_bonferroni_and_stops_at_the_first_failure():
    rule = Rule(min_effect=0.0)
    # p 0.01, 0.02, 0.04: Bonferroni (0.05/3 = 0.0167) rejects only the first; Holm all three.
    verdict = decide(values(a=shaped(mean_for_p(0.01)), b=shaped(mean_for_p(0.02)), c=shaped(mean_for_p(0.04))),
                     "none", SEEDS, N_EVAL, rule)
    assert [result.gain for result in verdict.candidates] == [True, True, True]
    # p 0.01, 0.03, 0.04: 0.03 > 0.05/2 stops the procedure; a step-up (Hochberg) rule would reject all.
    verdict = decide(values(a=shaped(mean_for_p(0.01)), b=shaped(mean_for_p(0.03)), c=shaped(mean_for_p(0.04))),
                     "none", SEEDS, N_EVAL, rule)
    assert [result.gain for result in verdict.candidates] == [True, False, False]


# ---------------------------------------------------------------- failed runs
def test_a_failed_none_run_is_inconclusive():
    data = values(trial_1=shaped(0.08))  # a clear gain otherwise
    del data["none"][2]
    verdict = decide(data, "none", SEEDS, N_EVAL)
    assert verdict.verdict == INCONCLUSIVE and verdict.winner is None  # the old code said no-gain/improves


def test_a_failed_run_of_the_would_be_winner_is_inconclusive():
    data = values(trial_1=shaped(0.01), trial_2=[0.09, 0.10, 0.11, 0.10])
    del data["trial 2"][3]  # its three finished runs alone would make it the winner
    verdict = decide(data, "none", SEEDS, N_EVAL)
    assert verdict.verdict == INCONCLUSIVE
    assert [result.name for result in verdict.candidates if result.in_contention] == ["trial 2"]


def test_a_failed_run_of_a_candidate_its_finished_runs_rule_out_does_not_block_the_verdict():
    data = values(trial_1=shaped(0.08), trial_2=[-0.05, -0.06, -0.04, -0.05])
    del data["trial 2"][0]  # significantly worse than none on the three seeds it has
    verdict = decide(data, "none", SEEDS, N_EVAL)
    assert verdict.verdict == IMPROVES and verdict.winner == "trial 1"
    data["trial 2"] = {1: 0.70}  # one finished run: not ruled out (no test possible), so it blocks
    assert decide(data, "none", SEEDS, N_EVAL).verdict == INCONCLUSIVE


# ---------------------------------------------------------------- racing
def test_race_drops_what_is_significantly_worse_than_none_or_the_leader_and_adds_seeds_to_the_rest():
    data = values(leader=[0.05, 0.06, 0.04, 0.05], harmful=[-0.05, -0.06, -0.04, -0.05],
                  behind=[0.00, 0.01, -0.01, 0.00], close=shaped(0.04))
    step = race_step(data, "none", SEEDS, N_EVAL, max_seeds=8, block=2)
    # behind: -0.05 vs the leader on every seed (t large) although not worse than none
    assert step.drop == ["harmful", "behind"] and step.survivors == ["leader", "close"] and step.more_seeds == 2
    assert race_step(data, "none", SEEDS, N_EVAL, max_seeds=5, block=2).more_seeds == 1  # never past the maximum
    assert race_step(data, "none", SEEDS, N_EVAL, max_seeds=4, block=2).more_seeds == 0


def test_rule_rejects_bad_levels():
    with pytest.raises(ValueError, match="alpha"):
        Rule(alpha=0.5)
    with pytest.raises(ValueError, match="procedure"):
        Rule(procedure="bonferroni-ish")


# ---------------------------------------------------------------- the held-out confirm split
def test_confirm_split_is_a_deterministic_stratified_disjoint_half_of_validation():
    task = PreparedTask.build(make_shapes_vqa(seed=0, train_size=16, val_size=60, test_size=8))
    carved = task.with_confirm_split(0.5, seed=3)
    val, confirm, original = carved.splits["val"], carved.splits[CONFIRM_SPLIT], task.splits["val"]
    assert len(val) + len(confirm) == len(original) and abs(len(confirm) - 30) <= len(original.labels.unique())
    rows = carved.confirm_record["confirm_rows"]
    # the confirm part is exactly those rows of the original validation split, val the others (disjoint)
    assert confirm.labels.tolist() == original.labels[rows].tolist()
    assert (confirm.images == original.images[rows]).all()
    rest = [row for row in range(len(original)) if row not in set(rows)]
    assert (val.text_ids == original.text_ids[rest]).all()
    for label in original.labels.unique().tolist():  # stratified: each class split within one example of half
        assert abs((confirm.labels == label).sum().item() - (original.labels == label).sum().item() / 2) <= 0.5
    assert task.with_confirm_split(0.5, seed=3).confirm_record["confirm_rows"] == rows  # deterministic
    assert task.with_confirm_split(0.5, seed=4).confirm_record["confirm_rows"] != rows  # follows the data seed
    assert "confirm" not in task.splits and carved.data is task.data  # the task itself is unchanged
    with pytest.raises(ValueError, match="confirm_fraction"):
        task.with_confirm_split(1.0)


def test_train_holdout_is_a_deterministic_stratified_disjoint_fifth_of_training():
    """`PreparedTask.with_train_holdout` (calibration's overfitting measure). Catches a slice that
    overlaps what is trained on, one drawn from validation, and one that ignores the seed."""
    from autoaug.trainers.prepared import TRAIN_HOLDOUT_SPLIT

    task = PreparedTask.build(make_shapes_vqa(seed=0, train_size=100, val_size=8, test_size=8))
    carved = task.with_train_holdout(0.2, seed=3)
    kept, held, original = carved.splits["train"], carved.splits[TRAIN_HOLDOUT_SPLIT], task.splits["train"]
    assert len(kept) + len(held) == len(original) and abs(len(held) - 20) <= len(original.labels.unique())
    # every original training example lands in exactly one of the two (compared as whole images)
    flat = lambda split: {bytes(image.numpy().tobytes()) for image in split.images}
    assert flat(kept).isdisjoint(flat(held)) and flat(kept) | flat(held) == flat(original)
    for label in original.labels.unique().tolist():  # stratified: each class within one example of a fifth
        assert abs((held.labels == label).sum().item() - (original.labels == label).sum().item() / 5) <= 0.5
    assert (task.with_train_holdout(0.2, seed=3).splits[TRAIN_HOLDOUT_SPLIT].images == held.images).all()
    assert not torch.equal(task.with_train_holdout(0.2, seed=4).splits[TRAIN_HOLDOUT_SPLIT].images, held.images)
    assert carved.splits["val"] is task.splits["val"] and TRAIN_HOLDOUT_SPLIT not in task.splits
    with pytest.raises(ValueError, match="holdout_fraction"):
        task.with_train_holdout(0.0)


# ---------------------------------------------------------------- example-level evidence (rule step 2b)
def _two_way_by_sums_of_squares(candidate: np.ndarray, reference: np.ndarray, floor: float):
    """An independent route to the combined SE: the two-way ANOVA identity SS_total = SS_seed + SS_example
    + SS_residual (the code under test forms row/column means and the residual directly)."""
    d = candidate.astype(float) - reference.astype(float)
    seeds, n = d.shape
    grand = d.mean()
    ss_total = ((d - grand) ** 2).sum()
    ss_seed = n * ((d.mean(axis=1) - grand) ** 2).sum()
    ss_example = seeds * ((d.mean(axis=0) - grand) ** 2).sum()
    ms_example = ss_example / (n - 1)
    ms_residual = (ss_total - ss_seed - ss_example) / ((seeds - 1) * (n - 1))
    sd = max(np.std(d.mean(axis=1), ddof=1), floor)
    seed_part = sd ** 2 / seeds
    example_part = max(ms_example - ms_residual, 0.0) / (seeds * n)
    df = (seed_part + example_part) ** 2 / (seed_part ** 2 / (seeds - 1) + (ms_example / (seeds * n)) ** 2 / (n - 1)
                                           + (ms_residual / (seeds * n)) ** 2 / ((seeds - 1) * (n - 1)))
    return grand, seed_part, example_part, df


def _bits_values(matrix: np.ndarray) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    return ({seed: float(matrix[index].mean()) for index, seed in enumerate(SEEDS)},
            {seed: matrix[index].astype(bool) for index, seed in enumerate(SEEDS)})


def test_combined_se_matches_an_independent_two_way_computation():
    # Catches: a different residual (the brief's var_i(e)/n, which counts it twice), a missing floor on the
    # seed part, S-1 or n-1 degrees of freedom instead of Welch-Satterthwaite, components swapped in the row.
    rng = np.random.default_rng(5)
    n = 300
    none_bits = rng.random((4, n)) < 0.6
    candidate_bits = none_bits ^ (rng.random((4, n)) < 0.02)  # runs of one seed mostly agree (pairing)
    helped = rng.random(n) < 0.1  # per-example fit: the candidate is right on these examples
    candidate_bits[:, helped] = True
    none_values, none_examples = _bits_values(none_bits)
    values, examples = _bits_values(candidate_bits)
    data = {"none": none_values, "trial 1": values}
    spreads = spreads_of(data, {"none": none_examples, "trial 1": examples}, "none", SEEDS, n)
    test = decide(data, "none", SEEDS, n, Rule(min_effect=0.0), spreads=spreads).candidates[0].test
    mean, seed_part, example_part, df = _two_way_by_sums_of_squares(candidate_bits, none_bits, math.sqrt(2) / n)
    assert example_part > 0.2 * seed_part  # the case exercises both parts
    assert test.se_kind == "seeds+examples"
    assert test.mean == pytest.approx(mean, abs=1e-12)
    assert test.se_seed == pytest.approx(math.sqrt(seed_part), rel=1e-9)
    assert test.se_example == pytest.approx(math.sqrt(example_part), rel=1e-9)
    assert test.se == pytest.approx(math.sqrt(seed_part + example_part), rel=1e-9)
    assert test.df == pytest.approx(df, rel=1e-9) and 3 < test.df < n
    assert test.p == pytest.approx(stats.t.sf(mean / math.sqrt(seed_part + example_part), df), rel=1e-7)


def test_combined_se_is_unbiased_for_the_variance_of_the_mean_difference():
    # Two-way Gaussian layout with known parts: Var(mean) = s2_seed/S + s2_ex/n + s2_res/(S n). The residual
    # is large (as in the task: which examples two runs disagree on), so the brief's first formula,
    # var_s(d)/S + var_i(e)/n, overshoots by s2_res/(S n) = 53 % here; the estimator must not.
    # 400 replicates: the mean SE^2 has a relative SD of about 0.6/sqrt(400) = 3 %, so 10 % is > 3 SD.
    rng = np.random.default_rng(11)
    seeds, n, s2_seed, s2_ex, s2_res = 6, 400, 2e-5, 0.02, 0.3
    truth = s2_seed / seeds + s2_ex / n + s2_res / (seeds * n)
    estimates, doubled = [], []
    for _ in range(400):
        d = (rng.normal(0, math.sqrt(s2_seed), (seeds, 1)) + rng.normal(0, math.sqrt(s2_ex), (1, n))
             + rng.normal(0, math.sqrt(s2_res), (seeds, n)))
        spread = example_spread(d, np.zeros_like(d))
        test = paired_test(list(d.mean(axis=1)), n, spread)
        estimates.append(test.se ** 2)
        doubled.append(test.se_seed ** 2 + spread.ms_example / (seeds * n))
    assert np.mean(estimates) == pytest.approx(truth, rel=0.10)
    assert np.mean(doubled) > 1.3 * truth  # what the double count would have given


def test_a_win_on_the_same_few_examples_is_improves_on_seeds_but_not_on_examples():
    # The candidate is right where none is wrong on the same 4 examples on every seed, wrong where none is
    # right on 1, and seed-specific flips add per-seed variation: per-seed differences (4, 2, 5, 1)/n, all
    # positive and consistent (seed-only t = 3.3 on 3 df, p = 0.023), but the whole gain rests on 5
    # examples, 4 for and 1 against: read with the examples as a sample, t ~ 1.2 (no evidence it generalises).
    # Catches: a verdict that ignores the examples, or one that adds only the seed x example residual.
    n = 400
    none_bits = np.zeros((4, n), dtype=bool)
    none_bits[:, 200:] = True  # none: right on half the examples
    candidate_bits = none_bits.copy()
    candidate_bits[:, [0, 1, 2, 3]] = True  # lucky on the same four
    candidate_bits[:, 399] = False  # and unlucky on one
    candidate_bits[0, 10] = True  # seed-specific: +1, -1, +2, -2 examples
    candidate_bits[1, 210] = False
    candidate_bits[2, [11, 12]] = True
    candidate_bits[3, [211, 212]] = False
    none_values, none_examples = _bits_values(none_bits)
    values, examples = _bits_values(candidate_bits)
    data = {"none": none_values, "trial 1": values}
    diffs = [values[seed] - none_values[seed] for seed in SEEDS]
    assert diffs == pytest.approx([4 / n, 2 / n, 5 / n, 1 / n])
    seed_only = decide(data, "none", SEEDS, n)
    assert seed_only.verdict == IMPROVES  # the seed-only rule is fooled
    assert seed_only.candidates[0].test.p == pytest.approx(stats.ttest_1samp(diffs, 0, alternative="greater").pvalue)
    spreads = spreads_of(data, {"none": none_examples, "trial 1": examples}, "none", SEEDS, n)
    with_examples = decide(data, "none", SEEDS, n, spreads=spreads)
    result = with_examples.candidates[0]
    _, seed_part, example_part, df = _two_way_by_sums_of_squares(candidate_bits, none_bits, math.sqrt(2) / n)
    assert result.test.p == pytest.approx(stats.t.sf(3 / n / math.sqrt(seed_part + example_part), df), rel=1e-7)
    assert result.test.p > 0.1 and with_examples.verdict == NO_GAIN


def test_without_complete_example_evidence_the_test_is_seed_only():
    # Catches: using evidence of some seeds only (the example part would then describe other pairs than
    # the seed part), or crashing on old records without evidence.
    rng = np.random.default_rng(2)
    n = 100
    none_bits, candidate_bits = rng.random((4, n)) < 0.5, rng.random((4, n)) < 0.6
    none_values, none_examples = _bits_values(none_bits)
    values, examples = _bits_values(candidate_bits)
    data = {"none": none_values, "trial 1": values}
    seed_only = decide(data, "none", SEEDS, n).candidates[0].test
    del examples[2]  # one run of the candidate did not report its examples
    assert spreads_of(data, {"none": none_examples, "trial 1": examples}, "none", SEEDS, n) == {}
    assert spreads_of(data, {}, "none", SEEDS, n) == {}  # an old record: no evidence at all
    short = {seed: bits[:-1] for seed, bits in none_examples.items()}  # evidence of another split's size
    assert spreads_of(data, {"none": short, "trial 1": _bits_values(candidate_bits)[1]}, "none", SEEDS, n) == {}
    test = decide(data, "none", SEEDS, n, spreads={}).candidates[0].test
    assert test == seed_only and test.se_kind == "seeds" and test.se_example is None and test.df == 3
    # a failed run (no value) is no missing evidence: the pairs are the seeds both finished
    del data["trial 1"][2], examples
    full = _bits_values(candidate_bits)[1]
    assert set(spreads_of(data, {"none": none_examples, "trial 1": full}, "none", SEEDS, n)) == {"trial 1"}


def test_the_example_part_is_never_negative():
    # Each seed flips a different example: the example means are no more spread than the residual says,
    # MS_example < MS_residual. Catches an SE that subtracts without the floor at 0 (an SE below the
    # seed-only one, a test less strict than the rule without evidence).
    n = 50
    none_bits = np.zeros((4, n), dtype=bool)
    candidate_bits = none_bits.copy()
    for index in range(4):
        candidate_bits[index, [index, 10 + index, 20 + index][: index % 3 + 1]] = True
    none_values, none_examples = _bits_values(none_bits)
    values, examples = _bits_values(candidate_bits)
    data = {"none": none_values, "trial 1": values}
    spread = spreads_of(data, {"none": none_examples, "trial 1": examples}, "none", SEEDS, n)["trial 1"]
    assert spread.ms_example < spread.ms_residual
    test = decide(data, "none", SEEDS, n, spreads={"trial 1": spread}).candidates[0].test
    seed_only = decide(data, "none", SEEDS, n).candidates[0].test
    assert test.se_example == 0.0 and test.se == pytest.approx(seed_only.se) and test.p == pytest.approx(seed_only.p)
    assert test.df == 3


@pytest.mark.parametrize("n", [1, 7, 8, 9, 500, 5000])
def test_per_example_correctness_encoding_round_trips_compactly(n):
    bits = np.random.default_rng(n).random(n) < 0.6
    text = encode_correct(bits)
    assert np.array_equal(decode_correct(text), bits)
    assert np.array_equal(decode_correct(encode_correct(torch.from_numpy(bits))), bits)
    assert len(text) <= len(str(n)) + 1 + 2 * math.ceil(n / 8)  # 5000 examples: 1255 characters
    if n == 8:  # the documented layout: count, then the bits most significant first
        assert encode_correct([True, False, False, False, False, False, False, True]) == "8:81"
    with pytest.raises(ValueError, match="hex digits"):
        decode_correct(text + "00")
    with pytest.raises(ValueError, match="count"):
        decode_correct(text.partition(":")[2])


def test_run_spec_reports_examples_only_when_asked():
    spec = RunSpec(role="calibration", label="x")
    assert spec.report_examples is False  # trials and calibration runs report exactly what they did
    config = spec.as_config()
    del config["_run"]["report_examples"]  # a config written before the field existed still loads
    assert RunSpec.of(config) == spec


def test_a_finished_run_reports_which_validation_examples_it_got_right(monkeypatch):
    """End to end without Ray: the real `TuneReporter` in a real (tiny, 2-epoch) training run validating
    on a carved confirm part; Tune's report is captured. Catches: bits of another split or order, bits
    of a model other than the one validated (their mean must be that epoch's val_accuracy), a report
    on every epoch, and a run that did not ask reporting them."""
    from ray import tune

    from autoaug.search.stages import CollectRuns
    from autoaug.search.trainable import EXAMPLES_KEY, TrialSettings, TuneReporter
    from autoaug.trainers.train import run_training

    reports = []
    monkeypatch.setattr(tune, "report", lambda report, **_: reports.append(report))
    task = PreparedTask.build(make_shapes_vqa(seed=0, train_size=32, val_size=40, test_size=8)).with_confirm_split(0.5)
    settings = TrialSettings(search_space=None, seed=0, max_epochs=2, report_epochs=())
    for asked in (True, False):
        run_training(prepared=task, policy="none", seed=1, max_epochs=2, accelerator="cpu", evaluate=False,
                     val_split=CONFIRM_SPLIT, callbacks=[TuneReporter(settings, report_examples=asked)])
    asked_report, plain_report = reports  # report_epochs=(): one report, at the end
    bits = decode_correct(asked_report[EXAMPLES_KEY])
    assert len(bits) == len(task.splits[CONFIRM_SPLIT]) < len(task.data.split("val"))
    assert bits.mean() == pytest.approx(asked_report["val_accuracy"], abs=1e-6)
    assert EXAMPLES_KEY not in plain_report and all(EXAMPLES_KEY not in epoch for epoch in asked_report["history"])
    # the driver side: the run's outcome exposes the bits
    spec = RunSpec(role="confirmation", label="confirm none seed=1", seed=1, validate_on=CONFIRM_SPLIT, report_examples=True)

    class Trial:
        config = spec.as_config()

    collect = CollectRuns()
    collect.on_trial_result(0, [], Trial(), asked_report)
    collect.on_trial_complete(0, [], Trial())
    outcome = collect.outcomes[spec.label]
    assert outcome.final_examples == asked_report[EXAMPLES_KEY] and outcome.final == asked_report["val_accuracy"]
