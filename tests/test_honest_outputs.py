"""Honest outputs of a finished search (issue 21, item 6): what `autoaug export --trial` writes for a
trial ASHA stopped early, and what the search's JSON names as its result when the confirmation
rejected the trial with the best single-seed value.

The studies are hand-made Optuna SQLite studies shaped as the search leaves them: Ray reports a
trial it stopped early to Optuna as COMPLETE with its rung value, and only the recorded state
(``autoaug_state: pruned``) tells it apart; the confirmation is the study attribute the confirmation
stage writes. No training, no Ray.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from autoaug.errors import AutoaugInputError
from autoaug.policy import Policy
from autoaug.search.export import STOPPED_EPOCH_ATTR, export_from_storage
from autoaug.search.record_schema import (BASELINE_ATTR, CALIBRATION_ATTR, CONFIRMATION_ATTR, POLICY_ATTR,
                                          STATE_ATTR)

SEEDS = [10_000, 10_001, 10_002]
STOPPED_TRIAL, STOPPED_AT, TRIAL_LENGTH = 3, 17, 26


def _policy(preset: str) -> dict:
    return Policy.load(preset).to_dict()


def make_study(tmp_path: Path, confirmation: dict | None = None, name: str = "honest"):
    """Baseline ``none`` (trial 0, 0.60); searched trials 1 (0.70, the best single-seed value of the
    full-length trials), 2 (0.66) and 3 (0.72, stopped early by ASHA at epoch 17 of 26: its value is
    that of the rung); the confirmation record when given."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(CALIBRATION_ATTR, {"trial_epochs": TRIAL_LENGTH, "learning_rate": 1e-3})
    rows = [(0.60, "none", {BASELINE_ATTR: "none"}), (0.70, "moderate", {}), (0.66, "conservative", {}),
            (0.72, "aggressive", {STATE_ATTR: "pruned", STOPPED_EPOCH_ATTR: STOPPED_AT})]
    for value, preset, extra in rows:
        attrs = {STATE_ATTR: "complete", POLICY_ATTR: _policy(preset), **extra}
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value, user_attrs=attrs))
    if confirmation is not None:
        study.set_user_attr(CONFIRMATION_ATTR, confirmation)
    return study, storage


def _row(name: str, kind: str, trial, mean: float, diff: float, diff_se: float, beats: bool) -> dict:
    return {"name": name, "kind": kind, "trial": trial, "search_value": None, "seeds": SEEDS, "values": [mean] * 3,
            "n": 3, "mean": mean, "se": 0.004, "diff_vs_none": diff, "diff_se": diff_se, "beats_none": beats}


def confirmation(winner: str) -> dict:
    """A confirmation of trials 1 and 2 against none: trial 1 (the single-seed best) never beats none;
    trial 2 does when ``winner`` is ``trial 2``, else nothing does (``no-gain``)."""
    improves = winner == "trial 2"
    rows = [_row("trial 1", "searched", 1, 0.612, 0.004, 0.006, False),
            _row("trial 2", "searched", 2, 0.641 if improves else 0.611, 0.033 if improves else 0.003, 0.005, improves),
            _row("none", "none", None, 0.608, 0.0, 0.0, False)]
    return {"metric": "val_accuracy", "split": "val", "seeds": SEEDS, "candidates": rows, "winner": winner,
            "winner_trial": 2 if improves else None, "verdict": "improves" if improves else "no-gain",
            "winner_policy": _policy("conservative" if improves else "none"), "epochs": TRIAL_LENGTH,
            "learning_rate": 1e-3}


# ---------------------------------------------------------------------- export --trial of a stopped trial
def test_export_refuses_a_trial_stopped_early_naming_the_complete_trials(tmp_path):
    # Catches: the old export, which wrote a stopped trial with its rung value as if it had run its
    # full length (`best_trial(study, N)` accepts any Optuna-COMPLETE trial).
    make_study(tmp_path)
    out = tmp_path / "stopped.yaml"
    with pytest.raises(AutoaugInputError) as refused:
        export_from_storage("honest", out, storage=f"sqlite:///{tmp_path}/optuna.db", trial=STOPPED_TRIAL)
    message = str(refused.value)
    assert "\n" not in message
    assert f"trial {STOPPED_TRIAL} was stopped early at epoch {STOPPED_AT} of {TRIAL_LENGTH}" in message
    assert "not comparable" in message and "complete trials: 0, 1, 2" in message
    assert not out.exists()


