"""The CLI's error contract around library errors: a `ParameterError` names the Python parameter when
the library is called directly, and the running command's flag when it comes through `autoaug`;
``--debug`` adds the traceback, and nothing of one run leaks into the next."""

from __future__ import annotations

import dataclasses
import json

import pytest
import typer

from autoaug.errors import ParameterError
from conftest import run_cli

SEARCH = ["search", "--space", "vlm_default", "--task", "shapes-vqa", "--name", "cli-test"]


def _raising(parameter: str, problem: str):
    def library_call(*args, **kwargs):
        raise ParameterError(parameter, problem)

    return library_call


def _search_command():
    from autoaug.cli import app

    return typer.main.get_command(app).commands["search"]


def test_a_library_parameter_error_names_the_parameter_and_the_cli_shows_the_flag(monkeypatch, tmp_path, capsys):
    """The real library call names the parameter (not the test's stub: asserting that the stub raises
    could not fail); the CLI, given the same error, shows the flag."""
    from autoaug.search import controller
    from autoaug.search.controller import SearchRequest

    with pytest.raises(ParameterError) as direct:  # validated before any store, Ray or data is touched
        controller.run_search(SearchRequest(space="vlm_default", name="x", task="shapes-vqa", trials=0,
                                            workdir=str(tmp_path / "runs")))
    assert (direct.value.parameter, str(direct.value)) == ("trials", "trials: expected a positive integer, got 0")
    assert not (tmp_path / "runs").exists()

    monkeypatch.setattr(controller, "run_search", _raising("trials", "expected a positive integer, got 0"))
    code, out, err = run_cli([*SEARCH, "--trials", "0", "--workdir", str(tmp_path)], capsys)
    assert (code, out) == (2, "")
    assert err.strip() == "error: --trials: expected a positive integer, got 0"


def test_a_parameter_with_a_long_flag_of_another_spelling_maps_too(monkeypatch, tmp_path, capsys):
    """Underscores in the parameter, dashes in the flag; a boolean flag's positive spelling."""
    from autoaug.search import controller

    for parameter, flag in (("max_failures", "--max-failures"), ("calibrate", "--calibrate")):
        monkeypatch.setattr(controller, "run_search", _raising(parameter, "out of range"))
        code, _, err = run_cli([*SEARCH, "--workdir", str(tmp_path)], capsys)
        assert (code, err.strip()) == (2, f"error: {flag}: out of range")


def test_train_maps_max_epochs_to_its_flag(monkeypatch, tmp_path, capsys):
    from autoaug.trainers import train

    monkeypatch.setattr(train, "run_training", _raising("max_epochs", "expected a positive integer, got 0"))
    code, _, err = run_cli(["train", "--task", "shapes-vqa", "--workdir", str(tmp_path)], capsys)
    assert (code, err.strip()) == (2, "error: --max-epochs: expected a positive integer, got 0")


def test_a_parameter_that_is_no_flag_of_the_running_command_keeps_the_plain_message(monkeypatch, tmp_path, capsys):
    from autoaug.search import controller, export

    # a library parameter with no flag (model_options); --trials is a flag of `search`, not of `export`
    monkeypatch.setattr(controller, "run_search", _raising("model_options", "expected a dict"))
    code, _, err = run_cli([*SEARCH, "--workdir", str(tmp_path)], capsys)
    assert (code, err.strip()) == (2, "error: model_options: expected a dict")

    monkeypatch.setattr(export, "export_from_storage", _raising("trials", "no such thing"))
    code, _, err = run_cli(["export", "--name", "x", "--out", str(tmp_path / "p.yaml")], capsys)
    assert (code, err.strip()) == (2, "error: trials: no such thing")


