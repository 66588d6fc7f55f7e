"""Which README figures are older than the code their benchmark measures: what to rerun (not a CI test).

    .venv/bin/python benchmarks/stale_figures.py             # table: section, figure date, last code change, stale
    .venv/bin/python benchmarks/stale_figures.py --files     # ... and the files each benchmark measures
    .venv/bin/python benchmarks/stale_figures.py --fail-on-stale   # exit 1 when any figure is stale or undated

A *figure section* is a README section (``##``/``###`` heading, headings inside code fences ignored)
whose text runs a repository script: ``python benchmarks/X.py`` (any ``.venv/bin/python``, ``nice -n 10``
prefix). Its *figure date* is the earliest date-and-time the section names (``2026-12-01 09:08–09:10
UTC``, ``Run 2026-12-01 08:09 UTC``, a line break anywhere inside); a bare ``11:31 UTC`` takes the date
named before it in the section, else the one in the enclosing ``##`` section's opening text ("Every
figure below was taken on 2026-12-01"); a date without a time counts from 00:00 UTC. The earliest,
because a section that quotes several runs is stale as soon as one of them predates a change. A
section that names a commit (``commit 1a2b3c4``) is judged by ancestry instead: stale when a commit
after it touched the measured code (exact, unlike dates).

*The code a benchmark measures* is found from the code itself, so it stays true as files move: the
script's imports, followed transitively through the repository (function-level imports too; the
package layout of pyproject's ``[tool.setuptools.package-dir]``, so ``autoaug.trainers`` is
``trainers/``), plus what the repository loads by name rather than by import:

- a string that is a module name (``"-m", "autoaug"``, ``"autoaug.search_spaces"``, a task plug-in
  ``"pkg.tasks:make_task"``): that module, and for a package its ``__main__.py`` and the data files
  beside its ``__init__.py`` (``resources.files(package)``);
- a string naming a tracked file or folder next to the file that holds it (``"presets"``), a
  repository-relative path (``"tests/store_harness.py"``), or the name of a tracked ``.py`` file
  (``"test_fuzz.py"``, loaded with ``spec_from_file_location``).

Only files git tracks count. A section is stale when the last commit touching those files (``git log
-1 --format=%cI -- FILES``) is later than the figure date, or when they have uncommitted changes.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]

HEADING = re.compile(r"^(#{2,3})\s+(.*)$")
FENCE = re.compile(r"^\s*```")
# A script the section runs: "python benchmarks/x.py", ".venv/bin/python benchmarks/x.py", "python3 ...".
COMMAND = re.compile(r"(?:^|[\s`/(])python[\d.]*\s+((?:[\w.-]+/)*[\w.-]+\.py)\b")
DATE = r"(?P<date>\d{4}-\d{2}-\d{2})"
TIME = r"(?P<time>\d{1,2}:\d{2})"
RANGE_END = r"(?:\s*[–-]\s*\d{1,2}:\d{2})?"
# A date with an optional time (and range), or a bare time that says UTC (its date comes from context).
STAMP = re.compile(rf"\b{DATE}(?:[ T]+{TIME}{RANGE_END})?|\b(?P<bare>\d{{1,2}}:\d{{2}}){RANGE_END}\s*UTC\b")
COMMIT = re.compile(r"\bcommit\s+`?([0-9a-f]{7,40})\b", re.I)
MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?$")


# ---------------------------------------------------------------------- the README side
@dataclass
class Section:
    """One README section: its heading, text (code blocks included) and the date its parent gives."""

    title: str
    text: str
    inherited_date: Optional[str] = None  # YYYY-MM-DD from the enclosing ## section's opening text

    @property
    def scripts(self) -> list[str]:
        """Repository scripts the section runs, in order of first mention."""
        return list(dict.fromkeys(COMMAND.findall(self.text)))

    @property
    def stamps(self) -> list[datetime]:
        return figure_stamps(self.text, self.inherited_date)

    @property
    def figure_date(self) -> Optional[datetime]:
        """The earliest time the section names (None: it names none)."""
        return min(self.stamps, default=None)

    @property
    def commit(self) -> Optional[str]:
        match = COMMIT.search(" ".join(self.text.split()))
        return match.group(1) if match else None


def read_sections(readme: str) -> list[Section]:
    """The README cut at its ``##``/``###`` headings (not at ``#`` lines inside code fences)."""
    sections: list[Section] = []
    title, lines, in_fence, level_two_date = "(top)", [], False, None

    def close() -> None:
        sections.append(Section(title, "\n".join(lines), None if level == 2 else level_two_date))

    level = 2
    for line in readme.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else HEADING.match(line)
        if heading is None:
            lines.append(line)
            continue
        close()
        if level == 2:  # the section just closed was a ## one: its opening text dates the ### below it
            level_two_date = first_date(sections[-1].text)
        level, title, lines = len(heading.group(1)), heading.group(2).strip(), []
        if level == 2:
            level_two_date = None
    close()
    return sections


