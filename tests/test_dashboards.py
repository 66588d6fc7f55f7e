"""`autoaug ui`, `autoaug report` and the search's live progress (issue 11), on real records.

Real searches (Ray Tune, Optuna, MLflow on SQLite) on a tiny shapes-vqa proxy write one workdir
with several studies: a TPE/ASHA search with baselines, a one-trial search, a search whose every
trial fails (a plug-in model that raises), an NSGA-II search and a PBT population. Reports of them
are opened in Debian's headless Chromium (Playwright driving ``/usr/bin/chromium``; `.ci/run`
installs it), `autoaug ui` is started as a real process, queried over HTTP and stopped with SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from rich.console import Console

from autoaug.dashboards.ui import READY_TIMEOUT_S
from autoaug.search.controller import run_search
from autoaug.search.study import best_trial
from autoaug.search.records import SearchProgress
from conftest import TASKS_MODULE, run_cli, search_request

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHROMIUM = "/usr/bin/chromium"
SMALL = {"train_size": 48, "val_size": 48, "test_size": 16}
PBA_FAST = """
schema_version: 1
kind: pba_schedule
name: pba_fast
ops:
  vision_token_dropout: {p: [0.3, 1.0], magnitude: [0.0, 1.0]}
  text_mask: {p: [0.3, 1.0], magnitude: [0.0, 1.0]}
initial_magnitude: 0.0
perturbation_interval: 1
quantile_fraction: 0.5
"""


# ====================================================================== real searches
def _search(workdir: Path, name: str, console=None, **options) -> dict:
    # calibration and confirmation are off (their own tests cover them; the confirmation's rendering is
    # tested from its recorded contract below); baselines only where asked. One CPU per trial: every slot
    # of a stage starts a worker process that imports torch and Lightning (seconds of CPU each), and the
    # reports do not depend on how many trials ran at once; PBT asks for half a CPU (its population runs
    # at once).
    options.setdefault("cpus_per_trial", 1.0)
    if options.get("task", "shapes-vqa") == "shapes-vqa":
        options.setdefault("task_options", dict(SMALL))
    return run_search(search_request(workdir, name, **options), console=console)


@pytest.fixture(scope="module")
def records(tmp_path_factory, plugin_dir):
    """One workdir, five real studies; the main search's progress is captured as a log file would."""
    workdir = tmp_path_factory.mktemp("dashboards") / "runs"
    progress_log = io.StringIO()
    console = Console(file=progress_log, width=300, force_terminal=False)
    results = {
        "main": _search(workdir, "main", console=console, trials=4, max_epochs=3, sampler="tpe", scheduler="asha",
                        baselines=True),
        "one": _search(workdir, "one", trials=1, max_epochs=1),
        "failed": _search(workdir, "failed", task=f"{TASKS_MODULE}:make_failing_task", trials=2, max_epochs=1),
        "nsga2": _search(workdir, "nsga2", trials=3, max_epochs=2, sampler="nsga2"),
    }
    space = workdir.parent / "pba_fast.yaml"
    space.write_text(PBA_FAST)
    results["pbt"] = _search(workdir, "pbt", space=str(space), scheduler="pbt", trials=3, max_epochs=2, cpus_per_trial=0.5)
    return SimpleNamespace(workdir=workdir, results=results, progress=progress_log.getvalue())


def _study(records, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{records.workdir / 'optuna.db'}")


def _report(records, name: str, tmp_path: Path, capsys) -> tuple[Path, dict]:
    out = tmp_path / f"{name}.html"
    code, stdout, stderr = run_cli(["report", "--name", name, "--out", str(out), "--workdir", str(records.workdir), "--json"],
                                capsys)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return out, json.loads(stdout.strip().splitlines()[-1])


# ====================================================================== the browser
# Playwright's default 30 s is short for launching headless Chromium and running the report's inlined
# plotly.js on a loaded 2-core CI machine; a page that never loads still fails, after this.
BROWSER_TIMEOUT_MS = 120_000


def _open_in_chromium(path: Path) -> dict:
    """Load ``path`` in headless Chromium with the network cut off; what a person would see."""
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=BROWSER_TIMEOUT_MS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))

            def offline(route):  # the report must not need the network: refuse and remember every request
                if route.request.url.startswith(("file:", "data:", "blob:")):
                    route.continue_()
                else:
                    requests.append(route.request.url)
                    route.abort()

            page.route("**/*", offline)
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === "
                                   "document.querySelectorAll('[id^=plot-]').length", timeout=60_000)
            plots = page.evaluate("""() => Array.from(document.querySelectorAll('[id^=plot-]')).map(div => ({
                id: div.id, svg: div.querySelectorAll('.main-svg').length,
                marks: div.querySelectorAll('.scatterlayer .point, .scatterlayer .js-line, .barlayer .point').length}))""")
            sections = page.evaluate("Array.from(document.querySelectorAll('main > section')).map(s => s.id)")
            notes = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('main > section')).map("
                                  "s => [s.id, Array.from(s.querySelectorAll('.note')).map(n => n.innerText)]))")
            text = page.inner_text("body")
            headline = {key: page.inner_text(f"#{key}") for key in ("trial-count", "best-score")}
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "plots": {p["id"]: p for p in plots}, "sections": sections,
            "notes": notes, "text": text, "headline": headline}