def test_export_refusal_names_the_confirmed_winner_when_there_is_one(tmp_path):
    # Catches: pointing the user at the best single-seed trial (1) when a confirmation chose otherwise.
    make_study(tmp_path, confirmation("none"))
    with pytest.raises(AutoaugInputError, match="the confirmed winner is none \\(verdict no-gain\\)"):
        export_from_storage("honest", tmp_path / "x.yaml", storage=f"sqlite:///{tmp_path}/optuna.db",
                            trial=STOPPED_TRIAL)


def test_export_of_a_stopped_trial_when_asked_records_no_value_and_says_why(tmp_path):
    # Catches: an override that writes the rung value into provenance.value as if it were final.
    make_study(tmp_path)
    path, number = export_from_storage("honest", tmp_path / "stopped.yaml", storage=f"sqlite:///{tmp_path}/optuna.db",
                                       trial=STOPPED_TRIAL, allow_stopped_early=True)
    config = Policy.load(path).config
    assert number == STOPPED_TRIAL and config.provenance.value is None
    assert f"stopped early at epoch {STOPPED_AT}" in config.description and "stopped-early" in config.name
    assert [entry.op for entry in config.entries] == [entry["op"] for entry in _policy("aggressive")["entries"]]


def test_export_of_a_complete_trial_keeps_its_value(tmp_path):
    # Catches: a refusal (or a dropped value) that reaches complete trials too.
    make_study(tmp_path)
    path, _ = export_from_storage("honest", tmp_path / "one.yaml", storage=f"sqlite:///{tmp_path}/optuna.db", trial=1)
    config = Policy.load(path).config
    assert config.provenance.value == pytest.approx(0.70) and "stopped" not in (config.description or "") + config.name


# ---------------------------------------------------------------------- the search's JSON result
def _summary(study, tmp_path: Path) -> dict:
    """The search's own export and result step (`controller.export_and_summarize`) on the hand-made study."""
    from autoaug.search.controller import export_and_summarize

    request = SimpleNamespace(name="honest", sampler="tpe", scheduler="asha")
    locations = SimpleNamespace(tracking_uri="sqlite:///mlflow.db", optuna_url="sqlite:///optuna.db", workdir=tmp_path,
                                exports_dir=tmp_path / "exports")
    return export_and_summarize(study, request, locations, "1", 0, None)


def test_result_is_none_when_the_confirmation_rejected_the_best_single_seed_trial(tmp_path):
    # Catches: presenting best_value / best_trial (trial 1, 0.70 on one seed) as the search's result
    # while the confirmation found no gain and the export is `none`.
    study, _ = make_study(tmp_path, confirmation("none"))
    result = _summary(study, tmp_path)
    assert result["best_trial"] == 1 and result["best_value"] == pytest.approx(0.70)  # the contract's keys stay
    assert "not the search's result" in result["best_value_note"]
    chosen = result["result"]
    assert chosen["policy"] == "none" and chosen["trial"] is None and chosen["verdict"] == "no-gain"
    assert chosen["value"] == pytest.approx(0.608)  # none's confirmation mean, not a single-seed maximum
    exported = Policy.load(result["best_policy_path"]).config
    assert exported.provenance.confirmation.winner == chosen["policy"] and exported.entries == []


def test_result_is_the_confirmed_winner_not_the_best_single_seed_trial(tmp_path):
    # Catches: a result that names the best single-seed trial (1) or its search value when the
    # confirmation's winner is trial 2, measured over the confirmation seeds.
    study, _ = make_study(tmp_path, confirmation("trial 2"))
    chosen = _summary(study, tmp_path)["result"]
    assert (chosen["policy"], chosen["trial"], chosen["verdict"]) == ("trial 2", 2, "improves")
    assert chosen["value"] == pytest.approx(0.641) and chosen["diff_vs_none"] == pytest.approx(0.033)
    assert "3 confirmation seeds" in chosen["measured_on"]


def test_result_without_confirmation_is_the_best_full_length_trial_marked_unconfirmed(tmp_path):
    # Catches: a result that takes the stopped trial's rung value (0.72), or claims a verdict nobody reached.
    study, _ = make_study(tmp_path)
    chosen = _summary(study, tmp_path)["result"]
    assert (chosen["policy"], chosen["trial"], chosen["verdict"]) == ("trial 1", 1, None)
    assert chosen["value"] == pytest.approx(0.70) and "not confirmed" in chosen["measured_on"]


