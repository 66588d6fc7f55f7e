"""The Ray cluster a search runs on: reach it (or start a local one), size it, and watch where trials run.

A search on a laptop starts a local Ray (its object store sized from the data: `object_store_bytes`);
``--address HOST:PORT`` joins a running cluster (checked with a plain TCP connect first: Ray itself
retries for minutes), and so does a search that `ray job submit` started (RAY_ADDRESS); Ray Client
(``ray://``) is refused with the supported way. Plug-in tasks are made importable on the cluster's
workers (`runtime_env`). On a cluster with GPUs each trial gets one unless ``--gpus-per-trial`` says
otherwise (`gpus_per_trial`). `TrialPlacement` records each trial's node on its MLflow run, names a
lost node in the reason its trials failed, and stops the search at the first worker that runs another
autoaug (`check_worker_version`, called by every trial). A search that joined a cluster ends with one
line when the cluster's head is gone (`watch_head`). `ray_storage_path`: ``--storage-path``, which
PBT on several nodes requires. The README section "On a cluster" says how a team runs all this.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import ray
from ray.tune import Callback

from autoaug.errors import AutoaugInputError, ParameterError
from autoaug.search.record_schema import NODE_ID_TAG, NODE_IP_TAG
from autoaug.search.trainable import VERSION_MISMATCH, VersionMismatch
from autoaug.trainers.tasks import import_task_plugin


def runtime_env(request) -> Optional[dict]:
    """Make a ``--task module:function`` plug-in importable by the cluster's workers.

    Ray workers of a cluster started elsewhere do not see the driver's ``sys.path``; the plug-in's
    folder goes on their ``PYTHONPATH`` (same-machine clusters; a multi-node cluster needs the module
    installed on every node, or shipped with Ray's ``py_modules``).
    """
    if not request.task or ":" not in request.task:
        return None
    module = import_task_plugin(request.task).module
    file = Path(module.__file__).resolve()
    # the folder that holds the top-level package (or the single-file module)
    folder = file.parents[module.__name__.count(".") + (file.name == "__init__.py")]
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def check_address(address: Optional[str]) -> None:
    """Fail fast on an unreachable ``--address`` (Ray itself retries for minutes), and refuse Ray Client
    (``ray://``): its driver would run on the head, away from the stores and files this process sees."""
    if address and address.startswith("ray://"):
        raise ParameterError("address", f"{address}: Ray Client (ray://) is not supported; from a laptop, submit the "
                                "search as a Ray job: ray job submit --address http://HEAD:8265 --working-dir . -- "
                                "autoaug search ... (README: On a cluster)")
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError("address", f"{address}: expected HOST:PORT of a Ray head (ray start --head)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise ParameterError("address", f"{address}: no Ray head answers there ({error.strerror or error})") from None


MIN_OBJECT_STORE = 256 * 1024 * 1024  # a local Ray's store for the built-in proxy tasks (small machines, CI)
OBJECT_STORE_HEADROOM = 2  # the prepared task and the copies Ray may hold while a stage hands it on


def object_store_bytes(data_bytes: int = 0) -> int:
    """The object store a locally started Ray gets: `MIN_OBJECT_STORE`, or ``OBJECT_STORE_HEADROOM`` times
    the prepared task (``data_bytes``, what each stage puts in the store once: `tune.with_parameters`)
    plus that minimum, whichever is larger, capped at half of this machine's memory. A cluster started
    with `ray start` sizes its own store (30 % of each node's memory by default)."""
    wanted = max(MIN_OBJECT_STORE, OBJECT_STORE_HEADROOM * int(data_bytes) + MIN_OBJECT_STORE)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return wanted
    return max(MIN_OBJECT_STORE, min(wanted, memory // 2))


def pickled_bytes(value: Any) -> int:
    """How many bytes ``value`` takes once pickled (what Ray puts in its object store), counted as the
    pickle streams out: nothing the size of ``value`` is held beside it. Ray's own cloudpickle, as Ray
    uses: a plug-in task's local functions pickle there and not with the standard pickle."""
    from ray import cloudpickle

    class Count:
        size = 0

        def write(self, chunk) -> int:
            written = memoryview(chunk).nbytes
            Count.size += written
            return written

    cloudpickle.CloudPickler(Count(), protocol=5).dump(value)
    return Count.size


def start_ray(address: Optional[str], runtime_env: Optional[dict], data: Any = None) -> None:
    """Ray for this process (joined at ``address`` or at the RAY_ADDRESS a Ray job runs under, else
    started locally with an object store sized for ``data``, the prepared task every stage puts in the
    store: `object_store_bytes`), and Tune's process-wide settings; a variable the user set is left as
    they set it."""
    # Read by Tune at each fit, so set whoever started Ray. Ray's own per-trial result files (JSON, CSV,
    # TensorBoard) are never read: resume reads the Optuna study and the records are MLflow's, so the
    # bookkeeping is cut to the experiment state.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ray's newer console output prints a "Configuration for experiment" box and a "View detailed
    # results here" line for every stage whatever `verbose` says; the older one honours `verbose=0`.
    # Our progress line and summary already say what those did and where the records are.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                                  logging_level="error")
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    # A driver that `ray job submit` started runs on the cluster with RAY_ADDRESS set: it joins that
    # cluster (which refuses object-store settings from a joining driver) instead of starting its own.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        kwargs["address"] = address
    else:
        kwargs["object_store_memory"] = object_store_bytes(pickled_bytes(data) if data is not None else 0)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"--address {address}" if address else "local Ray"
        raise AutoaugInputError(f"{where}: cannot start or reach Ray ({str(error).splitlines()[0][:300]})") from None
    _cluster_errors_to_stderr()
    if address:  # a local Ray's head is this process's own child, and goes when the search ends
        # the address Ray connected to (RAY_ADDRESS may say "auto"), named as the user gave it
        watch_head(ray.get_runtime_context().gcs_address, shown=address if ":" in address else None)


def _cluster_errors_to_stderr() -> None:
    """Send the cluster's error messages to stderr. The driver's Ray prints what the GCS reports (a node
    marked dead, with its raylet's last log lines) to *stdout*, from a background thread at any moment
    — after the search's JSON too, which must end stdout. Ray has no setting for it: its printer (looked
    up by that thread at each message) is wrapped once to mark those messages as errors."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "autoaug_to_stderr", False):
        return

    def to_stderr(data, ignore_prefix: bool):
        return printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.autoaug_to_stderr = True
    worker.print_to_stdstream = to_stderr


# ---------------------------------------------------------------------- the head lost

HEAD_LOST = "Ray head lost"  # the start of the one line a search ends with when its cluster's head is gone
HEAD_PROBE_SECONDS = 0.5
RAY_GCS_RECONNECT_SECONDS = 60  # Ray's default gcs_rpc_server_reconnect_timeout_s


def head_lost_after() -> float:
    """Seconds the head may refuse connections before the search gives it up: three quarters of Ray's
    own GCS reconnect timeout (``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s by default), at the
    end of which Ray ends the driver process itself with a C++ log line ("Failed to connect to GCS
    within 60 seconds ... The program will terminate"). Before it, a head that comes back (GCS fault
    tolerance) is waited for, as Ray waits."""
    try:
        ray_seconds = float(os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", RAY_GCS_RECONNECT_SECONDS))
    except ValueError:
        ray_seconds = RAY_GCS_RECONNECT_SECONDS
    return max(1.0, 0.75 * ray_seconds)


def head_lost_line(address: str, seconds: float) -> str:
    return (f"{HEAD_LOST}: no Ray head has answered at {address} for {seconds:.0f} s (its node or its GCS is "
            f"gone); finished trials are kept: run the same command again once a head listens there, and the "
            f"search resumes")


def _end_search(line: str) -> None:
    """The search's end when its head is gone: the one line, and the process exits 1 (the CLI's code for
    a stopped search) at once. Nothing finished is lost: each trial is in the study when it finishes;
    trials still running stay RUNNING there and in MLflow, and the next driver marks them failed and
    replaces them, as after any stopped driver. The main thread cannot be woken cleanly instead: it
    waits inside Ray's own calls on the dead head, which Ray ends only by killing the process."""
    try:
        sys.stdout.flush()
        sys.stderr.write(f"stopped: {line}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)


def _still_joined(address: str) -> bool:
    """This process's Ray is up and still the cluster at ``address`` (not shut down, not another one)."""
    try:
        return ray.is_initialized() and ray.get_runtime_context().gcs_address == address
    except Exception:  # Ray shutting down under the question
        return False


def watch_head(address: str, after: Optional[float] = None, on_lost: Callable[[str], None] = _end_search,
               watching: Optional[Callable[[], bool]] = None, shown: Optional[str] = None) -> threading.Thread:
    """Watch the head's GCS at ``address`` (HOST:PORT) from a daemon thread: a TCP connect every
    `HEAD_PROBE_SECONDS`; once it has been refused for ``after`` seconds in a row (`head_lost_after`)
    ``on_lost`` gets `head_lost_line`, naming ``shown`` (the ``--address`` as given) or ``address``.
    The thread ends when ``watching()`` turns false (default: this process's Ray shut down or joined
    another cluster, `_still_joined`) or after ``on_lost``. Returns the started thread."""
    after = head_lost_after() if after is None else after
    watching = watching or (lambda: _still_joined(address))
    host, _, port = address.rpartition(":")

    def answers() -> bool:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False

    def watch() -> None:
        refused_since = None
        while watching():
            if answers():
                refused_since = None
            else:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= after and watching():
                    on_lost(head_lost_line(shown or address, after))
                    return
            time.sleep(HEAD_PROBE_SECONDS)

    thread = threading.Thread(target=watch, name="autoaug-head-watch", daemon=True)
    thread.start()
    return thread


def slot_count(request) -> int:
    """How many trials run at once on the Ray cluster the search uses."""
    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // request.cpus_per_trial) if request.cpus_per_trial else 1
    if request.gpus_per_trial:
        return max(1, min(by_cpu, int(resources.get("GPU", 0) // request.gpus_per_trial)))
    return max(1, by_cpu)


# ---------------------------------------------------------------------- GPUs per trial

DEFAULT_GPUS_PER_TRIAL = 1.0  # on a cluster with GPUs and no --gpus-per-trial: one whole GPU per trial (see below)


def gpus_per_trial(request, cluster_gpus: Optional[float] = None) -> float:
    """The GPU share each trial asks Ray for: ``--gpus-per-trial`` when given (0 keeps trials on CPU),
    else `DEFAULT_GPUS_PER_TRIAL` when the cluster has at least that many GPUs, else all it has
    (a fractional GPU), else 0.

    Why a whole GPU by default: training runs Lightning with ``devices=1``, so a trial never uses more
    than one GPU, and a share below 1 puts several trainings on one card with nothing checking that
    their memory fits; a user who knows their proxy is small asks for ``--gpus-per-trial 0.5``.
    ``cluster_gpus``: the GPUs Ray counts on the cluster (read from the running Ray when None)."""
    if request.gpus_per_trial is not None:
        return float(request.gpus_per_trial)
    if cluster_gpus is None:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    return min(DEFAULT_GPUS_PER_TRIAL, cluster_gpus) if cluster_gpus > 0 else 0.0


def resolve_gpus(request, console=None) -> float:
    """Fix ``request.gpus_per_trial`` for this search (`gpus_per_trial`, on the Ray the search joined or
    started) and, when trials use GPUs, say on ``console`` how many the cluster has, each trial's share
    and how many trials run at once. Returns the share."""
    given = request.gpus_per_trial is not None
    request.gpus_per_trial = gpus_per_trial(request)
    if request.gpus_per_trial and console is not None:
        total = ray.cluster_resources().get("GPU", 0)
        how = "--gpus-per-trial" if given else "default; --gpus-per-trial 0 trains on CPU"
        console.print(f"GPUs: the cluster has {total:g}, each trial gets {request.gpus_per_trial:g} ({how}): "
                      f"{slot_count(request)} trials run at once", markup=False, highlight=False, soft_wrap=True)
    return request.gpus_per_trial


# ---------------------------------------------------------------------- where trials run

NODE_LOST = "NodeLost"  # the error line a trial gets when its node left the cluster while it ran


@dataclass(frozen=True)
class NodeInfo:
    """A Ray node as a trial's record names it: its id (hex) and address."""

    node_id: str
    ip: str

    def describe(self) -> str:
        return f"node {self.ip} ({self.node_id[:12]})"


def actor_node(actor) -> Optional[NodeInfo]:
    """The node a live Ray actor (a trial's worker) runs on, from the cluster's actor table; None when
    Ray cannot say (the actor is gone, or the table lookup failed).

    Ray's public state API (`ray.util.state`) needs the dashboard, which a search starts without; the
    GCS actor table answers without it (`ray._private.state.actors`: a developer API, stable since Ray
    1.x; tests/test_ray_multinode.py fails if it stops naming the node)."""
    try:
        from ray._private.state import actors

        address = actors(actor._actor_id.hex()).get("Address") or {}
    except Exception:  # a record of where a trial ran must never fail the trial
        return None
    node_id = address.get("NodeID") or ""
    if not node_id.strip("0"):
        return None
    return NodeInfo(node_id, address.get("IPAddress", ""))


def node_answers(node_id: str, timeout: float = 2.0) -> bool:
    """Whether the node's raylet still answers (its node-manager port takes a connection). A node whose
    processes died refuses at once; the GCS itself marks it dead only after its health checks time out
    (tens of seconds), too late for the failed trial's record."""
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            if not node.get("Alive"):
                return False
            try:
                with socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])), timeout=timeout):
                    return True
            except (OSError, KeyError, ValueError):
                return False
    return False


def version_mismatch_line(error_text: str) -> Optional[str]:
    """The `VersionMismatch` line of a failed trial's error text, None when it failed otherwise."""
    for line in error_text.splitlines():
        if VERSION_MISMATCH in line:
            return line[line.index(VERSION_MISMATCH):].strip()
    return None


class TrialPlacement(Callback):
    """Where each trial ran, in the driver: the node of each trial's worker, tagged on its MLflow run
    (``NODE_ID_TAG``, ``NODE_IP_TAG``), named in the reason of a trial whose node left the cluster,
    and the first worker with another autoaug stops the search (`VersionMismatch`).

    Tune calls callbacks in list order; the stage puts `before_recorder` ahead of the MLflow recorder
    (the lost node goes into the error file before the recorder reads it) and this callback after it
    (the trial's run exists when its node is tagged; a failed run is closed before the search stops).
    ``run_id_of``: a trial id -> its open MLflow run (None: no MLflow run per trial in this stage)."""

    def __init__(self, client=None, run_id_of: Optional[Callable[[str], Optional[str]]] = None,
                 open_runs: Optional[Callable[[], dict]] = None) -> None:
        self.client = client
        self.run_id_of = run_id_of
        self.open_runs = open_runs
        self.nodes: dict[str, NodeInfo] = {}  # trial id -> where its current attempt runs

    def __getstate__(self) -> dict:
        # Tune pickles its run config (for a restore autoaug never uses): no live client or hooks
        return {**self.__dict__, "client": None, "run_id_of": None, "open_runs": None}

    def before_recorder(self) -> Callback:
        return _NameLostNode(self)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        node = actor_node(trial.temporary_state.ray_actor) if trial.temporary_state.ray_actor else None
        if node is None:
            return
        self.nodes[trial.trial_id] = node
        run_id = self.run_id_of(trial.trial_id) if self.run_id_of else None
        if run_id is not None and self.client is not None:
            self.client.set_tag(run_id, NODE_ID_TAG, node.node_id)
            self.client.set_tag(run_id, NODE_IP_TAG, node.ip)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._stop_on_mismatch(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._stop_on_mismatch(trial)

    def _stop_on_mismatch(self, trial) -> None:
        """A worker with another autoaug: close the runs still open (KILLED, with the reason) and stop
        the search with the one line. Trials still running stay RUNNING in Optuna: the next driver of the
        study marks them failed and replaces them, as after any stopped driver."""
        line = version_mismatch_line(_error_text(trial))
        if line is None:
            return
        if self.client is not None and self.open_runs is not None:
            from autoaug.search.record_schema import ERROR_TAG, STATE_TAG

            for run_id in list(self.open_runs().values()):
                self.client.set_tag(run_id, STATE_TAG, "killed")
                self.client.set_tag(run_id, ERROR_TAG, line)
                self.client.set_terminated(run_id, "KILLED")
        raise VersionMismatch(line)


class _NameLostNode(Callback):
    """Before the recorder: a trial that failed because its node left the cluster gets a last error line
    naming that node (``NodeLost: ...``); Ray's own error says only that the worker stopped answering."""

    def __init__(self, placement: TrialPlacement) -> None:
        self.placement = placement

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._name(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._name(trial)

    def _name(self, trial) -> None:
        node = self.placement.nodes.get(trial.trial_id)
        path = getattr(trial, "error_file", None)
        if node is None or not path or node_answers(node.node_id):
            return
        with open(path, "a") as handle:
            handle.write(f"{NODE_LOST}: {node.describe()} left the cluster while this trial ran on it\n")


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, TypeError):
        return str(getattr(trial, "error_msg", None) or "")


def trial_placement(client, callbacks: list) -> TrialPlacement:
    """The `TrialPlacement` of one stage: it tags the trial runs of the stage's MLflow recorder, when
    the stage has one (searched trials, baselines, PBT; calibration and confirmation log one run per stage)."""
    from autoaug.search.records import MlflowRecorder

    recorder = next((callback for callback in callbacks if isinstance(callback, MlflowRecorder)), None)
    if recorder is None:
        return TrialPlacement()
    return TrialPlacement(client, run_id_of=recorder.run_ids.get, open_runs=lambda: dict(recorder.run_ids))


# ---------------------------------------------------------------------- Ray's results and checkpoints

def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def ray_storage_path(request, locations, checkpoints: bool) -> str:
    """Where Ray Tune keeps a stage's experiment state and trial checkpoints: ``--storage-path`` (a
    folder every node mounts, or a URI Ray's storage reads: ``s3://``, ``gs://``, ...), else the
    workdir's ``ray`` folder on the driver's machine.

    Checkpoints (PBT) are written by the node that ran the trial and read by whichever node resumes a
    clone, so a stage with checkpoints on a cluster of several nodes needs ``--storage-path``: without
    it the search stops here with one line instead of failing on the first clone on another node."""
    given = getattr(request, "storage_path", None)
    if given:
        return str(given)
    if checkpoints and alive_nodes() > 1:
        raise ParameterError("scheduler", f"pbt on a Ray cluster of {alive_nodes()} nodes: PBT moves trial checkpoints "
                                "between nodes; give --storage-path on storage every node sees (a shared folder, "
                                "or s3://bucket/path)")
    return str(locations.ray_dir)
