"""The pure parts of `benchmarks/transfer.py` (no training): what the study recorded, which policies
become candidates and with which proxy score, the paired statistics, Spearman with ties, resuming
from the JSON and the verdict lines. Each test names the wrong implementation it catches."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoaug.policy import PRESETS, Policy
from autoaug.search.record_schema import (BASELINE_ATTR, CALIBRATION_ATTR, CONFIRMATION_ATTR, MAX_EPOCHS_ATTR,
                                          POLICY_ATTR, RACE_ATTR, SCREEN_ATTR, SCREEN_RECORD_ATTR, SEED_ATTR,
                                          STATE_ATTR, TASK_ATTR)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"
spec = importlib.util.spec_from_file_location("transfer_benchmark", SCRIPT)
transfer = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = transfer  # its dataclasses look their module up there
spec.loader.exec_module(transfer)


def one_op(op: str, magnitude: float, seed: int = 0) -> dict:
    return Policy.from_dict({"schema_version": 1, "name": f"{op}-{magnitude}", "seed": seed, "clean_fraction": 0.0,
                             "entries": [{"op": op, "p": 0.5, "magnitude": magnitude}]}).to_dict()


# ====================================================================== what the study recorded
def test_task_identity_of_a_plugin_keeps_its_colon():
    # wrong implementation caught: splitting at the second colon ("task:mypkg.tasks" / "make:{...}")
    assert transfer.parse_task_identity('task:mypkg.tasks:make:{"size": 3}') == ("mypkg.tasks:make", {"size": 3}, None)
    assert transfer.parse_task_identity('task:shapes-vqa:{}') == ("shapes-vqa", {}, None)
    assert transfer.parse_task_identity("data:/srv/d/train.parquet") == (None, {}, "/srv/d/train.parquet")
    with pytest.raises(SystemExit, match="study task"):
        transfer.parse_task_identity("shapes-vqa")


def test_settings_take_the_calibrated_length_not_the_ceiling():
    base = {TASK_ATTR: 'task:shapes-vqa:{"train_size": 60}', MAX_EPOCHS_ATTR: 30, "data_seed": 2, SEED_ATTR: 1}
    calibrated = transfer.settings_of("s", {**base, CALIBRATION_ATTR: {"learning_rate": 3e-3, "trial_epochs": 12},
                                            CONFIRMATION_ATTR: {"learning_rate": 1e-3, "epochs": 8}})
    # wrong implementation caught: the study's max_epochs (calibration's longest length considered) as trial length,
    # or the confirmation's record preferred over the calibration it copied
    assert (calibrated.epochs, calibrated.learning_rate) == (12, 3e-3)
    assert (calibrated.task, calibrated.task_options, calibrated.data_seed, calibrated.search_seed) == \
        ("shapes-vqa", {"train_size": 60}, 2, 1)
    confirmed = transfer.settings_of("s", {**base, CONFIRMATION_ATTR: {"learning_rate": 1e-3, "epochs": 8}})
    assert (confirmed.epochs, confirmed.learning_rate) == (8, 1e-3)
    bare = transfer.settings_of("s", base)
    assert (bare.epochs, bare.learning_rate) == (30, None) and "default" in bare.learning_rate_from


def test_default_seeds_are_none_the_search_used():
    attrs = {SEED_ATTR: 0, CONFIRMATION_ATTR: {"seeds": [10_000, 10_001]},
             RACE_ATTR: {"rounds": [{"seeds": [20_000]}, {"seeds": [20_001, 20_002]}]}}
    used = transfer.seeds_the_search_used(attrs)
    # wrong implementation caught: reading only the search seed (a race seed reused would pair nothing new)
    assert used == {0, 10_000, 10_001, 20_000, 20_001, 20_002}
    assert not used & set(range(transfer.TRANSFER_SEED_BASE, transfer.TRANSFER_SEED_BASE + 50))


def test_default_large_model_is_ten_times_the_proxy():
    from autoaug.trainers.model import TinyVLM, TinyVLMConfig

    def count(**options) -> int:  # shapes-vqa's sizes at its defaults (vocabulary 39, 13 classes, 14 tokens)
        model = TinyVLM(TinyVLMConfig(vocab_size=39, num_classes=13, max_text_length=14, **options))
        return sum(parameter.numel() for parameter in model.parameters())

    # wrong implementation caught: options that widen without deepening (width 256 alone is ~5x)
    assert count(**transfer.LARGE_MODEL_OPTIONS) >= transfer.MIN_PARAMETER_RATIO * count()


# ====================================================================== candidates
def _trial(study, value, attrs, state=TrialState.COMPLETE) -> int:
    study.add_trial(optuna.trial.create_trial(state=state, value=None if state == TrialState.FAIL else value,
                                              user_attrs=attrs))
    return len(study.trials) - 1


@pytest.fixture
def study():
    """A finished search's records: baselines (aggressive failed, randaugment never ran), searched trials
    (one stopped early with the best value, one stopped early in an old study's form, one duplicate
    policy), screen trials at two levels (and a stopped retry), a race whose order differs from the values,
    a confirmation."""
    study = optuna.create_study(direction="maximize")
    for preset, value in (("none", 0.50), ("conservative", 0.52), ("moderate", 0.49), ("trivial", 0.51)):
        _trial(study, value, {BASELINE_ATTR: preset, STATE_ATTR: "complete", POLICY_ATTR: Policy.load(preset).to_dict()})
    _trial(study, None, {BASELINE_ATTR: "aggressive", STATE_ATTR: "failed"}, TrialState.FAIL)
    searched = lambda policy: {STATE_ATTR: "complete", POLICY_ATTR: policy}  # noqa: E731
    ids = {
        "pruned": _trial(study, 0.70, {STATE_ATTR: "pruned", POLICY_ATTR: one_op("pixel_gaussian_blur", 0.5)},
                         TrialState.PRUNED),
        "old_pruned": _trial(study, 0.69, {STATE_ATTR: "pruned", POLICY_ATTR: one_op("modality_dropout", 0.5)}),
        "b": _trial(study, 0.56, searched(one_op("pixel_translate", 0.3))),
        "c": _trial(study, 0.55, searched(one_op("pixel_color_jitter", 0.4))),
        "d": _trial(study, 0.54, searched(one_op("vision_random_mask", 0.2))),
        "b_again": _trial(study, 0.53, searched(one_op("pixel_translate", 0.3, seed=7))),
        "screen_mid": _trial(study, 0.53, {**searched(one_op("pixel_translate", 0.35)), SCREEN_ATTR: "pixel_translate"}),
        "screen_top": _trial(study, 0.52, {**searched(one_op("pixel_translate", 0.6)),
                                           SCREEN_ATTR: "pixel_translate@top"}),
        "screen_bad": _trial(study, 0.45, {**searched(one_op("text_mask", 0.5)), SCREEN_ATTR: "text_mask"}),
        # a later try of the same screen point, stopped early (an old study's form: COMPLETE, state pruned)
        "screen_stopped": _trial(study, 0.53, {STATE_ATTR: "pruned", POLICY_ATTR: one_op("pixel_translate", 0.36),
                                               SCREEN_ATTR: "pixel_translate"}),
    }
    study.set_user_attr(SCREEN_RECORD_ATTR, {"ops": [
        # the mid level is the better one here although its trial number is lower
        {"op": "pixel_translate", "val_accuracy": 0.53, "diff_vs_none": 0.03, "levels": {"mid": 0.53, "top": 0.52}},
        {"op": "text_mask", "val_accuracy": 0.45, "diff_vs_none": -0.05, "levels": {"mid": 0.45}}]})
    d, b = f"trial {ids['d']}", f"trial {ids['b']}"
    study.set_user_attr(RACE_ATTR, {"order": [d, b], "rounds": [{"seeds": [20_000]}], "candidates": [
        {"name": d, "mean_gain": 0.03, "n": 2}, {"name": b, "mean_gain": 0.01, "n": 2}]})
    study.set_user_attr(CONFIRMATION_ATTR, {"verdict": "improves", "winner": d, "winner_trial": ids["d"],
                                            "winner_policy": one_op("vision_random_mask", 0.2, seed=0),
                                            "seeds": [10_000], "candidates": [{"name": d, "search_value": 0.54}]})
    study.ids = ids
    return study


def test_candidates_follow_the_race_and_leave_stopped_trials_out(study):
    ids = study.ids
    candidates = transfer.candidates_of(study, top=2)
    names = [candidate.name for candidate in candidates]
    # wrong implementations caught: a stopped trial taken as a candidate (best value 0.70, or the old study's form);
    # the top-K by search value instead of the race's order (would take trial b and the 0.55 trial c);
    # the duplicate policy trained twice; the confirmed winner listed twice
    assert names == [f"trial {ids['d']}", f"trial {ids['b']}", f"trial {ids['screen_mid']}", "none",
                     *[f"preset {preset}" for preset in PRESETS if preset != "none"]]
    assert candidates[0].roles == ["confirmed", "top 1"] and candidates[1].roles == ["top 2"]
    assert "seed" not in candidates[0].policy  # each large-model run seeds the policy with its own seed


def test_screen_ops_only_helpful_ones_at_their_better_level(study):
    screen = [candidate for candidate in transfer.candidates_of(study, top=1)
              if any(role.startswith("screen op") for role in candidate.roles)]
    # wrong implementations caught: an op whose difference to none is negative (text_mask); the op's top-level
    # trial instead of the level the screen judged it on (mid, 0.53); a later try of that level stopped early
    assert [candidate.trial for candidate in screen] == [study.ids["screen_mid"]]
    assert screen[0].roles == ["screen op pixel_translate (+0.030)"]


def test_every_preset_and_none_are_candidates_whatever_ran(study):
    by_name = {candidate.name: candidate for candidate in transfer.candidates_of(study, top=1)}
    # wrong implementation caught: presets taken only from the baselines that finished (aggressive failed,
    # randaugment never ran): the benchmark must train every preset
    for preset in PRESETS:
        name = "none" if preset == "none" else f"preset {preset}"
        assert transfer.policy_key(by_name[name].policy) == transfer.policy_key(Policy.load(preset).to_dict())
    assert by_name["preset aggressive"].proxy_score is None and by_name["preset randaugment"].proxy_score is None


def test_proxy_scores_are_gains_over_none_and_say_where_from(study):
    by_name = {candidate.name: candidate for candidate in transfer.candidates_of(study, top=2)}
    ids = study.ids
    # wrong implementations caught: the raw search value as a score (0.54 beside gains of 0.03 would rank
    # on another scale); the search value of a raced candidate instead of its race gain
    assert by_name[f"trial {ids['d']}"].proxy_score == pytest.approx(0.03)
    assert by_name[f"trial {ids['d']}"].proxy_source.startswith("race")
    assert by_name[f"trial {ids['screen_mid']}"].proxy_score == pytest.approx(0.03)
    assert by_name[f"trial {ids['screen_mid']}"].proxy_source.startswith("search value")
    assert by_name["preset conservative"].proxy_score == pytest.approx(0.02)
    assert by_name["none"].proxy_score == 0.0


def test_race_ranked_puts_the_unraced_after_in_value_order():
    # wrong implementation caught: dropping the trials the race did not run, or sorting them by name
    assert transfer.race_ranked(["a", "b", "c", "d"], ["c", "a"]) == ["c", "a", "b", "d"]
    assert transfer.race_ranked(["a", "b"], None) == ["a", "b"]


def test_no_confirmed_winner_when_the_verdict_is_not_improves(study):
    record = dict(study.user_attrs[CONFIRMATION_ATTR], verdict="no-gain", winner="none")
    study.set_user_attr(CONFIRMATION_ATTR, record)
    candidates = transfer.candidates_of(study, top=2)
    # wrong implementation caught: the confirmation's winner taken whatever the verdict
    assert not any("confirmed" in candidate.roles for candidate in candidates)
    assert transfer.confirmation_state(study.user_attrs) == "confirmation verdict no-gain: the search exported none"


# ====================================================================== statistics
def test_paired_gain_uses_the_sd_of_the_differences():
    runs = {1: 0.60, 2: 0.70, 3: 0.80, 4: 0.90}  # seed 4 has no none run: it pairs nothing
    none = {1: 0.58, 2: 0.69, 3: 0.77}
    gain = transfer.paired_gain(runs, none)
    # differences 0.02, 0.01, 0.03: mean 0.02, SD 0.01, SE 0.01/sqrt(3). Wrong implementations caught: the
    # unpaired SE sqrt(var_a/n + var_b/n) (~0.08 here), dividing by sqrt(n - 1), counting the unpaired seed
    assert gain["n"] == 3
    assert gain["mean"] == pytest.approx(0.02)
    assert gain["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert gain["z"] == pytest.approx(0.02 / (0.01 / math.sqrt(3)))
    assert transfer.paired_gain({1: 0.6}, {1: 0.5})["se"] is None  # one pair: no SE, no z
    # equal gains whose float differences disagree in the last bit: SE 0, no ratio (not a z of ~1e16)
    equal = transfer.paired_gain({1: 0.1, 2: 0.25}, {1: 0.05, 2: 0.2})
    assert equal["se"] == 0.0 and equal["z"] is None
    assert transfer.paired_gain({1: 0.6}, {2: 0.5})["n"] == 0


def test_spearman_averages_tied_ranks():
    proxy = [0.0, 0.02, 0.02, 0.05, -0.01, None]
    large = [0.0, 0.01, 0.03, 0.02, -0.02, 0.04]  # the last has no proxy score: left out
    # average ranks (2, 3.5, 3.5, 5, 1) and (2, 3, 5, 4, 1): Pearson 8 / sqrt(9.5 * 10). Wrong implementations
    # caught: ordinal ranks for the tie (0.9), the d-squared formula that assumes no ties (0.825), keeping
    # the pair with a missing score
    result = transfer.rank_correlation(proxy, large)
    assert result["n"] == 5
    assert result["rho"] == pytest.approx(8 / math.sqrt(95))
    assert transfer.rank_correlation([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])["rho"] is None  # no ranking on one side
    assert transfer.rank_correlation([1.0, 2.0], [0.1, 0.2])["rho"] is None


def test_table_ignores_runs_of_another_policy_under_the_same_name():
    none = transfer.TransferCandidate("none", Policy.load("none").to_dict(), ["none"])
    trial = transfer.TransferCandidate("trial 3", one_op("pixel_translate", 0.3), ["top 1"])
    run = lambda candidate, seed, accuracy, digest=None: {  # noqa: E731
        "candidate": candidate.name, "policy_digest": digest or candidate.digest, "seed": seed,
        "test_accuracy": accuracy, "robust_accuracy": accuracy - 0.1}
    runs = [run(none, 1, 0.50), run(none, 2, 0.52), run(trial, 1, 0.53), run(trial, 2, 0.56),
            run(trial, 3, 0.99, digest="stale")]
    rows = {row["name"]: row for row in transfer.table_rows([trial, none], runs)}
    # wrong implementation caught: a resumed run of an older policy named "trial 3" counted in its gain
    assert rows["trial 3"]["seeds"] == [1, 2]
    assert rows["trial 3"]["gain"]["mean"] == pytest.approx(0.035)
    assert rows["none"]["gain"]["mean"] == 0.0


def test_verdict_lines():
    row = lambda name, roles, mean, se: {"name": name, "roles": roles,  # noqa: E731
                                         "gain": {"mean": mean, "se": se, "z": mean / se if se else None, "n": 4}}
    lines = transfer.verdict_lines([row("trial 7", ["confirmed", "top 1"], 0.025, 0.01), row("none", ["none"], 0.0, 0.0)],
                                   {"rho": 0.71, "p_value": 0.01, "n": 9}, "unused")
    # wrong implementation caught: the gain itself or the top-1 trial reported instead of the confirmed winner's gain/SE
    assert lines[0].startswith("transfer: the proxy's confirmed winner trial 7 improves the large model by 2.5 SE")
    assert lines[0].endswith("PASS)") and "rank correlation rho = 0.71" in lines[1] and lines[1].endswith("PASS)")
    lines = transfer.verdict_lines([row("trial 2", ["top 1"], 0.05, 0.01)], {"rho": None, "p_value": None, "n": 2},
                                   "confirmation verdict no-gain: the search exported none")
    assert lines[0] == ("transfer: the proxy had no confirmed winner (confirmation verdict no-gain: the search "
                        "exported none)")
    assert "undefined" in lines[1]


# ====================================================================== resuming
def test_pending_jobs_skip_finished_pairs_of_the_same_policy():
    a = transfer.TransferCandidate("trial 1", one_op("pixel_translate", 0.3), ["top 1"])
    b = transfer.TransferCandidate("trial 2", one_op("pixel_color_jitter", 0.3), ["top 2"])
    finished = [{"candidate": "trial 1", "policy_digest": a.digest, "seed": 1},
                {"candidate": "trial 2", "policy_digest": "older-policy", "seed": 1}]
    pending = [(candidate.name, seed) for candidate, seed in transfer.pending_jobs([a, b], [1, 2], finished)]
    # wrong implementations caught: re-running a finished pair; skipping by name alone (trial 2's policy changed)
    assert pending == [("trial 2", 1), ("trial 1", 2), ("trial 2", 2)]


def test_previous_runs_refuse_other_settings(tmp_path):
    path = tmp_path / "transfer.json"
    settings = {"study": "s", "learning_rate": 1e-3, "epochs": 12}
    assert transfer.previous_runs(path, settings) == []
    path.write_text(json.dumps({"settings": settings, "runs": [{"candidate": "none", "seed": 1}]}))
    assert transfer.previous_runs(path, settings) == [{"candidate": "none", "seed": 1}]
    # wrong implementation caught: resuming runs trained at another learning rate into the same pairing
    with pytest.raises(SystemExit, match=r"learning_rate: 0\.001 there, 0\.003 now"):
        transfer.previous_runs(path, {**settings, "learning_rate": 3e-3})
