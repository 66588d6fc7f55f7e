"""The stages around a search's trials: calibration, confirmation, the export they lead to, and the
common random numbers they rely on.

Pure decisions (the confirmation's arithmetic, which trials may be exported; calibration's are in
tests/test_calibration.py) are tested on constructed inputs whose answers are computed by hand; the machinery
(Ray Tune runs of the real trainable, searches on user data through the CLI) on tiny real data.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from optuna.trial import TrialState
from PIL import Image

from autoaug.cli import main
from autoaug.policy import Policy
from autoaug.search.confirmation import Candidate, choose_candidates, confirmation_seeds, judge
from autoaug.search.study import best_trial
from autoaug.search.record_schema import BASELINE_ATTR, POLICY_ATTR, STATE_ATTR
from autoaug.search.stages import RunOutcome
from autoaug.search.trainable import RunSpec
from autoaug.trainers.data import to_batch
from autoaug.trainers.prepared import QUESTION_ONLY_GREY, PreparedTask
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from conftest import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
SMALL = {"train_size": 48, "val_size": 32, "test_size": 32}


# ====================================================================== confirmation arithmetic
def _candidates(*names: str) -> list[Candidate]:
    return [Candidate(name, "none" if name == "none" else "searched", {"entries": [], "name": name}) for name in names]


def test_judge_records_the_paired_test_holm_and_the_rule():
    """The record keeps its keys (candidates, winner, winner_trial, winner_policy, verdict, seeds) and adds
    p-values, adjusted p-values and the rule; the decision itself is pinned in tests/test_verdict.py."""
    from scipy import stats

    seeds = [10, 11, 12, 13]
    values = {
        "none": {10: 0.50, 11: 0.60, 12: 0.55, 13: 0.58},
        "trial 1": {10: 0.53, 11: 0.62, 12: 0.585, 13: 0.61},  # +0.03 +0.02 +0.035 +0.03: consistent
        "trial 2": {10: 0.65, 11: 0.55, 12: 0.62, 13: 0.58},  # +0.15 -0.05 +0.07 0: larger mean, too noisy
    }
    record = judge(_candidates("trial 1", "trial 2", "none"), values, seeds, n_eval=500)
    rows = {row["name"]: row for row in record["candidates"]}
    diffs, noisy = [0.03, 0.02, 0.035, 0.03], [0.15, -0.05, 0.07, 0.0]
    p1 = stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue
    p2 = stats.ttest_1samp(noisy, 0.0, alternative="greater").pvalue
    assert rows["trial 1"]["diff_vs_none"] == pytest.approx(statistics.fmean(diffs), abs=1e-6)
    assert rows["trial 1"]["diff_se"] == pytest.approx(statistics.stdev(diffs) / 2, abs=1e-6)
    assert rows["trial 1"]["mean"] == pytest.approx(statistics.fmean([0.53, 0.62, 0.585, 0.61]), abs=1e-6)
    assert rows["trial 1"]["p_value"] == pytest.approx(p1, rel=1e-3)
    assert rows["trial 2"]["p_value"] == pytest.approx(p2, rel=1e-3)
    assert rows["trial 1"]["p_adjusted"] == pytest.approx(2 * p1, rel=1e-3)  # the smaller of two: x2
    assert rows["trial 2"]["p_adjusted"] == pytest.approx(max(2 * p1, p2), rel=1e-3)
    assert rows["trial 1"]["beats_none"] and not rows["trial 2"]["beats_none"]
    assert rows["trial 2"]["mean"] > rows["trial 1"]["mean"]  # the higher mean alone does not win
    assert record["winner"] == "trial 1" and record["verdict"] == "improves" and record["winner_trial"] is None
    assert record["winner_policy"]["name"] == "trial 1" and record["seeds"] == seeds
    assert record["min_effect"] == 0.005 and "holm correction" in record["rule"]
    assert record["split"] == "val" and record["n_eval"] == 500
    assert record["sd_floor"] == pytest.approx(math.sqrt(2) / 500, abs=1e-6)


def test_judge_failed_runs_give_inconclusive_and_export_none():
    seeds = [10, 11, 12]
    values = {
        "none": {10: 0.50, 11: 0.60},  # one none run failed (the old rule said no-gain)
        "trial 1": {10: 0.49, 11: 0.58, 12: 0.56},
        "trial 2": {10: 0.70, 11: 0.75},
    }
    record = judge(_candidates("trial 1", "trial 2", "none"), values, seeds, n_eval=500)
    rows = {row["name"]: row for row in record["candidates"]}
    assert record["verdict"] == "inconclusive" and record["winner"] == "none" and record["winner_trial"] is None
    assert record["winner_policy"]["name"] == "none" and "none runs failed" in record["verdict_reason"]
    assert not rows["trial 2"]["beats_none"] and rows["trial 2"]["note"].startswith("2 of 3 runs finished")
    assert rows["none"]["diff_vs_none"] == 0.0
    # none complete, nothing helps: no-gain
    values["none"][12] = 0.55
    values["trial 2"] = {10: 0.45, 11: 0.55, 12: 0.50}
    record = judge(_candidates("trial 1", "trial 2", "none"), values, seeds, n_eval=500)
    assert record["verdict"] == "no-gain" and record["winner"] == "none"


def test_judge_uses_example_level_evidence_where_every_paired_run_has_it_and_records_both_parts():
    """A candidate whose runs (and none's) all reported per-example correctness is tested with the
    combined SE; one with a run lacking it falls back to the seed-only SE. Catches: evidence used for
    some runs only, the parts not recorded, a row whose diff_se is not the SE its test used."""
    from autoaug.search.verdict import example_spread, paired_test

    rng = np.random.default_rng(3)
    seeds, n = [10, 11, 12, 13], 200
    bits = {"none": rng.random((4, n)) < 0.6}
    bits["trial 1"] = bits["none"] | (rng.random(n) < 0.08)  # right on a few more examples, the same on every seed
    bits["trial 2"] = rng.random((4, n)) < 0.62
    values = {name: {seed: float(matrix[index].mean()) for index, seed in enumerate(seeds)} for name, matrix in bits.items()}
    examples = {name: {seed: matrix[index] for index, seed in enumerate(seeds)} for name, matrix in bits.items()}
    del examples["trial 2"][12]  # an old run without evidence
    record = judge(_candidates("trial 1", "trial 2", "none"), values, seeds, n_eval=n, examples=examples)
    rows = {row["name"]: row for row in record["candidates"]}
    diffs = [values["trial 1"][seed] - values["none"][seed] for seed in seeds]
    expected = paired_test(diffs, n, example_spread(bits["trial 1"], bits["none"]))
    assert rows["trial 1"]["se_kind"] == "seeds+examples" and rows["trial 2"]["se_kind"] == "seeds"
    assert rows["trial 1"]["diff_se_examples"] == pytest.approx(expected.se_example, abs=1e-6)
    assert expected.se_example > 0.5 * expected.se_seed  # the example part matters in this case
    assert rows["trial 1"]["diff_se_seeds"] == pytest.approx(expected.se_seed, abs=1e-6)
    assert rows["trial 1"]["diff_se"] == pytest.approx(math.hypot(rows["trial 1"]["diff_se_seeds"],
                                                                  rows["trial 1"]["diff_se_examples"]), abs=2e-6)
    assert rows["trial 1"]["df"] == pytest.approx(expected.df, abs=0.01)
    assert rows["trial 2"]["diff_se_examples"] is None and rows["trial 2"]["df"] == 3
    assert rows["none"]["se_kind"] is None
    assert "MS_example" in record["rule"]


def test_presets_join_the_confirmation_as_an_extra_candidate_ranked_with_the_trials_or_not_at_all():
    # study values: trial 2 0.70, trial 3 0.65 (trial 1 repeats its policy), preset conservative 0.64
    study = _study_with_trials()

    def names(top_k, presets):
        return [candidate.name for candidate in choose_candidates(study, top_k, presets)]
    assert names(2, "extra") == ["trial 2", "trial 3", "none", "preset conservative"]
    # ranked: a preset takes a place only by its search value (catches appending it regardless)
    assert names(2, "ranked") == ["trial 2", "trial 3", "none"]
    assert names(3, "ranked") == ["trial 2", "trial 3", "preset conservative", "none"]
    assert names(3, "off") == ["trial 2", "trial 3", "none"]
    with pytest.raises(ValueError, match="presets"):
        choose_candidates(study, 1, "yes")


def test_confirmation_seeds_are_fresh():
    assert confirmation_seeds(0, 3) == [10_000, 10_001, 10_002]
    assert not set(confirmation_seeds(0, 5)) & set(range(100))  # no seed a search or a user picks by habit


# ====================================================================== which trials may be exported / confirmed
def _study_with_trials() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    policy = lambda name: {**Policy.load("moderate").to_dict(), "name": name, "seed": 0}  # noqa: E731

    def add(value, state, **attrs):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[value],
                                                  user_attrs={STATE_ATTR: state, **attrs}))
    add(0.90, "pruned", **{POLICY_ATTR: policy("stopped early")})  # 0: stopped early by ASHA at a lucky epoch
    add(0.60, "complete", **{POLICY_ATTR: policy("a")})  # 1
    add(0.70, "complete", **{POLICY_ATTR: {**policy("b"), "clean_fraction": 0.2}})  # 2
    add(0.65, "complete", **{POLICY_ATTR: {**policy("c"), "name": "same as a", "seed": 3}})  # 3: a's policy again
    add(0.62, "complete", **{BASELINE_ATTR: "none", POLICY_ATTR: Policy.load("none").to_dict()})  # 4
    add(0.64, "complete", **{BASELINE_ATTR: "conservative", POLICY_ATTR: Policy.load("conservative").to_dict()})  # 5
    add(0.61, "complete", **{BASELINE_ATTR: "aggressive", POLICY_ATTR: Policy.load("aggressive").to_dict()})  # 6
    return study


def test_an_early_stopped_trial_is_never_exported_or_confirmed():
    study = _study_with_trials()
    assert best_trial(study).number == 2  # not trial 0, whose 0.90 was an early rung's value
    names = [candidate.name for candidate in choose_candidates(study, top_k=3)]
    # top-3 distinct full-length searched policies (trial 1 repeats trial 3's policy with a lower value, so
    # only two distinct ones exist), none, and the best preset
    assert names == ["trial 2", "trial 3", "none", "preset conservative"]
    assert all("seed" not in candidate.policy for candidate in choose_candidates(study, top_k=3))


# ====================================================================== the prepared task
def test_prepared_batches_equal_the_collated_examples_and_order_depends_on_seed_and_epoch_only():
    task = make_shapes_vqa(seed=0, **SMALL)
    prepared = PreparedTask.build(task)
    (batch,) = list(prepared.batches("val", 64))
    reference = to_batch(task.val, prepared.tokenizer, task.num_classes)
    for name in ("images", "text_ids", "text_mask", "text_special", "labels"):
        assert torch.equal(getattr(batch, name), getattr(reference, name)), name

    def order(seed, epoch):
        return torch.cat([b.labels.argmax(-1) * 10_000 + b.text_ids.sum(-1) for b in
                          prepared.batches("train", 16, shuffle=True, seed=seed, epoch=lambda: epoch)])
    assert torch.equal(order(0, 3), order(0, 3))
    assert not torch.equal(order(0, 3), order(0, 4)) and not torch.equal(order(0, 3), order(1, 3))
    blind = prepared.without_images()
    assert blind.question_only and torch.all(blind.splits["train"].images == QUESTION_ONLY_GREY)
    assert torch.equal(blind.splits["train"].text_ids, prepared.splits["train"].text_ids)
    assert not torch.all(prepared.splits["train"].images == QUESTION_ONLY_GREY)  # the original is untouched


# ====================================================================== the machinery, for real

@pytest.fixture(scope="module")
def ray_context(tmp_path_factory):
    """A SearchContext on a real local Ray, for running explicit runs of the real trainable."""
    import ray

    from autoaug.search.cluster import start_ray
    from autoaug.search.controller import SearchRequest
    from autoaug.search.stages import SearchContext
    from autoaug.search.trainable import TrialSettings
    from autoaug.storage import resolve

    workdir = tmp_path_factory.mktemp("stages")
    request = SearchRequest(space="vlm_default", name="stages", task="shapes-vqa", workdir=str(workdir / "runs"),
                            max_epochs=3, task_options=dict(SMALL))
    request.validate()
    locations = resolve(request.workdir, None, None)
    prepared = PreparedTask.build(make_shapes_vqa(seed=0, **SMALL))
    settings = TrialSettings(search_space=None, seed=0, max_epochs=3, learning_rate=3e-3, batch_size=16)
    start_ray(None, None)
    yield SearchContext(request, None, None, None, settings, prepared, locations, None, "", "")
    ray.shutdown()


@pytest.mark.slow
def test_common_random_numbers_same_policy_same_seed_same_curve(ray_context):
    """Two runs with the same policy and seed — on two slots, one of them a reused worker — give the
    same validation curve, bit for bit; another seed gives another curve."""
    from autoaug.search.stages import run_specs

    specs = [RunSpec(role="test", label=label, policy="moderate", seed=seed)
             for label, seed in (("a", 5), ("b", 5), ("c", 5), ("other seed", 6))]
    outcomes = run_specs(ray_context, "crn", specs)
    assert all(outcome.state == "complete" for outcome in outcomes.values()), outcomes
    curves = {label: outcome.curve() for label, outcome in outcomes.items()}
    assert len(curves["a"]) == 3
    assert curves["a"] == curves["b"] == curves["c"]
    losses = {label: [r["val_loss"] for r in outcome.results] for label, outcome in outcomes.items()}
    assert losses["a"] == losses["b"] == losses["c"]
    assert losses["other seed"] != losses["a"]
    # the trial reports where its time went, measured from inside
    first = outcomes["a"].results[0]
    assert first["startup_seconds"] > 0 and first["epoch_seconds"] > 0


# ---------------------------------------------------------------------- user data through the CLI
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
QUESTIONS = ("what colour is the picture?", "which colour fills the image?", "name the colour shown.")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_dataset(path: Path, *, image_signal: bool, seed: int = 0, sizes=(96, 64, 64)) -> Path:
    """A Hugging Face-layout Parquet set. With ``image_signal`` the answer is the image's colour and the
    question says nothing about it; without, the images are noise and the question names the answer."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "text": [], "label": [], "split": []}
    names = list(COLOURS)
    for split, size in zip(("train", "val", "test"), sizes):
        for index in range(size):
            label = names[index % len(names)]
            if image_signal:
                pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                text = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
            else:
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                text = f"the answer is {label}."
            rows["image"].append({"bytes": _png(pixels), "path": None})
            rows["text"].append(text)
            rows["label"].append(label)
            rows["split"].append(split)
    pq.write_table(pa.table(rows), path)
    return path


CALIBRATION_ARGS = ["--space", "vlm_default", "--trials", "1", "--max-epochs", "6", "--learning-rates", "3e-3",
                    "--no-baselines", "--no-confirm", "--json"]


@pytest.mark.slow
def test_calibration_refuses_data_whose_images_carry_no_signal_and_runs_on_data_that_needs_them(
        tmp_path, capsys, harmful_search):
    blind = _write_dataset(tmp_path / "blind.parquet", image_signal=False)
    workdir = harmful_search.workdir  # a workdir whose stores exist: creating MLflow's tables costs seconds
    code, out, err = run_cli(["search", "--data", str(blind), "--name", "blind", "--workdir", str(workdir),
                           *CALIBRATION_ARGS], capsys)
    assert code == 1, err
    line = [line for line in err.splitlines() if line.strip()]
    assert any("does not learn from the images" in l for l in line), err
    assert "Traceback" not in err and "question-only" in err and "--force" in err
    study = optuna.load_study(study_name="blind", storage=f"sqlite:///{workdir / 'optuna.db'}")
    record = study.user_attrs["calibration"]
    assert record["uses_images"] is False
    assert record["image_margin"] < record["image_margin_needed"]
    assert not [t for t in study.trials if BASELINE_ATTR not in t.user_attrs]  # no trial budget spent

    # Data whose answer is in the images: the module's calibrated search (`harmful_search`: the same
    # calibration flags, on such data) passed the image check and ran its trials after it. One search
    # serves both tests: a second search only for this check cost a calibration and a search stage.
    result = harmful_search.result
    calibration = result["calibration"]
    assert calibration["uses_images"] is True
    assert calibration["none_val_accuracy"] - calibration["question_only_val_accuracy"] >= calibration["image_margin_needed"]
    assert calibration["learning_rate"] == 3e-3 and 1 <= calibration["trial_epochs"] <= 6
    # the real runs report train accuracy each epoch: the regime is decided on it and the record keeps it
    assert len(calibration["curves"]["none lr=0.003"]["train_accuracy"]) == 6 and calibration["reaches_regime"]
    assert result["trial_epochs"] == calibration["trial_epochs"]
    assert result["n_complete"] + result["n_pruned"] == harmful_search.trials


HARMFUL_SPACE = """\
schema_version: 1
kind: policy
name: harmful
description: One op that destroys what the colour task needs (solarizing turns colours into others), always, at full strength.
entries: {min: 1, max: 1}
ops:
  pixel_solarize: {p: [0.95, 1.0], magnitude: [0.95, 1.0]}
schedules: [constant]
clean_fraction: [0.0, 0.05]
augmented_loss_weight: [1.0, 1.0]
balance: {vision: 1.0, text: 1.0, cross: 1.0}
"""


@pytest.fixture(scope="module")
def harmful_search(tmp_path_factory):
    """One real search through the CLI, every stage on: calibration (6 epochs, one learning rate) on data
    whose answer is in the images, a space whose only op destroys that answer, 2 trials, the default
    race and a 2-seed confirmation of the top candidate. Read by the calibration test (the image check
    passed, the trials ran) and the confirmation test (none is exported)."""
    folder = tmp_path_factory.mktemp("harmful")
    space = folder / "harmful.yaml"
    space.write_text(HARMFUL_SPACE)
    data = _write_dataset(folder / "signal.parquet", image_signal=True)
    workdir = folder / "runs"
    trials = 2
    # run_cli's capsys is per test: the module's search captures stdout and stderr the same way (the
    # CLI's consoles write to whatever sys.stdout / sys.stderr are when they print)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as caught:
        main(["search", "--space", str(space), "--data", str(data), "--name", "harmful", "--workdir", str(workdir),
              "--trials", str(trials), "--max-epochs", "6", "--learning-rates", "3e-3", "--no-baselines",
              "--confirm-top-k", "1", "--confirm-seeds", "2", "--json"])
    assert caught.value.code == 0, err.getvalue()
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    return SimpleNamespace(workdir=workdir, result=result, err=err.getvalue(), trials=trials)


@pytest.mark.slow
def test_confirmation_exports_none_when_the_space_only_holds_harmful_ops(harmful_search, tmp_path, capsys):
    result, err, workdir = harmful_search.result, harmful_search.err, harmful_search.workdir
    confirmation = result["confirmation"]
    assert confirmation["verdict"] == "no-gain" and confirmation["winner"] == "none"
    rows = {row["name"]: row for row in confirmation["candidates"]}
    assert set(rows) == {"none", f"trial {result['best_trial']}"} or len(rows) == 2
    searched = next(row for row in confirmation["candidates"] if row["name"] != "none")
    assert searched["n"] == 2 and searched["diff_vs_none"] < 0 and not searched["beats_none"]
    # the race ran first (its seeds, on the selection part) and the confirmation tested its leader
    race = result["race"]
    assert race["order"][0] == searched["name"] and race["split"] == "val" and race["runs"] == 3 * 3
    assert [len(round_["racing"]) for round_ in race["rounds"]] == [2, 2] and race["candidates"][0]["n"] == 3
    assert "race (9 runs on the selection examples)" in " ".join(err.split())
    # the confirmation runs reported which examples they got right (through Ray), and the test used it
    assert searched["se_kind"] == "seeds+examples" and searched["diff_se_examples"] is not None
    assert "verdict: no-gain" in err and "the exported policy is `none`" in " ".join(err.split())
    exported = Policy.load(result["best_policy_path"])
    assert exported.config.entries == [] and exported.config.provenance.confirmation.verdict == "no-gain"
    assert exported.config.provenance.training.epochs == result["trial_epochs"]
    # autoaug export says it plainly too, and writes the same bytes
    code, _, err = run_cli(["export", "--name", "harmful", "--workdir", str(workdir), "--out", str(tmp_path / "p.yaml")], capsys)
    assert code == 0 and "no-gain" in err
    assert (tmp_path / "p.yaml").read_bytes() == Path(result["best_policy_path"]).read_bytes()
    # the confirmation is its own MLflow child run
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=result["tracking_uri"])
    runs = client.search_runs([result["mlflow_experiment_id"]], filter_string="tags.autoaug_role = 'confirmation'")
    assert len(runs) == 1 and runs[0].data.tags["autoaug_verdict"] == "no-gain"


