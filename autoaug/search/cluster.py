"""The Ray cluster a search runs on: reach it (or start a local one) and size it.

A search on a laptop starts a local Ray; ``--address HOST:PORT`` joins a running cluster (checked with
a plain TCP connect first: Ray itself retries for minutes). Plug-in tasks are made importable on the
cluster's workers (`runtime_env`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

import ray

from autoaug.errors import AutoaugInputError
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
    """Fail fast on an unreachable ``--address`` (Ray itself retries for minutes)."""
    if not address or address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise AutoaugInputError(f"--address {address}: expected HOST:PORT of a Ray head (ray start --head)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise AutoaugInputError(f"--address {address}: no Ray head answers there ({error.strerror or error})") from None


def start_ray(address: Optional[str], runtime_env: Optional[dict]) -> None:
    """Ray for this process (joined at ``address``, else started locally), and Tune's process-wide
    settings; a variable the user set is left as they set it."""
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
    if address:
        kwargs["address"] = address
    else:
        kwargs["object_store_memory"] = 256 * 1024 * 1024  # small machines and CI
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"--address {address}" if address else "local Ray"
        raise AutoaugInputError(f"{where}: cannot start or reach Ray ({str(error).splitlines()[0][:300]})") from None


def slot_count(request) -> int:
    """How many trials run at once on the Ray cluster the search uses."""
    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // request.cpus_per_trial) if request.cpus_per_trial else 1
    if request.gpus_per_trial:
        return max(1, min(by_cpu, int(resources.get("GPU", 0) // request.gpus_per_trial)))
    return max(1, by_cpu)
