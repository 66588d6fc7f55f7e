"""The screen (`autoaug.search.screen`): every op alone, paired against none; which ops go on."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from autoaug.policy import Policy
from autoaug.search.screen import (MIN_SURVIVORS, best_levels, difference_se, judge_screen, op_of, restricted,
                                   screen_points,
                                   screenable)
from autoaug.search.space import load_space, used_ops


@pytest.fixture(scope="module")
def space():
    return load_space("vlm_default")


def test_each_screen_point_builds_a_policy_of_its_op_alone_clearly_applied(space):
    points = screen_points(space)
    # every op at two levels, keyed op (mid) and op@top
    assert sorted(points) == sorted([*space.model.ops, *(f"{op}@top" for op in space.model.ops)])
    for key, params in points.items():
        op = op_of(key)
        assert used_ops(space.model, params) == [op]
        policy = Policy.from_dict(space.policy_data(params, name=f"screen {key}"))
        (entry,) = policy.config.entries
        low_p, high_p = space.model.sampling_ranges(op).p
        low_m, high_m = space.model.sampling_ranges(op).magnitude
        # highest p; the middle magnitude and the top of the range (a screen at the low end would call
        # every op harmless; one at mid range only missed an op that helps only when strong)
        expected = high_m if key.endswith("@top") else (low_m + high_m) / 2
        assert entry.p == pytest.approx(high_p) and entry.magnitude == pytest.approx(expected)
        assert entry.schedule.kind == "constant"
        assert policy.config.clean_fraction == pytest.approx(space.model.clean_fraction[0])


def test_a_level_equal_to_an_earlier_one_is_screened_once():
    from autoaug.search.space import SearchSpace

    space = load_space("vlm_default")
    ops = dict(list(space.model.ops.items())[:2])
    first = next(iter(ops))
    ops[first] = ops[first].model_copy(update={"magnitude": (0.3, 0.3)})
    narrow = SearchSpace(space.model.model_copy(update={"ops": ops}), space.source)
    assert sorted(screen_points(narrow)) == sorted([first, *list(ops)[1:], f"{list(ops)[1]}@top"])


def test_an_op_is_judged_on_its_better_level():
    best, levels = best_levels({"a": 0.60, "a@top": 0.66, "b": 0.62, "b@top": None, "c@top": None, "c": None})
    # wrong implementations caught: judging on the mid level only (a: 0.60), or letting a failed level
    # hide the other (b: None), or inventing a value for an op whose every level failed
    assert best == {"a": 0.66, "b": 0.62, "c": None}
    assert levels["a"] == {"mid": 0.60, "top": 0.66}


def test_a_screen_point_is_what_a_trial_of_the_study_records(space):
    """Enqueued into the study, the point is exactly the trial's params (none asked beyond them), so
    the sampler learns from the screen as from any trial; the op order of the trial does not matter."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    points = screen_points(space)
    for params in points.values():
        study.enqueue_trial(params)
    for key, params in points.items():
        trial = study.ask()
        space.suggest(trial)
        assert used_ops(space.model, trial.params) == [op_of(key)]
        assert {k: v for k, v in trial.params.items() if not k.endswith(".use")} == \
            {k: v for k, v in params.items() if not k.endswith(".use")}
        study.tell(trial, 0.5)


def test_survivors_drop_ops_clearly_below_none_and_keep_at_most_half():
    n_val, none = 500, 0.60
    tolerance = difference_se(none, n_val)
    assert tolerance == pytest.approx(math.sqrt(2 * 0.6 * 0.4 / 500))
    values = {"a": 0.62, "b": 0.605, "c": none - 0.9 * tolerance, "d": none - 1.1 * tolerance,
              "e": 0.50, "f": 0.61}
    result = judge_screen(values, none, n_val)
    # half of 6 is 3: the best three go on (a wrong "keep everything above the tolerance" keeps c too)
    assert result.survivors == ["a", "b", "f"]
    # with more room, c (within the tolerance) goes on and d (beyond it) does not: a wrong sign or a
    # tolerance in SD of one accuracy instead of a difference flips one of them
    many = {**values, **{f"x{i}": 0.40 for i in range(6)}}
    result = judge_screen(many, none, n_val)
    assert "c" in result.survivors and "d" not in result.survivors and "e" not in result.survivors


def test_the_tolerance_is_the_noise_of_the_data_not_a_constant():
    """0.03 below none is noise on 100 validation examples (SE of a difference 0.069) and clearly
    harmful on 100 000 (0.0022): the same op goes on in the first case only."""
    values = {"a": 0.57, "b": 0.40, "c": 0.40, "d": 0.40, "e": 0.40, "f": 0.40, "g": 0.40, "h": 0.40}
    assert "a" in judge_screen(values, 0.60, 100).survivors
    large = judge_screen({**values, "b": 0.61, "c": 0.62, "d": 0.63}, 0.60, 100_000)
    assert "a" not in large.survivors and large.survivors == ["b", "c", "d"]


def test_failed_screen_trials_go_on_unjudged_and_the_floor_keeps_the_best_few():
    result = judge_screen({"a": None, "b": 0.1, "c": 0.2, "d": 0.3, "e": 0.05}, 0.60, 1000)
    # a failed op goes on; all measured ops far below none: the best MIN_SURVIVORS still go on (the
    # search needs something to combine), the worst does not
    assert MIN_SURVIVORS == 3 and result.survivors == ["a", "b", "c", "d"]