def _searched(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if "autoaug_baseline" not in t.user_attrs]


@pytest.mark.slow
def test_report_of_a_real_search_draws_its_plots_in_chromium(records, tmp_path, capsys):
    out, summary = _report(records, "main", tmp_path, capsys)
    study = _study(records, "main")
    exported = best_trial(study)  # what `autoaug export` picks: the report's headline must agree
    assert exported is not None
    assert summary["best_trial"] == exported.number and summary["best_value"] == exported.values[0]
    html = out.read_text()
    assert re.findall(r"<script[^>]*\bsrc=", html) == []  # plotly.js inlined; the browser check below cuts the network

    seen = _open_in_chromium(out)
    assert seen["errors"] == [] and seen["requests"] == []
    assert seen["headline"] == {"trial-count": f"{len(_searched(study))} trials", "best-score": f"{exported.values[0]:.4f}"}
    expected_plots = {"plot-best-so-far", "plot-scores", "plot-ops", "plot-curves"}
    values = {t.values[0] for t in _searched(study) if t.values}
    if len(values) > 1:  # importance is only defined when scores differ
        expected_plots.add("plot-importance")
    else:
        assert any("same score" in note for note in seen["notes"]["importance"])
    assert expected_plots <= set(seen["plots"]), seen["plots"].keys()
    for plot in seen["plots"].values():
        assert plot["svg"] >= 1 and plot["marks"] >= 1, plot  # drawn, with data marks in it
    # every op of every scored searched trial has its panel, every baseline its curve
    ops = {entry["op"] for t in _searched(study) if t.values for entry in t.user_attrs["autoaug_policy"]["entries"]}
    assert all(op in seen["text"] for op in ops)
    baselines = [t.user_attrs["autoaug_baseline"] for t in study.trials if "autoaug_baseline" in t.user_attrs]
    assert len(baselines) == 6 and all(f"baseline {name}" in seen["text"] for name in baselines)
    assert seen["notes"]["confirmation"] == ["no confirmation stage: this search did not retrain its top candidates on fresh seeds"]
    assert "time outside training" in seen["text"] and "wall time" in seen["text"]
    assert "pareto" not in seen["sections"] and "schedules" not in seen["sections"]


@pytest.mark.slow
def test_failed_only_and_one_trial_studies_render(records, tmp_path, capsys):
    out, summary = _report(records, "failed", tmp_path, capsys)
    assert summary["best_value"] is None and summary["n_trials"] == 2
    seen = _open_in_chromium(out)
    assert seen["errors"] == [] and seen["requests"] == []
    assert seen["headline"] == {"trial-count": "2 trials", "best-score": "—"}
    assert "every searched trial failed (2)" in seen["text"]
    assert "deliberate failure from the test plug-in" in seen["text"]  # the error, in the trials table
    assert set(seen["plots"]) == {"plot-scores"}  # the failed trials, on the axis; nothing else has data

    out, summary = _report(records, "one", tmp_path, capsys)
    study = _study(records, "one")
    assert summary["n_trials"] == 1 and summary["best_value"] == study.trials[0].values[0]
    seen = _open_in_chromium(out)
    assert seen["errors"] == [] and seen["requests"] == []
    assert seen["headline"]["trial-count"] == "1 trial"
    assert "one scored trial" in seen["text"]
    assert seen["notes"]["importance"] == ["needs at least 2 scored trials, the study has 1"]
    assert {"plot-best-so-far", "plot-scores", "plot-ops", "plot-curves"} <= set(seen["plots"])