@pytest.mark.slow
def test_relative_data_and_space_paths_from_another_working_folder(tmp_path, capsys, monkeypatch):
    """Ray runs each trial in its own working folder: workers get the loaded data and the validated
    space from the driver, never a path to re-read (issue: relative paths made every trial fail)."""
    project = tmp_path / "project"
    project.mkdir()
    _write_dataset(project / "colours.parquet", image_signal=True, sizes=(48, 32, 32))
    (project / "space.yaml").write_text(HARMFUL_SPACE.replace("name: harmful", "name: relative"))
    monkeypatch.chdir(project)
    code, out, err = run_cli(["search", "--space", "space.yaml", "--data", "colours.parquet", "--name", "rel",
                           "--trials", "2", "--max-epochs", "2", "--no-calibrate", "--no-confirm", "--no-baselines",
                           "--workdir", "runs", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_failed"] == 0 and result["n_complete"] + result["n_pruned"] == 2
    assert result["best_policy_path"] and Path(result["best_policy_path"]).is_file()


def test_private_optuna_routes_of_the_study_still_exist():
    """`study.fail_stale_trials` writes a RUNNING trial's attributes and state through ``Study._storage``
    and ``FrozenTrial._trial_id`` (Optuna has no public route for a trial whose `Trial` object died
    with its driver): a release that renames them must fail here, not at a user's resume."""
    import optuna
    from optuna.trial import TrialState

    from autoaug.search.record_schema import ERROR_ATTR, STATE_ATTR
    from autoaug.search.record_schema import STALE_REASON
    from autoaug.search.study import fail_stale_trials

    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # left RUNNING, as by a driver killed mid-trial
    assert fail_stale_trials(study) == 1
    states = [(trial.state, trial.user_attrs.get(STATE_ATTR), trial.user_attrs.get(ERROR_ATTR)) for trial in study.trials]
    assert states == [(TrialState.COMPLETE, None, None), (TrialState.FAIL, "failed", STALE_REASON)]
    assert fail_stale_trials(study) == 0


@pytest.mark.parametrize("field, value, problem", [
    ("trials", 0, "expected a positive integer, got 0"),
    ("max_epochs", -1, "expected a positive integer, got -1"),
    ("sampler", "annealing", "'annealing' is not one of tpe, random, cmaes, nsga2, grid"),
    ("cpus_per_trial", 1.5, "expected a fraction in (0, 1] or a whole number, got 1.5"),
    ("confirm_seeds", 1, "expected >= 2 seeds (a standard error needs two), got 1"),
])
def test_a_bad_request_names_the_python_field_it_came_from(field, value, problem):
    """A library user reads the field they set; the CLI shows the flag instead (`ParameterError`)."""
    from autoaug.errors import ParameterError
    from autoaug.search.controller import SearchRequest

    request = SearchRequest(space="vlm_default", name="s", task="shapes-vqa", **{field: value})
    with pytest.raises(ParameterError) as caught:
        request.validate()
    assert (caught.value.parameter, str(caught.value)) == (field, f"{field}: {problem}")
    assert caught.value.flag_message("--" + field.replace("_", "-")) == f"--{field.replace('_', '-')}: {problem}"