def test_the_restricted_space_asks_only_about_survivors(space):
    survivors = ["pixel_translate", "pixel_random_resized_crop", "vision_random_mask"]
    small = restricted(space, survivors)
    assert sorted(small.model.ops) == sorted(survivors) and small.model.entries.max == 3
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        small.suggest(trial)
        assert set(used_ops(space.model, trial.params)) <= set(survivors)
        # names are the full space's: a policy built by the full space reads the same params
        Policy.from_dict(space.policy_data(trial.params))
        study.tell(trial, 0.5)


def test_spaces_the_screen_cannot_split_say_why():
    assert screenable(load_space("vlm_default")) is None
    assert "randaugment" in screenable(load_space("randaugment"))


# ---------------------------------------------------------------------- the stage, in a real search
@pytest.mark.slow
def test_a_search_screens_every_op_alone_then_searches_only_the_survivors(tmp_path):
    """Baselines, then one full-length trial per op (enqueued, alone, as `screen_points` says), judged
    against none; the sampler's --trials come on top and use only the survivors; a resume runs nothing
    of the screen again."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import search_request
    from optuna.trial import TrialState

    from autoaug.search.controller import run_search
    from autoaug.search.screen import SCREEN_ATTR, SCREEN_RECORD_ATTR
    from autoaug.search.record_schema import BASELINE_ATTR
    from autoaug.storage import optuna_storage, resolve

    # 8 ops of every stage and modality (16 screen trials; vlm_default's 20 ops took 72 s of the suite)
    kept = ("pixel_color_jitter", "pixel_translate", "vision_token_dropout", "text_token_dropout", "text_mask",
            "vision_block_mask", "embedding_noise", "mergemix")
    default = Path(__file__).resolve().parents[1] / "search_spaces" / "vlm_default.yaml"
    lines = [line for line in default.read_text().splitlines()
             if not line.startswith("  ") or line.split(":")[0].strip() in kept]
    space_file = tmp_path / "eight_ops.yaml"
    space_file.write_text("\n".join(lines).replace("name: vlm_default", "name: eight_ops") + "\n")
    request = search_request(tmp_path / "runs", "screened", trials=3, max_epochs=2, baselines=True, screen=True,
                             space=str(space_file), task_options={"train_size": 48, "val_size": 64, "test_size": 32})
    result = run_search(request)
    study = optuna.load_study(study_name="screened", storage=optuna_storage(resolve(request.workdir).optuna_url))
    trials = study.get_trials(deepcopy=False)
    screened = [trial for trial in trials if SCREEN_ATTR in trial.user_attrs]
    searched = [trial for trial in trials if SCREEN_ATTR not in trial.user_attrs and BASELINE_ATTR not in trial.user_attrs]
    space = load_space(str(space_file))
    assert len(space.model.ops) == 8
    assert sorted(trial.user_attrs[SCREEN_ATTR] for trial in screened) == sorted(screen_points(space))
    for trial in screened:
        assert trial.state == TrialState.COMPLETE
        assert used_ops(space.model, trial.params) == [op_of(trial.user_attrs[SCREEN_ATTR])]
    record = study.user_attrs[SCREEN_RECORD_ATTR]
    values = {trial.user_attrs[SCREEN_ATTR]: trial.values[0] for trial in screened}
    for row in record["ops"]:  # each op judged on its better level, both levels kept in the record
        assert row["levels"] == pytest.approx({"mid": values[row["op"]], "top": values[f"{row['op']}@top"]})
        assert row["val_accuracy"] == pytest.approx(max(row["levels"].values()))
    assert result["screen"] == record and 3 <= len(record["survivors"]) <= 4  # at most the best half, at least 3
    assert len(searched) == 3 and all(trial.state == TrialState.COMPLETE for trial in searched)
    for trial in searched:  # the screen's dropped ops are never asked about again
        assert set(used_ops(space.model, trial.params)) <= set(record["survivors"])
    # the parent run names the search's answer and its score; selection's maximum is named as such
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=result["tracking_uri"])
    (parent,) = [run for run in client.search_runs([result["mlflow_experiment_id"]], max_results=1000)
                 if run.data.tags.get("autoaug_role") == "search"]
    assert parent.data.tags["autoaug_result"] == result["result"]["policy"]
    assert parent.data.metrics["result_val_accuracy"] == pytest.approx(result["result"]["value"])
    assert "best_val_accuracy" not in parent.data.metrics
    assert parent.data.metrics["best_single_seed_val_accuracy"] == pytest.approx(result["best_value"])
    # every finished trial, baselines included, says how much its model leans on each modality
    reliance = result["modality_reliance"]
    assert {"none", "preset moderate"} <= set(reliance) and all(f"trial {t.number}" in reliance for t in searched)
    for row in reliance.values():
        assert set(row) == {"val_accuracy", "val_accuracy_image_blanked", "val_accuracy_text_blanked"}
        assert all(0.0 <= value <= 1.0 for value in row.values())
    again = run_search(request)
    assert len(study.get_trials(deepcopy=False)) == len(trials) and again["screen"] == record
