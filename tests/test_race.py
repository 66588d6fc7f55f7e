"""The selection race (`autoaug.search.race`): rounds, re-ranking, seeds, resume, and what the
confirmation does with its order. The runs are replaced by a table (`run_specs` patched); the race's
real runs are exercised end to end by `tests/test_search_stages.py` (harmful space)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from autoaug.errors import ParameterError
from autoaug.policy import Policy
from autoaug.search import race as race_module
from autoaug.search.confirmation import PRESETS_RANKED, _ranked, confirmation_seeds
from autoaug.search.race import parse_rounds, race_seeds, rerank, run_race
from autoaug.search.record_schema import BASELINE_ATTR, POLICY_ATTR, RACE_ATTR, RACE_RUNS_ATTR, STATE_ATTR
from autoaug.search.stages import RunOutcome


# ====================================================================== rounds
def test_rounds_parse_and_off():
    assert parse_rounds("6x1,3x2") == ((6, 1), (3, 2))
    assert parse_rounds(" 4 x 3 ") == ((4, 3),)
    assert parse_rounds("off") == () and parse_rounds("OFF") == ()


@pytest.mark.parametrize("text, problem", [
    ("6", "expected rounds KEEPxSEEDS"),
    ("6x1;3x2", "expected rounds KEEPxSEEDS"),
    ("1x3", "each round keeps >= 2 candidates for >= 1 seed"),
    ("4x0", "each round keeps >= 2 candidates for >= 1 seed"),
    ("3x1,6x1", "at most as many candidates as the round before"),
])
def test_bad_rounds_name_the_field(text, problem):
    with pytest.raises(ParameterError) as error:
        parse_rounds(text)
    assert str(error.value).startswith("race:") and problem in str(error.value)


def test_race_seeds_are_apart_from_the_search_and_the_confirmation():
    seeds = race_seeds(0, 3)
    assert seeds == [20_000, 20_001, 20_002]
    assert not set(seeds) & set(confirmation_seeds(0, 50)) and not set(seeds) & set(range(1000))
    assert not set(race_seeds(1, 3)) & set(seeds)  # another search seed, other race seeds


# ====================================================================== re-ranking
def test_rerank_by_mean_gain_not_first_or_best_single_seed():
    gains = {"a": [0.05, -0.03, -0.03],  # best single seed, best first seed, but mean -0.0033
             "b": [0.00, 0.01, 0.01],  # mean +0.0067: the race's leader
             "c": []}  # no finished pair: last, whatever its search value
    # wrong implementations caught: ranking by the first (search) seed or by the maximum puts "a" first;
    # dropping the candidates without pairs, or putting them first
    assert rerank(["c", "a", "b"], gains) == ["b", "a", "c"]


def test_rerank_ties_keep_the_search_order():
    assert rerank(["x", "y"], {"x": [0.01], "y": [0.01]}) == ["x", "y"]
    assert rerank(["y", "x"], {"x": [0.01], "y": [0.01]}) == ["y", "x"]


# ====================================================================== the stage, with a table for runs
NONE_BASELINE = 0.60


def _study(values: dict[str, float]) -> optuna.Study:
    """Searched trials ``name → value`` (distinct policies), a `none` baseline at 0.60 and a preset."""
    study = optuna.create_study(direction="maximize")

    def add(value, **attrs):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[value],
                                                  user_attrs={STATE_ATTR: "complete", **attrs}))
    for index, (name, value) in enumerate(values.items()):
        policy = {**Policy.load("moderate").to_dict(), "name": name, "clean_fraction": round(0.01 * index, 2)}
        add(value, **{POLICY_ATTR: policy})
    add(NONE_BASELINE, **{BASELINE_ATTR: "none", POLICY_ATTR: Policy.load("none").to_dict()})
    add(0.61, **{BASELINE_ATTR: "conservative", POLICY_ATTR: Policy.load("conservative").to_dict()})
    return study


class _Client:
    def __init__(self):
        self.runs = []

    def create_run(self, experiment_id, run_name, tags):
        self.runs.append({"name": run_name, "tags": tags, "metrics": {}, "status": None})
        return SimpleNamespace(info=SimpleNamespace(run_id=str(len(self.runs) - 1)))

    def log_batch(self, run_id, metrics=(), params=()):
        self.runs[int(run_id)]["metrics"].update({metric.key: metric.value for metric in metrics})

    def log_text(self, run_id, text, name):
        self.runs[int(run_id)]["text"] = text

    def set_terminated(self, run_id, status):
        self.runs[int(run_id)]["status"] = status


def _context(study, seed=0):
    return SimpleNamespace(study=study, request=SimpleNamespace(seed=seed, name="s"), stage_seconds={},
                           client=_Client(), experiment_id="1", parent="p")


def _fake_runs(monkeypatch, accuracy, fail=()):
    """Replace the runs: a run of ``candidate`` with ``seed`` scores ``accuracy(candidate, seed)``;
    labels in ``fail`` fail. Returns the list of every run asked for."""
    asked = []

    def run_specs(context, stage, specs, on_finished=None):
        assert stage == "race"
        outcomes = {}
        for spec in specs:
            asked.append(spec)
            name = spec.label.split(" seed=")[0].removeprefix("race ")
            if spec.label in fail:
                outcome = RunOutcome(spec, state="failed", error="boom")
            else:
                outcome = RunOutcome(spec, results=[{"val_accuracy": accuracy(name, spec.seed)}], state="complete")
            outcomes[spec.label] = outcome
            on_finished(outcome)
        return outcomes
    monkeypatch.setattr(race_module, "run_specs", run_specs)
    return asked


def test_race_rounds_halve_and_rerank_by_mean_paired_gain(monkeypatch):
    # the search ranks t0 > t1 > ... > t6 (single seed); really t3 is the gain (+0.03 on every race seed)
    study = _study({f"t{index}": 0.70 - 0.01 * index for index in range(7)})
    truth = {"trial 3": 0.03}
    asked = _fake_runs(monkeypatch, lambda name, seed: 0.60 + truth.get(name, -0.01 if name != "none" else 0.0))
    record = run_race(_context(study), parse_rounds("6x1,3x2"), presets=PRESETS_RANKED)
    first, second = record["rounds"]
    # round 1: the 6 best by search value (trials 0-5; the preset's 0.61 ranks below them) and none, 1 seed
    assert first["racing"] == [f"trial {index}" for index in range(6)] and first["seeds"] == [20_000]
    # round 2: the 3 best by mean gain (own seed + race seed) — t3 first though the search put it 4th
    assert second["racing"][0] == "trial 3" and len(second["racing"]) == 3 and second["seeds"] == [20_001, 20_002]
    assert record["order"][0] == "trial 3" and set(record["order"]) == {f"trial {index}" for index in range(6)}
    assert len(asked) == 7 * 1 + 4 * 2 == record["runs"]
    assert all(spec.validate_on == "val" and spec.role == "race" and "seed" not in spec.policy for spec in asked)
    rows = {row["name"]: row for row in record["candidates"]}
    # trial 3's gains: its own seed (0.67 - 0.60) then three race seeds (+0.03 each)
    assert rows["trial 3"]["gains"] == pytest.approx([0.07, 0.03, 0.03, 0.03]) and rows["trial 3"]["n"] == 4
    assert rows["trial 5"]["n"] == 2  # dropped after round 1: own seed + 1
    assert study.user_attrs[RACE_ATTR] == record and len(study.user_attrs[RACE_RUNS_ATTR]) == len(asked)


def test_race_resume_reruns_nothing_finished_and_logs_one_child_run(monkeypatch):
    study = _study({f"t{index}": 0.70 - 0.01 * index for index in range(4)})
    asked = _fake_runs(monkeypatch, lambda name, seed: 0.60)
    context = _context(study)
    first = run_race(context, parse_rounds("4x1,2x1"))
    assert len(asked) == 5 + 3
    (run,) = context.client.runs
    assert run["tags"]["autoaug_role"] == "race" and run["status"] == "FINISHED"
    assert run["metrics"]["trial_0.mean_gain"] == pytest.approx(first["candidates"][0]["mean_gain"])
    again = run_race(_context(study), parse_rounds("4x1,2x1"))
    assert len(asked) == 8 and again["order"] == first["order"]  # every run was kept on the study


def test_a_failed_none_run_pairs_nothing_and_a_failed_candidate_run_is_recorded(monkeypatch):
    study = _study({"a": 0.70, "b": 0.69})
    failed = {"race none seed=20000", "race trial 1 seed=20001"}
    _fake_runs(monkeypatch, lambda name, seed: {"trial 0": 0.58, "trial 1": 0.66}.get(name, 0.60), fail=failed)
    record = run_race(_context(study), parse_rounds("2x2"))
    rows = {row["name"]: row for row in record["candidates"]}
    # seed 20000 has no none: no pair for anyone; seed 20001: trial 0 pairs, trial 1 failed
    assert rows["trial 0"]["gains"] == pytest.approx([0.10, -0.02]) and rows["trial 1"]["gains"] == pytest.approx([0.09])
    assert set(record["failed_runs"]) == failed
    assert record["order"] == ["trial 1", "trial 0"]  # mean 0.09 > 0.04


def test_no_race_without_two_candidates_or_rounds(monkeypatch):
    asked = _fake_runs(monkeypatch, lambda name, seed: 0.6)
    assert run_race(_context(_study({"a": 0.7})), parse_rounds("off")) is None
    lonely = optuna.create_study(direction="maximize")
    lonely.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.6], user_attrs={
        STATE_ATTR: "complete", POLICY_ATTR: Policy.load("moderate").to_dict()}))
    assert run_race(_context(lonely), parse_rounds("6x1")) is None and asked == []


def test_without_a_none_baseline_the_race_ranks_on_race_seeds_only(monkeypatch):
    study = optuna.create_study(direction="maximize")
    for index, value in enumerate((0.9, 0.5)):  # the search's values are unpaired without a none baseline
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[value], user_attrs={
            STATE_ATTR: "complete", POLICY_ATTR: {**Policy.load("moderate").to_dict(), "clean_fraction": 0.1 * index}}))
    _fake_runs(monkeypatch, lambda name, seed: {"trial 1": 0.65}.get(name, 0.60))
    record = run_race(_context(study), parse_rounds("2x1"))
    assert [row["n"] for row in record["candidates"]] == [1, 1] and record["order"] == ["trial 1", "trial 0"]


# ====================================================================== the confirmation takes the race's order
def test_confirmation_tests_the_races_best_first():
    study = _study({"a": 0.70, "b": 0.69, "c": 0.68})
    race = {"order": ["trial 2", "trial 0", "trial 1"]}
    names = [candidate.name for candidate in _ranked(study, 1, PRESETS_RANKED, race)]
    # wrong implementation caught: confirming the search's top-1 (trial 0) after a race that ranked trial 2 first
    assert names == ["trial 2", "none"]
    assert [c.name for c in _ranked(study, 2, PRESETS_RANKED, race)] == ["trial 2", "trial 0", "none"]
    # a race that ran fewer candidates than top-k: its order first, then the search's ranking
    assert [c.name for c in _ranked(study, 3, PRESETS_RANKED, {"order": ["trial 1", "trial 0"]})] == \
        ["trial 1", "trial 0", "trial 2", "none"]
    assert [c.name for c in _ranked(study, 1, PRESETS_RANKED, None)] == ["trial 0", "none"]


# ====================================================================== race and confirmation runs validate once
def test_race_and_confirmation_runs_validate_after_the_last_epoch_only(monkeypatch):
    asked = _fake_runs(monkeypatch, lambda name, seed: 0.6)
    run_race(_context(_study({"a": 0.7, "b": 0.65})), parse_rounds("2x1"))
    # wrong implementation caught: race runs validating every epoch (a sixth of each epoch's time spent for nothing)
    assert asked and all(spec.validate_each_epoch is False for spec in asked)


class _ValidationLog:
    """Records, per epoch, whether a validation pass ran and the logged val_accuracy."""

    def __init__(self) -> None:
        import lightning as L

        log = self

        class Callback(L.Callback):
            def on_validation_epoch_end(self, trainer, pl_module) -> None:
                log.validated.append(trainer.current_epoch + 1)

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                log.values.append(float(trainer.callback_metrics.get("val_accuracy", float("nan"))))

        self.validated: list[int] = []
        self.values: list[float] = []
        self.callback = Callback()


def test_validating_after_the_last_epoch_only_gives_the_same_final_value():
    from autoaug.trainers.train import run_training

    options = {"train_size": 64, "val_size": 48, "test_size": 16}
    logs = {}
    for each_epoch in (True, False):
        log = _ValidationLog()
        run_training(task="shapes-vqa", task_options=options, policy="moderate", seed=3, max_epochs=3,
                     accelerator="cpu", evaluate=False, callbacks=[log.callback], validate_each_epoch=each_epoch)
        logs[each_epoch] = log
    assert logs[True].validated == [1, 2, 3]
    # wrong implementations caught: validating every epoch anyway, or only after the first epoch
    assert logs[False].validated == [3]
    # validation draws no random numbers: training, and so the final value, is unchanged by skipping it
    assert logs[False].values[-1] == logs[True].values[-1]
