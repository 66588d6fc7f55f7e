"""benchmarks/stale_figures.py: which README figures predate the code they measure (parsing and judging,
on a synthetic README in a temporary git repository)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stale_figures.py"
spec = importlib.util.spec_from_file_location("stale_figures", SCRIPT)
stale_figures = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = stale_figures  # dataclasses look their module up while the file executes
spec.loader.exec_module(stale_figures)


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------- parsing
def test_stamps_in_the_readmes_own_shapes():
    text = ("Run of 2026-12-01 09:08–09:10 UTC, CPU. Median of 30 runs, 2026-12-01\n09:11 UTC. Stores: 10:22–11:40\n"
            "UTC, load 7. Release 2.13.0, 2026-13-45 is no date.")
    # A line break inside a stamp, a range (its start), a bare time taking the date before it; no stamp
    # from a version number or an impossible date.
    assert figure_times(text) == ["2026-12-01 09:08", "2026-12-01 09:11", "2026-12-01 10:22"]
    # A bare time with no date before it takes the enclosing section's date, else is skipped.
    assert figure_times("kills survived 20/20 (12:08 UTC)", "2026-12-01") == ["2026-12-01 12:08"]
    assert figure_times("kills survived 20/20 (12:08 UTC)") == []
    assert figure_times("taken on 2026-12-01 on this machine") == ["2026-12-01 00:00"]  # a date alone: from 00:00


def figure_times(text: str, inherited: str | None = None) -> list[str]:
    return [f"{stamp:%Y-%m-%d %H:%M}" for stamp in stale_figures.figure_stamps(text, inherited)]


def test_sections_commands_and_the_date_a_parent_gives():
    readme = "\n".join([
        "# title", "## Reliability", "Every figure below was taken on 2026-12-01.",
        "### Fuzz", "```bash", "## a comment inside a code block, not a heading", "nice -n 10 .venv/bin/python benchmarks/fuzz.py --examples 9",
        "```", "11:31 UTC, load 20.", "### Kills", "| 20/20 (12:08 UTC) | `nice -n 15 python benchmarks/kill_driver.py` |",
        "## Dependencies", "| hypothesis | fuzzing (`benchmarks/fuzz.py`) |",
        "## Benchmarks", "### Ops", ".venv/bin/python benchmarks/ops.py  # 2 min", "Two runs: 2026-12-02 13:00 UTC, "
        "and 2026-12-02 09:00 UTC on commit 1a2b3c4d.",
    ])
    sections = {section.title: section for section in stale_figures.read_sections(readme)}
    # Catches cutting at the '#' comment inside the code fence (Fuzz would lose its command).
    assert list(sections) == ["(top)", "Reliability", "Fuzz", "Kills", "Dependencies", "Benchmarks", "Ops"]
    assert sections["Fuzz"].scripts == ["benchmarks/fuzz.py"]
    assert sections["Kills"].scripts == ["benchmarks/kill_driver.py"]
    assert sections["Dependencies"].scripts == []  # named, not run: no figure there
    assert sections["Fuzz"].figure_date == utc("2026-12-01 11:31")  # the date from the ## section's opening
    assert sections["Kills"].figure_date == utc("2026-12-01 12:08")
    # The earliest of several runs (catches taking the last or the first mentioned), and the commit.
    assert sections["Ops"].figure_date == utc("2026-12-02 09:00")
    assert sections["Ops"].commit == "1a2b3c4d"
    assert sections["Ops"].inherited_date is None  # "Benchmarks" has no date of its own to pass down


# ---------------------------------------------------------------------- judging, in a git repository
FILES = {
    "pyproject.toml": '[tool.setuptools.package-dir]\n"mypkg" = "mypkg"\n"mypkg.sub" = "sub"\n',
    "mypkg/__init__.py": "",
    "mypkg/__main__.py": "from mypkg.cli import main\nmain()\n",
    "mypkg/cli.py": "def main():\n    return 0\n",
    "mypkg/core.py": "def work():\n    return 1\n",
    "mypkg/unrelated.py": "X = 1\n",
    "sub/__init__.py": "",
    "sub/impl.py": "Y = 1\n",
    # A benchmark that reaches its code only through `python -m mypkg` (as kill_driver.py does).
    "benchmarks/bench_cli.py": "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'mypkg'])\n",
    # ... through a function-level import (as proxy_task.py does).
    "benchmarks/bench_core.py": "def run():\n    from mypkg.core import work\n    return work()\n",
    # ... through the package-dir mapping (mypkg.sub lives in sub/, as autoaug.trainers in trainers/).
    "benchmarks/bench_sub.py": "import mypkg.sub.impl\n",
}


def git(root: Path, *args: str, when: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    if when:
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """c1 (01-01 10:00) everything; c2 (01-02 12:00) cli.py and sub/impl.py; c3 (01-03 12:00) unrelated.py."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    commits = {}
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for label, when, changed in [("c1", "2026-01-01T10:00:00Z", []),
                                 ("c2", "2026-01-02T12:00:00Z", ["mypkg/cli.py", "sub/impl.py"]),
                                 ("c3", "2026-01-03T12:00:00Z", ["mypkg/unrelated.py"])]:
        for name in changed:
            (root / name).write_text((root / name).read_text() + "# changed\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", label, when=when)
        commits[label] = git(root, "rev-parse", "HEAD").strip()
    return root, commits