@pytest.mark.slow
def test_nsga2_report_draws_the_pareto_front_and_pbt_the_schedules(records, tmp_path, capsys):
    out, _ = _report(records, "nsga2", tmp_path, capsys)
    study = _study(records, "nsga2")
    seen = _open_in_chromium(out)
    assert seen["errors"] == []
    front = {t.number for t in study.best_trials}
    assert "plot-pareto" in seen["plots"] and f"Pareto front ({len(front)})" in seen["text"]
    assert seen["headline"]["best-score"] == f"{best_trial(study).values[0]:.4f}"

    out, _ = _report(records, "pbt", tmp_path, capsys)
    study = _study(records, "pbt")
    seen = _open_in_chromium(out)
    assert seen["errors"] == []
    assert "plot-schedules" in seen["plots"] and seen["plots"]["plot-schedules"]["marks"] >= 2  # one line per op
    best = best_trial(study)
    assert f"best: pbt {best.user_attrs['pbt_trial_id']}" in seen["text"]


@pytest.mark.slow
def test_confirmation_and_a_still_running_search_render(records, tmp_path, capsys):
    """The confirmation contract (study user attribute ``confirmation``) and a trial still RUNNING."""
    study = _study(records, "one")
    confirmation = {"candidates": [
        {"name": "trial 0", "mean": 0.61, "se": 0.01, "diff_vs_none": 0.03, "diff_se": 0.01, "seeds": [101, 102, 103]},
        {"name": "none", "mean": 0.58, "se": 0.012, "diff_vs_none": 0.0, "diff_se": 0.0, "seeds": [101, 102, 103]}],
        "winner": "trial 0", "verdict": "improves"}
    study.set_user_attr("confirmation", confirmation)
    study.ask()  # what a driver holds while a trial runs
    out, _ = _report(records, "one", tmp_path, capsys)
    seen = _open_in_chromium(out)
    assert seen["errors"] == []
    assert "verdict: improves — winner trial 0" in seen["text"]
    assert re.search(r"trial 0\s+0\.6100 ± 0\.0100\s+\+0\.0300 ± 0\.0100\s+101, 102, 103", seen["text"])
    assert "the search is still running (1 trial(s) in progress" in seen["text"]
    assert "1 running" in seen["text"]


