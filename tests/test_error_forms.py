"""One form for an error about a parameter (issue 24, item 12): the library raises `ParameterError`
naming its Python parameter (``name: study-1: ...``), and `autoaug` shows the running command's flag
in its place (``--name: study-1: ...``). These are the errors that used to build a ``--flag value:``
prefix by hand, which a library caller read as a flag it never passed.

Hand-made in-memory Optuna studies; no training, no Ray.
"""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from autoaug.errors import ParameterError
from conftest import one_error_line, run_cli


# ---------------------------------------------------------------------- --learning-rates (search)
def test_learning_rates_that_are_not_numbers_name_the_parameter():
    # Catches: the old hand-built "--learning-rates: ..." AutoaugInputError (no parameter to map).
    from autoaug.cli import parse_learning_rates

    with pytest.raises(ParameterError) as refused:
        parse_learning_rates("1e-3,fast")
    assert refused.value.parameter == "learning_rates"
    assert str(refused.value) == "learning_rates: expected comma-separated numbers, got '1e-3,fast'"
    assert parse_learning_rates(" 3e-4, 1e-3,") == (3e-4, 1e-3)  # empty parts skipped, as before


def test_the_cli_shows_learning_rates_with_its_flag(tmp_path, capsys):
    # Catches: a parameter name the search command has no flag for (e.g. "learning_rate", which would
    # show as --learning-rate, or "rates", which would show unmapped).
    code, _, err = run_cli(["search", "--space", "vlm_default", "--task", "shapes-vqa", "--name", "s",
                            "--learning-rates", "a,b", "--workdir", str(tmp_path)], capsys)
    assert code == 2
    assert one_error_line(err) == "error: --learning-rates: expected comma-separated numbers, got 'a,b'"


# ---------------------------------------------------------------------- --name: a study with nothing to export
def _empty_study(tmp_path, name: str = "empty") -> str:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    return storage


def test_exporting_a_study_without_a_complete_trial_names_the_parameter(tmp_path):
    # Catches: the old "--name empty: ..." AutoaugInputError, which names a flag to a library caller.
    from autoaug.search.export import export_from_storage

    storage = _empty_study(tmp_path)
    with pytest.raises(ParameterError) as refused:
        export_from_storage("empty", tmp_path / "p.yaml", storage=storage)
    assert refused.value.parameter == "name"
    assert str(refused.value) == "name: empty: the study has no complete trial to export yet"
    assert not (tmp_path / "p.yaml").exists()


def test_the_export_command_shows_the_study_with_its_name_flag(tmp_path, capsys):
    # Catches: a ParameterError on a parameter the export command has no flag for (it would print
    # "study: empty: ..."), and the old hand-built form "--name empty: ...".
    storage = _empty_study(tmp_path)
    code, _, err = run_cli(["export", "--name", "empty", "--out", str(tmp_path / "p.yaml"), "--storage", storage],
                           capsys)
    assert code == 2
    assert one_error_line(err) == "error: --name: empty: the study has no complete trial to export yet"


# ---------------------------------------------------------------------- --name: resuming another search
def _request(**changes) -> SimpleNamespace:
    """What `open_search_study` and `check_data_fingerprint` read of a `SearchRequest`."""
    fields = dict(name="s", task="shapes-vqa", task_options=None, data=None, data_seed=0, max_epochs=6, model=None,
                  sampler="tpe", scheduler="asha", seed=0)
    return SimpleNamespace(**{**fields, **changes})


SPACE = SimpleNamespace(name="tiny", hash="0" * 64, canonical=lambda: {})


def test_resuming_with_other_settings_names_the_study_parameter():
    # Catches: the old "--name s: ..." AutoaugInputError (a library caller passed ``name``, not --name).
    from autoaug.search.study import open_search_study

    storage = optuna.storages.InMemoryStorage()
    open_search_study(storage, _request(), SPACE, 1)
    with pytest.raises(ParameterError) as refused:
        open_search_study(storage, _request(max_epochs=9), SPACE, 1)
    assert refused.value.parameter == "name"
    assert str(refused.value).startswith("name: s: this study exists with a different --max-epochs (recorded 6; now 9)")


def test_resuming_on_other_data_names_the_study_parameter():
    # Catches: the old "--name s: ..." AutoaugInputError for a changed data fingerprint.
    from autoaug.search.study import check_data_fingerprint

    study = optuna.create_study(study_name="s", direction="maximize")
    check_data_fingerprint(study, _request(), "a" * 64)
    with pytest.raises(ParameterError) as refused:
        check_data_fingerprint(study, _request(), "b" * 64)
    assert refused.value.parameter == "name"
    assert str(refused.value).startswith("name: s: this study was searched on other data")
    assert "nothing was changed" in str(refused.value)


@pytest.mark.parametrize("scheduler, space_name, parameter", [("pbt", "vlm_default", "scheduler"),
                                                              ("asha", "pba_schedule", "space")])
def test_a_scheduler_and_space_that_do_not_fit_name_the_parameter(scheduler, space_name, parameter):
    """Was `AutoaugInputError("--scheduler pbt ...")`: a library caller read a flag, the CLI could not map it."""
    from types import SimpleNamespace

    from autoaug.search.controller import _check_space_fits
    from autoaug.search.space import load_space

    with pytest.raises(ParameterError) as error:
        _check_space_fits(SimpleNamespace(scheduler=scheduler, sampler="tpe"), load_space(space_name), None)
    assert error.value.parameter == parameter and not str(error.value).startswith("--")


def test_a_ray_client_address_names_the_parameter():
    from autoaug.search.cluster import check_address

    with pytest.raises(ParameterError) as error:
        check_address("ray://127.0.0.1:10001")
    assert error.value.parameter == "address" and "ray job submit" in str(error.value)
