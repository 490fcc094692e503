"""Reaching Ray: joining a cluster or starting a local one, and checking every node first.

A local Ray is started with this machine's usable CPUs (`plan.local_cpus`), the count the plan
sizes its packs for, so a dry run and the run it describes agree. Before it starts, what
earlier killed drivers left is ended, and the processes it started are recorded for the next
run (`orphans`: found as the driver's new child processes, through /proc).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from robustbench_opt.errors import UserError
from robustbench_opt.runner import orphans
from robustbench_opt.runner.plan import check_address, local_cpus, ray_address
from robustbench_opt.spec import StudySpec

PREFLIGHT_TIMEOUT_S = 120.0  # a node that cannot start a tiny task in this time is not usable
_ours = False  # the Ray this process is connected to was started or joined by `connect`
_early: list[BaseException] | None = None  # what `connect_early`'s thread raised, while pending
_started = threading.Event()  # set when `connect_early`'s thread has connected (or failed)
_release = threading.Event()  # set by `disconnect`: `connect_early`'s thread may end


def connect_early(address: str | None) -> None:
    """Starts `connect(address)` in a background thread, so that Ray starts while the driver
    plans and calibrates; the next `connect` waits for it (and raises what it raised)."""
    global _early
    if _early is not None or ray.is_initialized():
        return
    errors: list[BaseException] = []
    _started.clear()
    _release.clear()

    def start() -> None:
        try:
            _connect(address)
        except BaseException as err:  # re-raised by `connect`, in the caller's thread
            errors.append(err)
        _started.set()
        # Ray's processes die with the thread that started them (their parent-death signal
        # fires when that thread ends), so this thread lives until `disconnect`.
        _release.wait()

    # Ray warns that a thread other than the main one sets no SIGTERM handler: Ray's handler
    # only exits, and a run's own (`interrupt`) is installed while trials run.
    logging.getLogger("ray._private.worker").setLevel(logging.ERROR)
    _early = errors
    threading.Thread(target=start, daemon=True).start()


def connect(address: str | None) -> bool:
    """Connects to Ray: `address` or $RAY_ADDRESS, else starts a local cluster.

    Reuses an initialised Ray. Returns True when the Ray is `connect`'s (started or joined by
    this call or an earlier one, e.g. `cluster_cpus`): the caller ends it with `disconnect`.
    A local Ray first ends what earlier killed drivers left (`orphans.reap`, one stderr line)
    and records its own processes for the next run to end if this driver is killed.
    """
    global _early
    if _early is not None:
        errors, _early = _early, None
        _started.wait()
        if errors:
            raise errors[0]
    return _connect(address)


def _connect(address: str | None) -> bool:
    global _ours
    if ray.is_initialized():
        return _ours
    address = ray_address(address)
    if not address:
        if ended := orphans.reap():
            print(orphans.describe(ended), file=sys.stderr)
        before = set(orphans.children(os.getpid()))
        ray.init(
            num_cpus=local_cpus(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        # What this init started: the driver's new children (GCS, raylet, monitors), and below
        # them the agents and workers.
        orphans.record(pid for pid in orphans.children(os.getpid()) if pid not in before)
        _ours = True
        return True
    check_address(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"cannot join the Ray cluster at {address!r}: {first}; check --address or "
            "$RAY_ADDRESS, and RAY_AUTH_MODE / RAY_AUTH_TOKEN if the cluster uses token auth"
        ) from None
    _ours = True
    return True


def disconnect() -> None:
    """Shuts down the Ray that `connect` started or joined; its processes need no record."""
    global _ours
    ray.shutdown()
    _release.set()
    orphans.forget()
    _ours = False


def cluster_cpus(address: str) -> float:
    """The CPUs of the Ray cluster at `address`, joined to ask: the run that follows reuses
    the connection (`connect`), and a dry run leaves it as the process exits."""
    connect(address)
    return ray.cluster_resources().get("CPU", 0.0)


def preflight(spec: StudySpec) -> None:
    """On every alive node with CPUs: the package imports and the study's data is there.

    One zero-CPU task per node (it runs even while trials fill the node), so a cluster whose
    workers lack the package or the data fails in one line before anything is written.
    """
    check = ray.remote(num_cpus=0, max_retries=0)(check_node)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    pending = {
        check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(spec.datasets, spec.data_dir, spec.download): n["NodeManagerAddress"]
        for n in nodes
    }
    for ref, host in pending.items():
        try:
            problem = ray.get(ref, timeout=PREFLIGHT_TIMEOUT_S)
        except ray.exceptions.RayError as err:  # it could not run there (import error, lost node)
            lines = [line for line in str(err).splitlines() if line.strip()]
            problem = (
                f"the package robustbench_opt (or its dependencies) does not run there: "
                f"{lines[-1] if lines else type(err).__name__}; install this package on every "
                "node (pip install -e .)"
            )
        if problem is not None:
            raise UserError(f"Ray node {host}: {problem}", ("data_dir",))


def check_node(datasets: tuple[str, ...], data_dir: str | None, download: bool) -> str | None:
    """Worker side of `preflight`: None when this node can train the study, else why not."""
    from robustbench_opt.data import check_data  # the import is half the check

    try:
        for dataset in datasets:
            check_data(dataset, data_dir, download)
    except UserError as err:
        return str(err)
    return None