def test_debug_adds_the_traceback_for_that_run_only(monkeypatch, tmp_path, capsys):
    from autoaug.search import controller

    monkeypatch.setattr(controller, "run_search", _raising("trials", "expected a positive integer, got 0"))
    code, _, err = run_cli(["--debug", *SEARCH, "--workdir", str(tmp_path)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[0] == "error: --trials: expected a positive integer, got 0"
    assert "Traceback (most recent call last)" in err and "autoaug.errors.ParameterError: trials:" in err

    code, _, err = run_cli([*SEARCH, "--workdir", str(tmp_path)], capsys)  # the next run starts clean
    assert (code, err.strip()) == (2, "error: --trials: expected a positive integer, got 0")


def test_every_search_request_field_is_a_parameter_of_the_search_command():
    """The CLI maps a `SearchRequest` error by the field's name, so each field a user sets from the
    command line must be spelt as the `search` command's parameter."""
    from autoaug.search.controller import SearchRequest

    fields = {field.name for field in dataclasses.fields(SearchRequest)}
    parameters = {parameter.name for parameter in _search_command().params} - {"as_json"}
    assert fields == parameters, (fields - parameters, parameters - fields)


def test_search_request_validation_names_the_field_when_called_directly():
    from autoaug.search.controller import SearchRequest

    request = SearchRequest(space="vlm_default", name="x", task="shapes-vqa", trials=0)
    with pytest.raises(ParameterError) as raised:
        request.validate()
    assert raised.value.parameter == "trials"
    assert str(raised.value) == "trials: expected a positive integer, got 0"


def test_the_real_search_refuses_trials_0_with_its_flag(tmp_path, capsys):
    code, out, err = run_cli([*SEARCH, "--trials", "0", "--workdir", str(tmp_path)], capsys)
    assert (code, out, err.strip()) == (2, "", "error: --trials: expected a positive integer, got 0")


@pytest.mark.parametrize("command", [["search", "--space", "vlm_default", "--name", "x"], ["train"]])
@pytest.mark.parametrize("given", [[], ["--task", "shapes-vqa", "--data", "rows.parquet"]])
def test_task_or_data_is_refused_with_the_flags(command, given, tmp_path, capsys):
    """`require_task_or_data` names the library's parameters (``task``, ``data``); a CLI user reads the flags."""
    code, _, err = run_cli([*command, *given, "--workdir", str(tmp_path)], capsys)
    assert (code, err.strip()) == (2, "error: give exactly one of --task NAME or --data PATH")


def test_show_prints_an_exported_policy_s_evidence_as_tables_not_a_dict_dump(tmp_path, capsys):
    """`autoaug show policy.yaml`, the last step of the README's main command: an empty policy says "no
    augmentation", and its provenance is the search's summary (training settings, confirmation table,
    verdict line), not a wrapped Python-dict dump under an empty table."""
    import yaml

    from conftest import run_cli

    policy = {"schema_version": 1, "name": "first-confirmed-none", "entries": [], "provenance": {
        "study": "first", "metric": "val_accuracy", "value": 0.61, "task": "task:shapes-vqa",
        "training": {"learning_rate": 0.001, "epochs": 24},
        "confirmation": {"verdict": "no-gain", "winner": "none", "split": "confirm", "seeds": [10000, 10001],
                         "candidates": [{"name": "trial 8", "mean": 0.5957, "se": 0.004, "diff_vs_none": -0.0143,
                                         "diff_se": 0.005, "n": 2},
                                        {"name": "none", "mean": 0.61, "se": 0.003, "n": 2}]}}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    code, out, err = run_cli(["show", str(path)], capsys)
    assert code == 0, err
    assert "no augmentation" in out
    assert "learning rate 0.001 for 24 epochs" in out
    assert "confirmation on 2 fresh seeds" in out and "held-out confirm part" in out
    assert "-0.0143 ± 0.0050" in out and "verdict: no-gain" in out
    assert "{'" not in out and "candidates=" not in out


def test_export_help_says_what_export_does():
    """`autoaug export --help` once said "best by default" while the code exported the confirmed winner."""
    from autoaug.cli import app

    command = typer.main.get_command(app).commands["export"]
    help_text = " ".join([command.help or ""] + [param.help or "" for param in command.params])
    assert "confirmed winner" in help_text and "confirmation's winner" in help_text
    assert "best by default" not in help_text and "default: the best searched trial" not in help_text.lower()
    assert "verdict and winner" in help_text


def test_a_fixed_learning_rate_is_the_only_rate_calibration_runs():
    """`--learning-rate` once "fixed the learning rate" while calibration still ran every rate of the grid
    and took the trial length (and `train --from-search`'s rate) from its own pick: the flag must make
    calibration run that rate alone, so the trials, the record and --from-search all use it."""
    from autoaug.search.controller import SearchRequest, _calibration_rates

    base = dict(space="vlm_default", name="x", task="shapes-vqa", learning_rates=(3e-4, 1e-3, 3e-3))
    assert _calibration_rates(SearchRequest(**base, learning_rate=2e-3)) == (2e-3,)
    assert _calibration_rates(SearchRequest(**base)) == (3e-4, 1e-3, 3e-3)


def test_force_reaches_the_search_request(monkeypatch, tmp_path, capsys):
    """`--force` (search past calibration's refusals) is the request's ``force``; off unless given.
    Catches a flag parsed but not passed on (what the search does with it: tests/test_search.py)."""
    from autoaug.search import controller

    requests = []
    monkeypatch.setattr(controller, "run_search", lambda request, console=None: requests.append(request) or {})
    for extra in ([], ["--force"]):
        run_cli([*SEARCH, *extra, "--workdir", str(tmp_path)], capsys)
    assert [request.force for request in requests] == [False, True]


# what `autoaug ops` promises per op (README): stage, modality, what the magnitude controls and its range,
# whether it mixes labels, a one-line summary
OPS_ROW_KEYS = {"name", "stage", "modality", "magnitude_range", "parameter", "mixes_labels", "summary"}


def _ops_json(capsys, *flags: str) -> list[dict]:
    code, out, err = run_cli(["ops", "--json", *flags], capsys)
    assert code == 0, err
    document = json.loads(out.strip().splitlines()[-1])
    assert set(document) == {"ops"}
    return document["ops"]


def test_ops_json_lists_every_registered_op_once_with_what_it_does(capsys):
    """Catches: an op missing or repeated, a row whose fields are not the op's own (stage, modality,
    range, label mixing), a range that is not [low, high] with low < high, a summary of several lines."""
    from autoaug import ops

    rows = _ops_json(capsys)
    assert [row["name"] for row in rows] == list(ops.names())
    for row in rows:
        op = ops.op_class(row["name"])
        assert set(row) == OPS_ROW_KEYS, row
        assert (row["stage"], row["modality"], row["mixes_labels"]) == (op.stage, op.modality, op.mixes_labels)
        assert row["stage"] in ops.STAGES and row["modality"] in ops.MODALITIES
        low, high = row["magnitude_range"]
        assert [low, high] == list(op.default_range) and low < high, row
        assert row["parameter"].strip() and row["summary"].strip() and "\n" not in row["summary"], row
    # facts the README states: the label-mixing ops, and pixel ops work on images
    assert {row["name"] for row in rows if row["mixes_labels"]} == {"token_mixup", "token_cutmix", "mergemix"}
    assert {row["modality"] for row in rows if row["stage"] == "pixel"} <= {"vision", "cross"}


@pytest.mark.parametrize("flags", [["--stage", "pixel"], ["--modality", "text"], ["--stage", "token", "--modality", "cross"]])
def test_ops_json_filters_by_stage_and_modality(capsys, flags):
    """Catches a filter ignored (every op listed) or applied to the other field."""
    wanted = dict(zip(flags[::2], flags[1::2]))
    everything = _ops_json(capsys)
    rows = _ops_json(capsys, *flags)
    expected = [row for row in everything if all(row[flag.removeprefix("--")] == value for flag, value in wanted.items())]
    assert rows == expected and 0 < len(rows) < len(everything)
