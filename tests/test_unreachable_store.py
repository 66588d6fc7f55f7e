"""A store that does not answer is bad input for every command that opens it: exit 2, one redacted
line naming the flag — the read-only commands included (they once exited 1 with Optuna's
``StorageInternalError: An exception is raised during the commit…``) — and a refused search leaves
no empty ``--workdir`` behind."""

from __future__ import annotations

import pytest

from conftest import one_error_line, run_cli

UNREACHABLE = "postgresql+psycopg://user:secret@127.0.0.1:1/db"  # nothing listens on port 1


@pytest.mark.parametrize("argv", [
    ["export", "--name", "s", "--out", "{tmp}/p.yaml"],
    ["report", "--name", "s", "--out", "{tmp}/r.html"],
    ["train", "--from-search", "s", "--task", "shapes-vqa"],
], ids=["export", "report", "train --from-search"])
def test_read_only_commands_refuse_an_unreachable_server_in_one_line(argv, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv] + ["--storage", UNREACHABLE]
    code, out, err = run_cli(argv, capsys)
    assert code == 2, err
    line = one_error_line(err)
    assert line.startswith("error: --storage postgresql+psycopg://user:***@127.0.0.1:1/db: cannot open"), line
    assert "secret" not in err and out == ""


def test_a_search_refused_for_its_storage_leaves_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "never-made"
    code, _, err = run_cli(["search", "--space", "vlm_default", "--task", "shapes-vqa", "--name", "s",
                            "--workdir", str(workdir), "--storage", UNREACHABLE], capsys)
    assert code == 2, err
    assert not workdir.exists()
    # a workdir that was there before is left as it was, files and all
    workdir.mkdir()
    (workdir / "keep").write_text("mine")
    code, _, _ = run_cli(["search", "--space", "vlm_default", "--task", "shapes-vqa", "--name", "s",
                          "--workdir", str(workdir), "--storage", UNREACHABLE], capsys)
    assert code == 2 and (workdir / "keep").read_text() == "mine"