@pytest.mark.slow
def test_report_bad_input_exits_2_with_one_line(records, tmp_path, capsys):
    cases = {
        "unknown study": (["--name", "nope", "--workdir", str(records.workdir)], "--name nope: no such study"),
        "missing workdir": (["--name", "main", "--workdir", str(tmp_path / "missing")], "--workdir"),
        "out is a folder": (["--name", "main", "--workdir", str(records.workdir), "--out", str(tmp_path)], "is a folder"),
    }
    for label, (argv, expected) in cases.items():
        if "--out" not in argv:
            argv = argv + ["--out", str(tmp_path / "r.html")]
        code, _, err = run_cli(["report", *argv], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, (label, err)
    assert not (tmp_path / "missing").exists()  # nothing created by a failed look-up


# ====================================================================== autoaug ui
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening_sockets(session: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by a process of ``session``."""
    import ipaddress

    inodes = set()
    for line in _session_processes(session):
        fd_dir = Path("/proc") / line.split()[0] / "fd"
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        inodes |= {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                # the kernel prints each 32-bit word of the address in host (little-endian) order
                raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                found.add((str(ipaddress.ip_address(raw[:width])), int(port, 16)))
    return found


def _session_processes(session: int) -> list[str]:
    """Processes (pid and command) whose session id is ``session``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == session and fields[0] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
                found.append(f"{entry.name} {command}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_ui_serves_both_dashboards_and_stops_cleanly_on_sigint(records, tmp_path):
    port = _free_port()
    dashboard_port = _free_port()
    while dashboard_port == port:  # the kernel may hand out the port just released again
        dashboard_port = _free_port()
    stdout_path, stderr_path = tmp_path / "ui.out", tmp_path / "ui.err"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "autoaug", "ui", "--workdir", str(records.workdir), "--name", "main",
                                    "--port", str(port), "--dashboard-port", str(dashboard_port)],
                                   stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S + 60  # the UI's own limit decides, not this one
        while "Ctrl-C" not in stdout_path.read_text():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, stdout_path.read_text() + stderr_path.read_text()
            time.sleep(0.5)
        printed = stdout_path.read_text()
        mlflow_url = re.search(r"MLflow, trials of main: (\S+)", printed).group(1)
        dashboard_url = re.search(r"optuna-dashboard, study main: (\S+)", printed).group(1)
        experiment_id = records.results["main"]["mlflow_experiment_id"]
        assert mlflow_url == (f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
                              "?workflowType=machine_learning&viewStateShareKey=autoaug-trials")
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        assert _get(dashboard_url)[0] == 200
        # by default nothing of autoaug ui listens beyond this machine: both servers, and any socket
        # their workers opened, are bound to the loopback address only
        listening = _listening_sockets(process.pid)
        assert {port, dashboard_port} <= {number for _, number in listening}, listening
        assert {address for address, _ in listening} == {"127.0.0.1"}, listening

        # the MLflow REST API lists the study's child runs: one per trial, baselines included
        client = mlflow.MlflowClient(tracking_uri=records.results["main"]["tracking_uri"])
        parent = client.search_runs([experiment_id], filter_string="tags.autoaug_role = 'search'")[0]
        body = json.dumps({"experiment_ids": [experiment_id], "max_results": 1000,
                           "filter": f"tags.mlflow.parentRunId = '{parent.info.run_id}'"}).encode()
        status, payload = _get(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", body)
        served = {run["info"]["run_name"] for run in json.loads(payload)["runs"]}
        study = _study(records, "main")
        expected = {f"trial {t.number}" for t in _searched(study)} | \
                   {f"baseline {t.user_attrs['autoaug_baseline']}" for t in study.trials if "autoaug_baseline" in t.user_attrs}
        assert status == 200 and served == expected
        status, payload = _get(f"http://127.0.0.1:{dashboard_port}/api/studies")
        assert status == 200 and "main" in {s["study_name"] for s in json.loads(payload)["study_summaries"]}

        # the MLflow page a person opens: the trials, flat, with the score and op columns
        _check_mlflow_trials_page(mlflow_url, expected)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            leftovers = _session_processes(process.pid)
            for line in leftovers:  # our own test processes only: the session this test created
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pytest.fail(f"autoaug ui did not stop on SIGINT; left {leftovers}")
    assert code == 0, stderr_path.read_text()
    deadline = time.monotonic() + 15
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(process.pid) == []  # both servers and every worker they forked are gone
    for free in (port, dashboard_port):  # nothing listens any more (TIME_WAIT of our requests is fine)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", free))
    assert "Traceback" not in stderr_path.read_text()


def _check_mlflow_trials_page(url: str, trial_labels: set[str]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=BROWSER_TIMEOUT_MS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.goto(url, wait_until="load")
            page.get_by_text("val_accuracy", exact=True).first.wait_for(timeout=90_000)
            page.get_by_text(f"{len(trial_labels)} matching runs").wait_for(timeout=30_000)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert all(label in text for label in trial_labels)  # flat: no trial hidden under the parent
    assert re.search(r"op\.[a-z_]+\.magnitude", text)


@pytest.mark.slow
def test_ui_bad_input_exits_2_with_one_line(records, tmp_path, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    try:
        base = ["ui", "--workdir", str(records.workdir)]
        cases = {
            "unknown study": (base + ["--name", "nope", "--port", str(_free_port())], "--name nope: no such study"),
            "missing workdir": (["ui", "--workdir", str(tmp_path / "missing")], "--workdir"),
            "port in use": (base + ["--port", str(busy)], f"--port {busy}: already in use"),
            "dashboard port in use": (base + ["--port", str(_free_port()), "--dashboard-port", str(busy)],
                                      f"--dashboard-port {busy}: already in use"),
            "browser-blocked port": (base + ["--port", "5060"], "browsers refuse"),
            "unknown host": (base + ["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
        }
        for label, (argv, expected) in cases.items():
            code, _, err = run_cli(argv, capsys)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err, (label, err)
        # 0.0.0.0 is allowed with a warning; here the port is taken, so it stops after the warning
        code, _, err = run_cli(base + ["--host", "0.0.0.0", "--port", str(busy)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 2, err
        assert lines[0].startswith("warning: --host 0.0.0.0: the MLflow and Optuna records become reachable from the network")
        assert f"--port {busy}: already in use" in lines[1]
    finally:
        taken.close()
    assert not (tmp_path / "missing").exists()


# ====================================================================== live progress
def _trial(trial_id: str, value: float | None, epochs: int) -> SimpleNamespace:
    """What the progress callback reads of a Tune trial: its id and last result."""
    return SimpleNamespace(trial_id=trial_id, last_result={"val_accuracy": value, "training_iteration": epochs})


def test_progress_best_ignores_intermediate_and_stopped_trials():
    """The defect of the issue: a running trial's epoch-2 peak showed as 'best' (0.4767) while the
    summary's best was 0.4600; the best is now the best score of a trial that ran its full length."""
    log = io.StringIO()
    progress = SearchProgress(Console(file=log, width=300, force_terminal=False), total=3, metric="val_accuracy", label="s")
    progress.line_interval_s = 0.0
    first, second, third = _trial("a", 0.46, 12), _trial("b", 0.55, 3), _trial("c", 0.40, 12)
    for trial in (first, second, third):
        progress.on_trial_start(0, [], trial)
    progress.on_trial_result(0, [], first, {"val_accuracy": 0.4767, "training_iteration": 2})
    progress.on_trial_result(0, [], second, {"val_accuracy": 0.55, "training_iteration": 3})
    progress.record(first, "complete")
    progress.record(second, "pruned")  # stopped early by ASHA at epoch 3: not a finished score
    progress.record(third, "complete")
    assert progress.best == 0.46
    lines = log.getvalue().strip().splitlines()
    assert len(lines) == 3 and "0.4767" not in log.getvalue() and "0.5500" not in log.getvalue()
    assert lines[-1].startswith("[s] 3/3 done (2 complete), 0 running, 1 stopped early, 0 failed, best val_accuracy 0.4600")


def test_progress_without_a_terminal_prints_sparse_lines():
    log = io.StringIO()
    progress = SearchProgress(Console(file=log, width=300, force_terminal=False), total=20, metric="val_accuracy", label="s")
    progress.setup()
    for index in range(20):
        trial = _trial(str(index), 0.5, 12)
        progress.on_trial_start(0, [], trial)
        progress.record(trial, "complete")
    progress.on_experiment_end([])
    lines = log.getvalue().strip().splitlines()
    # starts print nothing; finishes at most one line per interval, and always the last one
    assert len(lines) == 2 and lines[-1].startswith("[s] 20/20 done") and "\x1b" not in log.getvalue()


def test_progress_on_a_terminal_redraws_one_bar_in_place():
    log = io.StringIO()
    console = Console(file=log, width=200, force_terminal=True, color_system=None)
    progress = SearchProgress(console, total=3, metric="val_accuracy", label="search s")
    progress.setup()
    for index, state in enumerate(("complete", "pruned", "failed")):
        trial = _trial(str(index), 0.5 + index / 10, 12 if state == "complete" else 3)
        progress.on_trial_start(0, [], trial)
        progress.record(trial, state)
    progress.on_experiment_end([])
    output = log.getvalue()
    assert "\x1b[2K" in output or "\r" in output  # cursor control: the bar is redrawn, not appended
    final = output.split("\r")[-1]
    assert "search s" in final and "3/3" in final and "1 stopped early, 1 failed, best val_accuracy 0.5000" in final
    assert "ETA" in final and re.search(r"\b\d+:\d\d:\d\d\b", final)  # elapsed time shown
    assert progress.__getstate__()["_progress"] is None  # Tune can pickle the callback


@pytest.mark.slow
def test_real_search_progress_best_matches_the_summary(records):
    """The main search's progress (no terminal: sparse lines) ends with the summary's counts, and its
    best is the best full-length trial's score, never higher than any full-length score."""
    study = _study(records, "main")
    full_length = [t.values[0] for t in _searched(study) if t.user_attrs.get("autoaug_state") == "complete"]
    lines = [line for line in records.progress.splitlines() if line.startswith("[search main]")]
    assert lines and lines[-1].startswith("[search main] 4/4 done")
    best_shown = re.search(r"best val_accuracy ([0-9.]+|—)", lines[-1]).group(1)
    assert best_shown == (f"{max(full_length):.4f}" if full_length else "—")
    result = records.results["main"]
    assert f"{result['n_pruned']} stopped early, {result['n_failed']} failed" in lines[-1]