def first_date(text: str) -> Optional[str]:
    match = re.search(DATE, text)
    return match.group("date") if match else None


def figure_stamps(text: str, inherited_date: Optional[str] = None) -> list[datetime]:
    """Every date-and-time ``text`` names, in UTC; a bare time takes the last date before it."""
    flat = " ".join(text.split())  # a stamp may be broken across lines
    stamps, date = [], inherited_date
    for match in STAMP.finditer(flat):
        if match.group("date"):
            date = match.group("date")
            clock = match.group("time") or "00:00"
        elif date is None:
            continue  # a time with no date anywhere before it: nothing to anchor it to
        else:
            clock = match.group("bare")
        try:
            stamps.append(datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc))
        except ValueError:
            continue  # 2026-13-45 or 25:99: not a date
    return stamps


# ---------------------------------------------------------------------- the code side
class CodeMap:
    """The tracked files a script measures: its transitive imports and what it loads by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tracked = {root / name for name in git(root, "ls-files", "-z").split("\0") if name}
        self.by_basename: dict[str, list[Path]] = {}
        for path in self.tracked:
            self.by_basename.setdefault(path.name, []).append(path)
        self.package_dirs = package_dirs(root)
        self.top_folders = [folder for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
        self._resolved: dict[tuple[tuple[str, ...], Path, bool], set[Path]] = {}

    def measured(self, script: str) -> set[Path]:
        start = self.root / script
        seen: set[Path] = set()
        todo = [start] if start in self.tracked else []
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            if path.suffix == ".py":
                todo.extend(self.referenced(path) - seen)
        return seen

    def referenced(self, path: Path) -> set[Path]:
        """Files ``path`` imports or names (see the module docstring's rules)."""
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            return set()
        found: set[Path] = set()
        strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        runs_modules = "-m" in strings  # `python -m package` runs the package's __main__.py
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found |= self.module_files(alias.name, path)
            elif isinstance(node, ast.ImportFrom):
                found |= self.from_import(node, path)
        for text in strings:
            found |= self.named_by_string(text, path, runs_modules)
        return found

    def from_import(self, node: ast.ImportFrom, path: Path) -> set[Path]:
        if node.level:  # relative: resolve by folders, from the importing file's package
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            parts = node.module.split(".") if node.module else []
            found = self.file_of(base.joinpath(*parts)) if parts else self.file_of(base)
            for alias in node.names:
                found |= self.file_of(base.joinpath(*parts, alias.name))
            return found
        found = set()
        for alias in node.names:  # `from a import b`: b may be a submodule
            found |= self.module_files(f"{node.module}.{alias.name}", path, parents=False)
        return found | self.module_files(node.module, path)

    def module_files(self, name: str, importer: Path, parents: bool = True, loose: bool = True) -> set[Path]:
        """The files importing module ``name`` executes (its package ``__init__``s too), if in the repo.

        ``loose``: also look beside the importer and in every top-level folder (what an import statement
        may mean after a script's ``sys.path.insert``); off for names in strings, where a word like
        "policy" or "train" is more often a dict key than a module."""
        parts = name.split(".")
        found = self.first_file(parts, importer, loose)
        if found and parents:  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            for depth in range(1, len(parts)):
                found |= self.first_file(parts[:depth], importer, loose)
        return found

    def first_file(self, parts: list[str], importer: Path, loose: bool = True) -> set[Path]:
        key = (tuple(parts), importer.parent, loose)
        if key not in self._resolved:
            self._resolved[key] = self._first_file(parts, importer, loose)
        return set(self._resolved[key])

    def _first_file(self, parts: list[str], importer: Path, loose: bool) -> set[Path]:
        for base in self.module_bases(parts, importer, loose):
            target = self.file_of(base)
            if target:
                return target
        return set()

    def module_bases(self, parts: list[str], importer: Path, loose: bool = True) -> list[Path]:
        """Where module ``parts`` may live: the package-dir mapping, else the root, the importer's folder
        and any top-level folder holding such a module (a script's ``sys.path.insert(..., "tests")``)."""
        for depth in range(len(parts), 0, -1):
            mapped = self.package_dirs.get(".".join(parts[:depth]))
            if mapped is not None:
                return [self.root / mapped / Path(*parts[depth:]) if parts[depth:] else self.root / mapped]
        relative = Path(*parts)
        if not loose:
            return [self.root / relative]
        return [self.root / relative, importer.parent / relative, *(folder / relative for folder in self.top_folders)]

    def file_of(self, base: Path) -> set[Path]:
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate in self.tracked:
                return {candidate}
        return set()

    def named_by_string(self, text: str, holder: Path, runs_modules: bool = False) -> set[Path]:
        if not text or len(text) > 200 or text.strip() != text or text in (".", ".."):
            return set()
        found: set[Path] = set()
        if MODULE_NAME.match(text) and not text.startswith("__"):
            module = text.partition(":")[0]
            files = self.module_files(module, holder, loose=False)
            for init in [f for f in files if f.name == "__init__.py" and f.parent == self.module_dir(module, holder)]:
                # a package by name: resources.files(package) reads its folder, `python -m package` its __main__
                found |= {p for p in self.tracked if p.parent == init.parent and p.suffix != ".py"}
                found |= self.file_of(init.parent / "__main__") if runs_modules else set()
            found |= files
        beside = holder.parent / text
        found |= self.tracked_under(beside) if beside != holder.parent else set()
        if "/" in text:
            found |= self.tracked_under(self.root / text)
        if text.endswith(".py") and "/" not in text:
            found |= set(self.by_basename.get(text, []))
        return found

    def module_dir(self, module: str, holder: Path) -> Optional[Path]:
        bases = self.module_bases(module.split("."), holder, loose=False)
        return next((base for base in bases if (base / "__init__.py") in self.tracked), None)

    def tracked_under(self, path: Path) -> set[Path]:
        try:
            path = path.resolve()
            path.relative_to(self.root)
        except (ValueError, OSError):
            return set()
        if path in self.tracked:
            return {path}
        prefix = f"{path}/"
        return {p for p in self.tracked if str(p).startswith(prefix)} if path.is_dir() else set()


def package_dirs(root: Path) -> dict[str, str]:
    """pyproject's ``[tool.setuptools.package-dir]`` (module name -> folder), {} when it has none."""
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {name: folder for name, folder in data.get("tool", {}).get("setuptools", {}).get("package-dir", {}).items()
            if name}


# ---------------------------------------------------------------------- git
def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@dataclass
class Change:
    """The last commit touching a set of files."""

    when: datetime
    commit: str
    file: str  # one of the set's files that commit changed


def last_change(root: Path, files: set[Path]) -> Optional[Change]:
    names = sorted(str(path.relative_to(root)) for path in files)
    if not names:
        return None
    line = git(root, "log", "-1", "--format=%H%x09%cI", "--", *names).strip()
    if not line:
        return None
    commit, when = line.split("\t")
    changed = git(root, "show", "--name-only", "--format=", commit, "--", *names).split()
    return Change(datetime.fromisoformat(when), commit[:10], changed[0] if changed else "?")


def changed_after(root: Path, commit: str, files: set[Path]) -> Optional[bool]:
    """Whether a commit after ``commit`` touched ``files``; None when ``commit`` is not in this repository."""
    try:
        git(root, "cat-file", "-e", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        return None
    names = sorted(str(path.relative_to(root)) for path in files)
    return bool(names) and bool(git(root, "rev-list", "-1", f"{commit}..HEAD", "--", *names).strip())


def uncommitted(root: Path, files: set[Path]) -> list[str]:
    names = sorted(str(path.relative_to(root)) for path in files)
    if not names:
        return []
    return [line[3:] for line in git(root, "status", "--porcelain", "--", *names).splitlines()]


# ---------------------------------------------------------------------- the verdict
@dataclass
class Row:
    section: str
    scripts: list[str]
    figure: str  # the figure's date, or commit
    last_change: str
    stale: str  # "yes", "no", or "unknown (...)"
    files: set[Path] = field(default_factory=set)


def judge(section: Section, code: CodeMap, root: Path) -> Row:
    files = set().union(*(code.measured(script) for script in section.scripts))
    missing = [script for script in section.scripts if (root / script) not in code.tracked]
    change = last_change(root, files)
    dirty = uncommitted(root, files)
    described = "none" if change is None else f"{change.when.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC " \
                                             f"{change.commit} ({change.file})"
    if dirty:
        described += f"; uncommitted: {', '.join(dirty[:3])}{' …' if len(dirty) > 3 else ''}"
    figure_date, commit = section.figure_date, section.commit
    after_commit = changed_after(root, commit, files) if commit else None
    if missing:
        stale = f"yes (no such script: {', '.join(missing)})"
    elif after_commit is not None:
        stale = "yes" if after_commit or dirty else "no"
    elif figure_date is None:
        stale = "unknown (no date)"
    else:
        stale = "yes" if dirty or (change is not None and change.when > figure_date) else "no"
    figure = f"commit {commit}" if after_commit is not None else \
        ("none" if figure_date is None else f"{figure_date:%Y-%m-%d %H:%M} UTC")
    return Row(section.title, section.scripts, figure, described, stale, files)


def rows(readme: Path, root: Path) -> list[Row]:
    code = CodeMap(root)
    return [judge(section, code, root) for section in read_sections(readme.read_text()) if section.scripts]


def print_table(table: list[Row], show_files: bool, root: Path) -> None:
    print("| section | benchmark | figure date | last change to the code it measures | stale |")
    print("|---|---|---|---|---|")
    for row in table:
        scripts = ", ".join(Path(script).name for script in row.scripts)
        print(f"| {row.section} | {scripts} | {row.figure} | {row.last_change} | {row.stale} |")
    if show_files:
        for row in table:
            print(f"\n{row.section}: {len(row.files)} files")
            for path in sorted(row.files):
                print(f"  {path.relative_to(root)}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--root", type=Path, default=ROOT, help="the git repository the commands run in")
    parser.add_argument("--files", action="store_true", help="also list the files each section's benchmark measures")
    parser.add_argument("--fail-on-stale", action="store_true", help="exit 1 when a figure is stale or undated")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    table = rows(args.readme, root)
    print_table(table, args.files, root)
    return 1 if args.fail_on_stale and any(row.stale != "no" for row in table) else 0


if __name__ == "__main__":
    sys.exit(main())
