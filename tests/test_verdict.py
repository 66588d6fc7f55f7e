"""The confirmation's decision rule (`autoaug.search.verdict`) and the held-out confirm split.

Expected values are computed here from scipy.stats (t.sf / t.isf) and by hand, never by calling the
code under test. Differences are built as ``mean + scale * Z`` with Z = (-1.5, -0.5, 0.5, 1.5): four
seeds, sample SD of Z = sqrt(5/3), so the t statistic of a candidate is known in closed form.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats

from autoaug.search.verdict import IMPROVES, INCONCLUSIVE, NO_GAIN, Rule, decide, holm, race_step
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