def test_the_cli_refuses_a_stopped_trial_in_one_line_and_exports_it_with_the_flag(tmp_path, capsys):
    # Catches: a CLI that does not pass --allow-stopped-early through, or whose refusal does not name it.
    from conftest import one_error_line, run_cli

    make_study(tmp_path)
    argv = ["export", "--name", "honest", "--trial", str(STOPPED_TRIAL), "--out", str(tmp_path / "s.yaml"),
            "--storage", f"sqlite:///{tmp_path}/optuna.db"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--allow-stopped-early" in one_error_line(err)
    code, _, err = run_cli([*argv, "--allow-stopped-early"], capsys)
    assert code == 0, err
    assert Policy.load(tmp_path / "s.yaml").config.provenance.value is None


def test_a_trial_optuna_holds_pruned_gets_the_same_refusal_and_override(tmp_path):
    # Catches: the refusal and --allow-stopped-early reaching only old-style stopped trials (Optuna
    # COMPLETE, state "pruned"); the search now tells Optuna PRUNED, and `best_trial(study, N)` refused
    # those with "trial is pruned", so the override could never export one.
    study, storage = make_study(tmp_path)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params={}, distributions={}, intermediate_values={STOPPED_AT: 0.73},
        user_attrs={STATE_ATTR: "pruned", STOPPED_EPOCH_ATTR: STOPPED_AT, POLICY_ATTR: _policy("moderate")}))
    pruned = len(study.trials) - 1
    with pytest.raises(AutoaugInputError) as refused:
        export_from_storage("honest", tmp_path / "p.yaml", storage=storage, trial=pruned)
    assert f"trial {pruned} was stopped early at epoch {STOPPED_AT} of {TRIAL_LENGTH}" in str(refused.value)
    path, _ = export_from_storage("honest", tmp_path / "p.yaml", storage=storage, trial=pruned, allow_stopped_early=True)
    config = Policy.load(path).config
    assert config.provenance.value is None and "stopped-early" in config.name


# ---------------------------------------------------------------------- best_trial once per search
def _count_best_trial_calls(monkeypatch) -> list:
    """Every call of `autoaug.search.study.best_trial`, under whichever name a module imported it."""
    import sys

    from autoaug.search import study as study_module

    original, calls = study_module.best_trial, []

    def counted(*args, **kwargs):
        calls.append(args[1:] or kwargs)
        return original(*args, **kwargs)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("autoaug") and getattr(module, "best_trial", None) is original:
            monkeypatch.setattr(module, "best_trial", counted)
    return calls


@pytest.mark.parametrize("confirmed", [False, True], ids=["unconfirmed", "confirmed"])
def test_a_finished_search_evaluates_best_trial_once(tmp_path, monkeypatch, confirmed):
    # Catches: the export's check, its choice of the policy and the summary each recomputing
    # best_trial (3 scans of every trial without a confirmation, 2 with one), and a plumbing that
    # passes a different trial to the summary than the one exported (the keys below).
    import autoaug.search.controller  # noqa: F401  (imported before counting, so its name is counted too)

    study, _ = make_study(tmp_path, confirmation("trial 2") if confirmed else None)
    calls = _count_best_trial_calls(monkeypatch)
    result = _summary(study, tmp_path)
    assert len(calls) == 1, calls
    assert result["best_trial"] == 1 and result["best_value"] == pytest.approx(0.70)
    exported = Policy.load(result["best_policy_path"]).config
    assert exported.provenance.trial == (2 if confirmed else 1)


def test_a_search_whose_trials_all_failed_exports_nothing_and_names_no_best(tmp_path):
    # Catches: a summary that takes the best trial it was given although nothing was exported.
    from autoaug.search.controller import export_and_summarize

    study, _ = make_study(tmp_path)
    request = SimpleNamespace(name="honest", sampler="tpe", scheduler="asha")
    locations = SimpleNamespace(tracking_uri="sqlite:///m.db", optuna_url="sqlite:///o.db", workdir=tmp_path,
                                exports_dir=tmp_path / "exports")
    result = export_and_summarize(study, request, locations, "1", 0, "RuntimeError: every trial failed")
    assert result["best_policy_path"] is None and result["best_trial"] is None and result["best_value"] is None
    assert not (tmp_path / "exports").exists()
