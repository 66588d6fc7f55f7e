"""`autoaug ui`: the MLflow UI and optuna-dashboard over a search's records, stopped together.

Both servers are child processes, each in its own process group (so one signal reaches a server
and every worker it forked) inside the caller's session; the parent death signal makes them exit if
``autoaug ui`` itself is killed without a chance to clean up. Ctrl-C (SIGINT) or SIGTERM stops both:
SIGTERM to each group, then SIGKILL for anything still there after a grace period.

MLflow is started with its job runner off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): it serves
GenAI evaluation jobs, which a search never uses, and starts seven worker processes otherwise.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from autoaug.dashboards import sources
from autoaug.errors import AutoaugInputError
from autoaug.storage import (DEFAULT_WORKDIR, find_records, is_tracking_server, open_study, optuna_storage, redact_url,
                             tracking_client)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000  # MLflow's own default; optuna-dashboard takes the next port unless told
# A server that exits is reported at once; this only bounds one that hangs. A cold `mlflow server` (imports,
# database check, then its worker importing the app again) took over a minute on a loaded 2-core machine.
READY_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1
# The Fetch standard's "bad ports": Chromium and Firefox refuse to open them (ERR_UNSAFE_PORT).
BROWSER_BLOCKED_PORTS = frozenset({
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104,
    109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515,
    526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049,
    3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
})


@dataclass
class Server:
    """One served UI: its command, where it answers, and its process once started."""

    label: str
    command: list[str]
    base_url: str
    health_path: str
    log_path: Path
    env: dict = field(default_factory=dict)
    process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env}, preexec_fn=_own_group_dying_with_parent)
        finally:
            log.close()

    def exited(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + self.health_path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after the grace period."""
        if self.process is None:
            return
        for signum, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                break
            if _group_gone(self.process, wait_s):
                break
        if self.process.poll() is None:
            self.process.wait(timeout=5)


def _own_group_dying_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C still stops the servers; only a SIGKILLed parent would leave them


def _group_gone(process: subprocess.Popen, timeout: float) -> bool:
    """Wait until no process of ``process``'s group is left (reaping the leader)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------- validation
def check_host(host: str) -> bool:
    """True when ``host`` is a loopback address; an address this machine cannot bind is an error."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise AutoaugInputError(f"--host {host}: not an address or name this machine knows (default {DEFAULT_HOST})") from None
    addresses = {info[4][0] for info in infos}
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_port_free(host: str, port: int, flag: str) -> None:
    """Bind ``host:port`` once to prove a server can listen there."""
    if not 1 <= port <= 65535:
        raise AutoaugInputError(f"{flag} {port}: expected a port number in 1..65535")
    if port in BROWSER_BLOCKED_PORTS:
        raise AutoaugInputError(f"{flag} {port}: browsers refuse to open this port (the Fetch standard's bad ports); choose another")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as the servers do: a port left in TIME_WAIT by the last run is free; a listener still refuses
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except PermissionError:
            raise AutoaugInputError(f"{flag} {port}: not allowed to listen there (ports below 1024 need privileges)") from None
        except OSError as error:
            if error.errno in (98, 48):  # EADDRINUSE on Linux, macOS
                raise AutoaugInputError(f"{flag} {port}: already in use on {host} (choose another port with {flag})") from None
            raise AutoaugInputError(f"{flag} {port}: cannot listen on {host}:{port} ({error.strerror or error})") from None


def host_warning(host: str) -> Optional[str]:
    """The warning to print for a non-loopback ``--host`` (checked first, so it shows even when
    another input is refused); None on loopback."""
    if check_host(host):
        return None
    return (f"--host {host}: the MLflow and Optuna records become reachable from the network "
            "(anyone who can reach this machine can read them); the default is 127.0.0.1")