def readme_for(commits: dict[str, str]) -> str:
    return "\n".join([
        "## Reliability", "Every figure below was taken on 2026-01-02.",
        "### CLI", "`python benchmarks/bench_cli.py`: 3/3, 11:00 UTC.",  # before c2 touched cli.py
        "## Benchmarks",
        "### Core", ".venv/bin/python benchmarks/bench_core.py", "Run 2026-01-02 09:00–13:00 UTC.",
        "### Sub", ".venv/bin/python benchmarks/bench_sub.py", "Run 2026-01-02 11:30 UTC.",
        "### Twice", ".venv/bin/python benchmarks/bench_cli.py", "2026-01-02 13:00 UTC; first run 2026-01-02 11:00 UTC.",
        "### Core at c2", ".venv/bin/python benchmarks/bench_core.py", f"Run 2026-01-01 00:00 UTC, commit {commits['c2'][:9]}.",
        "### CLI at c1", ".venv/bin/python benchmarks/bench_cli.py", f"Run 2026-01-09 00:00 UTC, commit {commits['c1'][:9]}.",
        "### Undated", ".venv/bin/python benchmarks/bench_core.py", "Some day.",
        "### Gone", ".venv/bin/python benchmarks/removed.py", "Run 2026-01-05 10:00 UTC.",
        "### Prose", "See `benchmarks/bench_core.py` for how (no command, so no figure).",
    ])


def verdicts(root: Path, readme: str) -> dict[str, str]:
    (root.parent / "README.md").write_text(readme)
    return {row.section: row.stale for row in stale_figures.rows(root.parent / "README.md", root)}


def test_stale_when_the_measured_code_changed_after_the_figure(repo):
    root, commits = repo
    assert verdicts(root, readme_for(commits)) == {
        "CLI": "yes",          # catches missing `-m mypkg` -> __main__.py -> cli.py (the script alone is from c1)
        "Core": "no",          # catches measuring the whole repository (unrelated.py changed on 01-03)
        "Sub": "yes",          # catches ignoring pyproject's package-dir (sub/impl.py changed at 12:00)
        "Twice": "yes",        # catches taking the latest run's time rather than the earliest
        "Core at c2": "no",    # by ancestry: core.py untouched after c2, though the date alone would say stale
        "CLI at c1": "yes",    # by ancestry: cli.py changed in c2, though the date alone would say fresh
        "Undated": "unknown (no date)",
        "Gone": "yes (no such script: benchmarks/removed.py)",
    }
    measured = {row.section: {str(p.relative_to(root)) for p in row.files}
                for row in stale_figures.rows(root.parent / "README.md", root)}
    assert measured["Core"] == {"benchmarks/bench_core.py", "mypkg/__init__.py", "mypkg/core.py"}
    assert measured["Sub"] == {"benchmarks/bench_sub.py", "mypkg/__init__.py", "sub/__init__.py", "sub/impl.py"}
    assert measured["CLI"] == {"benchmarks/bench_cli.py", "mypkg/__init__.py", "mypkg/__main__.py", "mypkg/cli.py"}


def test_uncommitted_changes_to_measured_code_make_a_figure_stale(repo):
    root, commits = repo
    (root / "mypkg" / "core.py").write_text("def work():\n    return 2\n")
    (root / "mypkg" / "unrelated.py").write_text("X = 2\n")
    result = verdicts(root, readme_for(commits))
    assert result["Core"] == "yes" and result["Core at c2"] == "yes"
    (root / "mypkg" / "core.py").write_text(FILES["mypkg/core.py"])
    assert verdicts(root, readme_for(commits))["Core"] == "no"  # unrelated.py's edit does not count


def test_the_table_and_the_exit_status(repo, capsys):
    root, commits = repo
    (root.parent / "README.md").write_text(readme_for(commits))
    arguments = ["--readme", str(root.parent / "README.md"), "--root", str(root)]
    assert stale_figures.main(arguments) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| section | benchmark | figure date | last change to the code it measures | stale |"
    cli = next(line for line in table if line.startswith("| CLI |"))
    assert cli == "| CLI | bench_cli.py | 2026-01-02 11:00 UTC | 2026-01-02 12:00 UTC " \
                  f"{commits['c2'][:10]} (mypkg/cli.py) | yes |"
    assert stale_figures.main([*arguments, "--fail-on-stale"]) == 1
