"""A real multi-node Ray cluster on this machine, for the suite and `benchmarks/cluster_faults.py`.

`LocalCluster` starts a head (`ray start --head`) and worker nodes (`ray start --address=...`), each
its own set of processes with its own resources, under one private temp folder and on ports nobody
else uses; `remove` and `stop` SIGKILL the process trees of the nodes it started, at once, and
nothing else (other sessions' Ray processes on this machine are never touched; a test cluster needs
no graceful shutdown). The health checks are fast (`FAST_HEALTH_CHECKS`), so a killed node is marked
dead within ~2 s and a test module can share one head, adding and removing its own worker nodes.

Ray 2.59+ turns on token authentication for clusters started with `ray start`; a loopback test
cluster runs with RAY_AUTH_MODE=disabled, and the driver gets the same setting (`env`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

RAY = Path(sys.executable).with_name("ray")

# The GCS marks a node whose raylet stopped answering dead after its health checks fail: by default
# 5 misses 3 s apart (and 10 s timeouts), so a killed worker node would stay "alive" for tens of seconds
# and take placements meanwhile. A loopback test cluster answers in milliseconds when alive.
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
                      "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Node:
    """One `ray start` of the cluster: its `--block` process (the group leader) and what it was given."""

    name: str
    process: subprocess.Popen
    resources: dict
    env: dict

    def processes(self) -> list:
        """The node's processes: its `ray start`, the services it started and their workers. Ray puts
        each worker in a process group of its own, so the node's group alone would miss them."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """Kill every process of the node at once (a lost machine: no clean shutdown, no goodbye to the
        GCS, and its workers die with it instead of finishing their task as orphans)."""
        _kill_all(self.processes())
        self.process.wait(timeout=30)


def _kill_all(processes: list) -> None:
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


@dataclass
class LocalCluster:
    """A head and worker nodes started as separate `ray start` processes (see the module docstring)."""

    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    port: int = 0
    env: dict = field(default_factory=lambda: {**os.environ, "RAY_AUTH_MODE": "disabled", **FAST_HEALTH_CHECKS})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_head(self, num_cpus: int = 1, num_gpus: int = 0, resources: Optional[dict] = None,
                   env: Optional[dict] = None, dashboard: bool = False, port: Optional[int] = None) -> Node:
        """Start the head (``port``: reuse a head port, as a restarted head machine does; default a free
        one). ``dashboard``: serve Ray's dashboard and job server on ``self.dashboard_port``."""
        # Every port a node opens is chosen here: two clusters of parallel sessions never collide.
        chosen, manager, dashboard_port, agent, metrics, runtime = _free_ports(6)
        self.port = port or chosen
        self.dashboard_port = dashboard_port
        args = [f"--port={self.port}", f"--node-manager-port={manager}", f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={runtime}", f"--temp-dir={self.temp_dir}"]
        if dashboard:
            args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
        else:
            args += ["--include-dashboard=false"]
        node = self._start("head", ["--head", *args], num_cpus, num_gpus, resources, env)
        self._wait_until(lambda: self.alive_nodes() >= 1, 180, "the head's GCS did not list the head")
        if dashboard:  # the job server answers on it (`ray job submit`)
            self._wait_until(lambda: _answers(self.dashboard_port), 180, "the head's dashboard did not answer")
        return node

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0, resources: Optional[dict] = None,
                   env: Optional[dict] = None, wait: bool = True) -> Node:
        manager, agent, metrics, runtime, object_manager = _free_ports(5)
        before = self.node_ids()
        name = f"worker{len(self.nodes)}"
        node = self._start(name,
                           [f"--address={self.address}", f"--node-manager-port={manager}",
                            f"--temp-dir={self.temp_dir / name}",
                            f"--object-manager-port={object_manager}",
                            f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                            f"--runtime-env-agent-port={runtime}"],
                           num_cpus, num_gpus, resources, env)
        if wait:
            # a new id, not a count: a node killed before may leave the list meanwhile
            self._wait_until(lambda: bool(self.node_ids() - before), 180, f"{node.name} did not join the cluster")
        return node

    def _start(self, name: str, args: list[str], num_cpus: int, num_gpus: int, resources: Optional[dict],
               env: Optional[dict]) -> Node:
        command = [str(RAY), "start", "--block", "--disable-usage-stats", f"--num-cpus={num_cpus}",
                   f"--num-gpus={num_gpus}", *args]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        node_env = {**self.env, **(env or {})}
        log = open(self.temp_dir / f"{name}.log", "w")
        process = subprocess.Popen(command, env=node_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, process, {"CPU": num_cpus, "GPU": num_gpus, **(resources or {})}, node_env)
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        """How many nodes the head's GCS lists as alive (0 when it does not answer)."""
        return len(self.node_ids())

    def node_ids(self) -> set[str]:
        """The hex ids of the nodes the head's GCS lists as alive, empty when it does not answer. Asked
        in this process: `ray status` would start a Python per poll and read the autoscaler's summary,
        which lags the GCS by seconds."""
        import ray
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        if not self.port or not _answers(self.port):
            # a client made for a GCS that is not listening waits ~40 s in its constructor; one kept
            # from a GCS that died would retry its calls for as long
            self._gcs = (None, None)
            return set()
        try:
            if getattr(self, "_gcs", (None, None))[0] != self.port:  # a head restarted on another port
                self._gcs = (self.port, ray._raylet.GcsClient(address=self.address))
            nodes = self._gcs[1].get_all_node_info(timeout=5)
        except Exception:  # a head that is not up (yet, or any more); a new client next time
            self._gcs = (None, None)
            return set()
        return {node_id.hex() for node_id, info in nodes.items() if info.state == GcsNodeInfo.ALIVE}

    def used(self, resource: str) -> tuple[float, float]:
        """(in use, total) of ``resource`` over the cluster, from Ray's own accounting (`ray status`)."""
        status = subprocess.run([str(RAY), "status", f"--address={self.address}"], env=self.env,
                                capture_output=True, text=True, check=True)
        for line in status.stdout.split("Usage:", 1)[-1].splitlines():
            parts = line.split()
            # "2.0/2.0 GPU", or with "(2.0 used of 2.0 reserved in placement groups)" after it (Tune's trials)
            if len(parts) >= 2 and parts[1] == resource and "/" in parts[0]:
                used, total = parts[0].split("/")
                return float(used), float(total)
        return 0.0, 0.0

    def _wait_until(self, condition, seconds: float, message: str) -> None:
        deadline = time.time() + seconds
        while not condition():
            dead = [node for node in self.nodes if node.process.poll() is not None]
            if time.time() > deadline or dead:
                logs = "".join((self.temp_dir / f"{node.name}.log").read_text()[-1500:] for node in dead)
                self.stop()
                raise RuntimeError(f"{message} within {seconds:.0f} s{' (a node exited)' if dead else ''}: {logs}")
            time.sleep(0.3)  # a poll is one GCS call in this process

    def remove(self, node: Node) -> None:
        """Kill one node's processes (SIGKILL: a lost machine) and forget it; the rest keep running."""
        node.kill()
        self.nodes.remove(node)
        if node.name == "head":
            self._gcs = (None, None)

    def stop(self) -> None:
        """Kill every process this cluster started, at once, and remove its folder. A test cluster needs
        no graceful shutdown (nothing of it outlives the test), and `ray start`'s own SIGTERM handling
        waited up to 20 s per node. The process trees are read before anything dies (orphans leave the
        tree); a raylet killed first can start no new worker."""
        self._gcs = (None, None)  # no client of this process keeps calling a GCS that is gone
        trees = [node.processes() for node in self.nodes]
        _kill_all([process for tree in trees for process in tree])
        for node in self.nodes:
            node.process.wait(timeout=30)
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def trial_runs(workdir: Path, name: str) -> list:
    """The MLflow runs of the study's searched trials."""
    from mlflow.tracking import MlflowClient

    from autoaug.search.record_schema import ROLE_TRIAL, experiment_name, runs_filter
    from autoaug.storage import resolve

    client = MlflowClient(tracking_uri=resolve(workdir).tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=runs_filter(ROLE_TRIAL, name), max_results=1000)