def _browse_host(host: str) -> str:
    """The host to put in printed URLs (a wildcard bind is browsed on loopback)."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------- the two servers
def _mlflow_server(tracking_uri: str, artifacts: Path, host: str, port: int, logs: Path) -> Server:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri, "--host", host,
               "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts)]
    return Server("MLflow UI", command, f"http://{_browse_host(host)}:{port}", "/health", logs / "mlflow.log",
                  env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def _optuna_dashboard(optuna_url: str, host: str, port: int, logs: Path) -> Server:
    executable = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if executable is None:
        raise RuntimeError("optuna-dashboard is not installed (pip install optuna-dashboard)")
    # wsgiref (threaded) rather than gunicorn: one light process for one person's browser
    command = [executable, optuna_url, "--host", host, "--port", str(port), "--server", "wsgiref", "--quiet"]
    return Server("optuna-dashboard", command, f"http://{_browse_host(host)}:{port}", "/api/meta", logs / "optuna-dashboard.log")


@dataclass
class Plan:
    """What `serve` will start and print, validated before anything starts."""

    servers: list[Server]
    links: list[tuple[str, str]]  # (what, URL) printed once both answer
    warning: Optional[str]


def plan(workdir: Path | str = DEFAULT_WORKDIR, name: Optional[str] = None, host: str = DEFAULT_HOST,
         port: int = DEFAULT_PORT, dashboard_port: Optional[int] = None, storage: Optional[str] = None,
         tracking_uri: Optional[str] = None) -> Plan:
    """Check every input (records, study, host, ports) and prepare the MLflow trials view."""
    warning = host_warning(host)
    if tracking_uri and is_tracking_server(tracking_uri):
        raise AutoaugInputError(f"--tracking-uri {redact_url(tracking_uri)}: that is an MLflow server already; open it in a browser "
                                "(autoaug ui serves database stores: sqlite, postgresql)")
    dashboard_port = port + 1 if dashboard_port is None else dashboard_port
    if dashboard_port == port:
        raise AutoaugInputError(f"--dashboard-port {dashboard_port}: must differ from --port {port}")
    where = find_records(workdir, storage, tracking_uri, need_tracking=True)
    studies = sources.study_names(where.optuna_url)
    if name is not None:
        open_study(where.optuna_url, name)
        studies = [name]
    elif not studies:
        raise AutoaugInputError(f"--workdir {workdir}: the Optuna storage holds no study yet (run `autoaug search` first)")
    check_port_free(host, port, "--port")
    check_port_free(host, dashboard_port, "--dashboard-port")

    client = tracking_client(where.tracking_uri)
    experiments = []
    for study in studies:
        experiment = sources.experiment_of(client, study)
        if experiment is not None:
            sources.prepare_trials_view(client, experiment.experiment_id, study)
            experiments.append((study, experiment.experiment_id))
    logs = where.workdir / "ui-logs"
    mlflow_server = _mlflow_server(where.tracking_uri, where.artifacts_dir, host, port, logs)
    dashboard = _optuna_dashboard(where.optuna_url, host, dashboard_port, logs)
    links = [(f"MLflow, trials of {study}", sources.trials_url(mlflow_server.base_url, experiment_id))
             for study, experiment_id in experiments]
    if not experiments:
        links.append(("MLflow (no experiment of these studies in this tracking store)", mlflow_server.base_url))
    if name is not None:
        study_id = optuna_storage(where.optuna_url, read_only=True).get_study_id_from_name(name)
        links.append((f"optuna-dashboard, study {name}", f"{dashboard.base_url}/dashboard/studies/{study_id}"))
    else:
        links.append(("optuna-dashboard, all studies", f"{dashboard.base_url}/dashboard"))
    return Plan([mlflow_server, dashboard], links, warning)


def serve(plan_: Plan, console, ready_timeout: float = READY_TIMEOUT_S) -> int:
    """Start both servers, print their URLs once they answer, block until Ctrl-C; returns the exit code."""
    # Installed explicitly: a process started in the background by a shell inherits SIGINT ignored.
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for server in plan_.servers:
            server.start()
        failure = _wait_ready(plan_.servers, ready_timeout)
        if failure:
            console.print(f"[bold red]failed:[/] {failure}", highlight=False, soft_wrap=True)
            return 1
        for what, url in plan_.links:
            console.print(f"{what}: {url}", highlight=False, soft_wrap=True)
        console.print("Ctrl-C stops both servers.", highlight=False)
        while True:
            for server in plan_.servers:
                code = server.exited()
                if code is not None:
                    console.print(f"[bold red]failed:[/] {server.label} stopped (exit code {code}): {server.log_tail()} "
                                  f"(log: {server.log_path})", highlight=False, soft_wrap=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping the MLflow UI and optuna-dashboard ...", highlight=False)
        return 0
    finally:
        for server in plan_.servers:
            server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _wait_ready(servers: list[Server], timeout: float) -> Optional[str]:
    """None once every server answers 200; otherwise why not."""
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            code = server.exited()
            if code is not None:
                return f"{server.label} exited at start-up (code {code}): {server.log_tail()} (log: {server.log_path})"
            if server.answers():
                waiting.remove(server)
        if waiting and time.monotonic() > deadline:
            return f"{', '.join(s.label for s in waiting)} did not answer within {timeout:.0f} s (logs: {waiting[0].log_path.parent})"
        if waiting:
            time.sleep(0.3)
    return None
