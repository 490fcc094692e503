"""Trains a plan's cells on Ray Tune and records them through the Store (driver side only).

Tune schedules tasks: a task is one Ray trial that trains one cell, or a pack of cells of one
optimizer entry and variant that train together (`trial.engine.train_cells`: one fused forward and
backward, every cell's numbers its own). A Tune searcher (`_TaskFeed`) hands Tune the next task
when a slot frees and claims its cells only then, so a run holds a window of cells, never the
whole study, and two launchers on one database share a study's cells. Reused actors, no retries
inside Tune. Workers only train and `tune.report` JSON strings tagged with the cell id, one per
epoch (`rbo_epoch`) and one per finished cell (`rbo_result`); they hold no database code or
credentials. A driver-side `tune.Callback` writes every event, per cell. Claims plus a heartbeat
keep concurrent runs from training a cell twice; cells a run leaves unfinished (a pack whose
process died: only its unfinished cells) are retried by the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import ray
from ray import tune
from ray.tune.search import Searcher

from robustbench_opt.config import PER_CELL, EpochRecord, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.runner import orphans
from robustbench_opt.runner.plan import Plan, check_address, duration, ray_address
from robustbench_opt.runner.tasks import make_tasks
from robustbench_opt.spec import StudySpec, spec_hash
from robustbench_opt.states import DIVERGED, DONE, FAILED
from robustbench_opt.storage import HEARTBEAT_SECONDS, Store
from robustbench_opt.trial.hooks import EpochHook, ResultHook

# A trainer: trains a task's cells (one, or a pack), reporting each cell's epochs and result
# through the hooks (`trial.train_cells`'s signature; tests inject their own).
TrialFn = Callable[[list[TrialConfig], EpochHook, ResultHook], object]
# What Tune is asked for per trial: fixed, or per cell (`gpus: auto`). Not `spec.Resources`,
# the study's own request that this is derived from.
RayResources = dict[str, float] | Callable[[dict[str, Any]], dict[str, float]]
PREFLIGHT_TIMEOUT_S = 120.0  # a node that cannot start a tiny task in this time is not usable
LOG_EVERY_S = 30.0  # off a terminal, a progress line at most this often ...
LOG_EVERY_SHARE = 0.01  # ... or when another 1% of the cells finished, and at the end


def default_trial_fn(
    configs: list[TrialConfig], on_epoch: EpochHook, on_result: ResultHook
) -> None:
    """Trains a task's cells with the trial engine (torch is imported in the worker only)."""
    from robustbench_opt.trial.engine import train_cells

    train_cells(configs, on_epoch, on_result)


@dataclass
class Outcome:
    """What a run did."""

    claimed: list[str]  # cell ids this run claimed (trained, or tried to)
    tasks: int = 0  # Ray trials: single cells and packs
    finished: int = 0  # cells this run recorded done or diverged
    released: list[str] = field(default_factory=list)  # claimed, unfinished, given back at the end
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error
    recovered: list[str] = field(default_factory=list)  # cells freed from dead runs
    interrupted: bool = False  # Ctrl-C stopped it
    wall_seconds: float = 0.0  # whole run, Ray start included
    trial_seconds: float = 0.0  # summed wall time of the finished trials


def run_plan(
    store: Store,
    spec: StudySpec,
    plan: Plan,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    trial_fn: TrialFn | None = None,
    progress: TextIO | None = None,
) -> Outcome:
    """Trains the plan's cells on Ray Tune and records them; returns what happened.

    Nothing is written before Ray is reachable, the trial resources fit the cluster and, on a
    cluster (`address` or $RAY_ADDRESS), every node passed `preflight`; on this machine the
    caller checks the data (`data.check_data`). The progress line goes to `progress`
    (default: stderr).
    """
    started = time.perf_counter()
    ray_started = connect(address)
    try:
        configs = {c.cell_id(plan.study): c for c in plan.to_run}
        resources = trial_resources(spec, configs)
        if ray_address(address):
            preflight(spec)
        store.register_study(plan.study, plan.spec, spec_hash(plan.spec), plan.cells)
        run_id = store.start_run(plan.study)
        beat = _Heartbeat(store, run_id)
        try:
            recovered = store.recover_stale(plan.study)
            slots = max_concurrent or spec.max_concurrent or _slots(spec)
            tasks = make_tasks(configs, spec.resources, slots)
            feed = _TaskFeed(store, plan.study, run_id, tasks, configs)
            outcome = Outcome(feed.claimed, recovered=recovered.failed)
            recorder = _Recorder(store, plan.study, len(configs), progress or sys.stderr)
            recorder.trials = lambda: f"{feed.handed_out}/{len(tasks)} trials started"
            try:
                _fit(
                    feed,
                    resources,
                    max_concurrent or spec.max_concurrent,
                    trial_fn or default_trial_fn,
                    recorder,
                    f"{plan.study}-{run_id}",
                )
            except KeyboardInterrupt:
                outcome.interrupted = True
            recorder.close()
            outcome.tasks = feed.handed_out
            outcome.finished = sum(s != FAILED for s in recorder.finished.values())
            outcome.failed = recorder.failed
            outcome.trial_seconds = recorder.trial_seconds
        finally:
            beat.stop()
            released = store.release(run_id)
        outcome.released = released
    finally:
        if ray_started:
            ray.shutdown()
            orphans.forget()
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


class _CtrlC:
    """Ctrl-C while Tune runs: a KeyboardInterrupt at once, so the run abandons Tune and shuts
    Ray down in seconds (Tune's own graceful stop waits up to 15 s for its actors), but never
    inside an `_atomic` driver callback: one under way finishes its database writes first."""

    def __init__(self) -> None:
        self.depth, self.pending = 0, False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handler, while the block runs (main thread only; elsewhere Python's default)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            self.pending = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.pending and not self.depth:
                self.pending = False
                raise KeyboardInterrupt


_CTRL_C = _CtrlC()
Method = TypeVar("Method", bound=Callable[..., Any])


def _atomic(method: Method) -> Method:
    """A driver callback that Ctrl-C does not cut in half (see `_CtrlC`)."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _CTRL_C.deferred():
            return method(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _slots(spec: StudySpec) -> int:
    """Trials the cluster can run at once with the study's per-trial CPUs."""
    return max(1, int(ray.cluster_resources().get("CPU", 1.0) // spec.resources.cpus))


class _TaskFeed(Searcher):
    """Hands Tune one task at a time and claims its cells only then (a window, not the study).

    Cells another launcher claimed first are skipped; a task it partly took trains the rest.
    """

    def __init__(
        self,
        store: Store,
        study: str,
        run_id: str,
        tasks: list[list[str]],
        configs: dict[str, TrialConfig],
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.store, self.study, self.run_id = store, study, run_id
        self.tasks, self.configs = iter(tasks), configs
        # What a task's cells share, sent to the workers once (`_trainable`'s `groups`); a
        # trial's parameters carry only its cells' ids, lr, weight decay and seed.
        self.groups: dict[str, int] = {}
        for config in configs.values():
            self.groups.setdefault(config.pack_key, len(self.groups))
        self.claimed: list[str] = []
        self.handed_out = 0

    def __getstate__(self) -> dict[str, Any]:
        """Tune may pickle its searcher for restores, which we never do: drop live handles."""
        drop = ("store", "tasks", "configs")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def shared(self) -> list[dict[str, Any]]:
        """Each group's config without the per-cell keys, in group order."""
        return [json.loads(key) for key in self.groups]

    @_atomic
    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        for cells in self.tasks:
            got = self.store.claim(self.study, self.run_id, cells)
            if got:
                self.claimed.extend(got)
                self.handed_out += 1
                first = self.configs[got[0]]
                return {
                    "cells": got,
                    "group": self.groups[first.pack_key],
                    "per_cell": [
                        {key: getattr(self.configs[cell], key) for key in PER_CELL} for cell in got
                    ],
                }
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Results are recorded by `_Recorder`, per cell."""


def connect(address: str | None) -> bool:
    """Connects to Ray: `address` or $RAY_ADDRESS, else starts a local cluster.

    Reuses an initialised Ray. Returns True when this call started Ray (caller shuts it down).
    A local Ray first ends what earlier killed drivers left (`orphans.reap`, one stderr line)
    and records its own processes for the next run to end if this driver is killed.
    """
    if ray.is_initialized():
        return False
    address = ray_address(address)
    if not address:
        if ended := orphans.reap():
            print(orphans.describe(ended), file=sys.stderr)
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        node = ray._private.worker._global_node  # the processes this init started
        orphans.record(p.process.pid for infos in node.all_processes.values() for p in infos)
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
    return True


def preflight(spec: StudySpec) -> None:
    """On every alive node with CPUs: the package imports and the study's data is there.

    One zero-CPU task per node (it runs even while trials fill the node), so a cluster whose
    workers lack the package or the data fails in one line before anything is written.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0, max_retries=0)(_check_node)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    pending = {
        check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(spec.dataset, spec.data_dir, spec.download): n["NodeManagerAddress"]
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


def _check_node(dataset: str, data_dir: str | None, download: bool) -> str | None:
    """Worker side of `preflight`: None when this node can train the study, else why not."""
    from robustbench_opt.data import check_data  # the import is half the check

    try:
        check_data(dataset, data_dir, download)
    except UserError as err:
        return str(err)
    return None


def trial_resources(spec: StudySpec, configs: dict[str, TrialConfig]) -> RayResources:
    """Ray resources per trial; refuses what the cluster could never schedule."""
    cluster = ray.cluster_resources()
    cpus, gpus = float(spec.resources.cpus), spec.resources.gpus
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if cpus > have_cpu:
        raise UserError(
            f"resources.cpus={cpus:g} per trial but the Ray cluster has {have_cpu:g} CPUs; "
            "lower resources.cpus in the study file or add nodes"
        )
    if gpus == "auto":
        if have_gpu == 0:
            return {"cpu": cpus, "gpu": 0.0}
        from robustbench_opt.runner.packing import gpu_fraction  # imports torch: only when needed

        return lambda params: {
            "cpu": cpus,
            "gpu": gpu_fraction(configs[params["cells"][0]], len(params["cells"])),
        }
    if gpus > 0 and have_gpu == 0:
        raise UserError(
            f"resources.gpus={gpus:g} per trial but the Ray cluster has no GPU; "
            "set resources.gpus to 0 or auto, or join a cluster with GPUs via --address"
        )
    return {"cpu": cpus, "gpu": float(gpus)}


def _trainable(params: dict[str, Any], groups: list[dict[str, Any]], trial_fn: TrialFn) -> None:
    """One Tune trial (worker side): `trial_fn` trains one cell or a pack, reported per cell."""
    ids, shared = params["cells"], groups[params["group"]]
    cells = [TrialConfig.from_dict(shared | values) for values in params["per_cell"]]

    def on_epoch(k: int, record: EpochRecord) -> None:
        tune.report({"cell": ids[k], "rbo_epoch": json.dumps(dataclasses.asdict(record))})

    def on_result(k: int, result: TrialResult) -> None:
        tune.report({"cell": ids[k], "rbo_result": json.dumps(result.to_dict())})

    trial_fn(cells, on_epoch, on_result)


def _fit(
    feed: _TaskFeed,
    resources: RayResources,
    max_concurrent: int | None,
    trial_fn: TrialFn,
    recorder: tune.Callback,
    name: str,
) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new output prints even at verbose=0
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C is `_CTRL_C`'s
    # Tune logs every trial traceback and its file writes; errors are recorded in the database
    # and summarised by `run`, so keep the terminal to our progress line.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    trainable = tune.with_parameters(_trainable, groups=feed.shared(), trial_fn=trial_fn)
    results_dir = tempfile.mkdtemp(prefix="rbo-tune-")  # Tune's own files; the DB has ours
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(
                search_alg=feed,
                num_samples=-1,  # until the feed says FINISHED
                max_concurrent_trials=max_concurrent or 0,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=results_dir,
                verbose=0,
                callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with _CTRL_C.installed():
            tuner.fit()
    finally:
        tune_logger.setLevel(level)
        shutil.rmtree(results_dir, ignore_errors=True)


class _Recorder(tune.Callback):
    """Driver-side Tune callback: writes every trial event through the Store, shows progress."""

    def __init__(self, store: Store, study: str, total: int, stream: TextIO) -> None:
        self.store, self.study, self.total, self.stream = store, study, total, stream
        self.running: set[str] = set()
        self.finished: dict[str, str] = {}  # cell id -> done | diverged | failed
        self.failed: dict[str, str] = {}  # cell id -> error
        self.task_seconds: dict[str, float] = {}  # Ray trial id -> its longest cell's seconds
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.logged_at, self.logged_finished = -math.inf, -1  # last line off a terminal
        self.trials: Callable[[], str] = lambda: "?/? trials started"  # set by run_plan

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config for restores, which we never do: drop the live handles."""
        return {k: v for k, v in self.__dict__.items() if k not in ("store", "stream")}

    @_atomic
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        orphans.refresh()  # the trial's worker joins this run's record of Ray processes
        for cell_id in trial.config["cells"]:
            self.store.record_start(self.study, cell_id)
            self.running.add(cell_id)
        self._show()

    @_atomic
    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        cell_id = result.get("cell")
        if "rbo_epoch" in result:
            record = EpochRecord(**json.loads(result["rbo_epoch"]))
            self.store.record_epoch(self.study, cell_id, record)
        if "rbo_result" in result:
            outcome = TrialResult.from_dict(json.loads(result["rbo_result"]))
            self.store.record_result(self.study, cell_id, outcome)
            # A pack's cells each report the pack's time so far: count the trial once.
            seconds = max(self.task_seconds.get(trial.trial_id, 0.0), outcome.wall_seconds)
            self.task_seconds[trial.trial_id] = seconds
            self._end(cell_id, DIVERGED if outcome.status == "diverged" else DONE)

    @_atomic
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for cell_id in trial.config["cells"]:
            if cell_id not in self.finished:
                self._fail(cell_id, "trial ended without reporting a result", "")

    @_atomic
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_of(trial)
        for cell_id in trial.config["cells"]:  # a pack's finished cells stay finished
            if cell_id not in self.finished:
                self._fail(cell_id, *error)

    @property
    def trial_seconds(self) -> float:
        """Summed wall time of the finished trials (a pack counted once)."""
        return sum(self.task_seconds.values())

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _fail(self, cell_id: str, error: str, detail: str) -> None:
        self.store.record_failure(self.study, cell_id, error, detail)
        self.failed[cell_id] = error
        self._end(cell_id, FAILED)

    def _end(self, cell_id: str, state: str) -> None:
        self.running.discard(cell_id)
        self.finished[cell_id] = state
        self._show()

    def _show(self) -> None:
        """The progress line: redrawn in place on a terminal; elsewhere (logs) at a bounded
        rate, every LOG_EVERY_S seconds or LOG_EVERY_SHARE of the cells, and the last one."""
        now, n = time.monotonic(), len(self.finished)
        if not self.tty:
            due = (
                now - self.logged_at >= LOG_EVERY_S
                or n - self.logged_finished >= max(1, LOG_EVERY_SHARE * self.total)
                or n == self.total
            )
            if not due:
                return
            self.logged_at, self.logged_finished = now, n
        states = list(self.finished.values())
        diverged, failed = states.count(DIVERGED), states.count(FAILED)
        left = self.total - len(states) - len(self.running)
        line = (
            f"{self.study}: {states.count(DONE) + diverged}/{self.total} done "
            f"({diverged} diverged), {len(self.running)} running, {failed} failed, "
            f"{left} left, {self.trials()}, ETA {self._eta()}"
        )
        self.stream.write("\r\033[K" + line if self.tty else line + "\n")
        self.stream.flush()

    def _eta(self) -> str:
        n = len(self.finished)
        if n == 0:
            return "?"
        per_cell = (time.monotonic() - self.started) / n
        return duration(per_cell * (self.total - n))


class _Heartbeat:
    """Refreshes the run's heartbeat from a daemon thread until stopped."""

    def __init__(self, store: Store, run_id: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, run_id), daemon=True)
        self._thread.start()

    def _beat(self, store: Store, run_id: str) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            store.heartbeat(run_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _error_of(trial: Any) -> tuple[str, str]:
    """A failed trial's error as one line (`Type: message`) and its full traceback.

    Read from the trial's local error files: `Trial.get_error()` reads the storage copy, which
    is not synced yet when `on_trial_error` runs.
    """
    detail, cause = "", None
    if trial.error_file and os.path.exists(trial.error_file):
        with open(trial.error_file) as f:
            detail = f.read()
    if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
        with open(trial.pickled_error_file, "rb") as f:
            err = ray.cloudpickle.load(f)
        cause = getattr(err, "cause", None) or err
    if cause is None:
        lines = [line for line in detail.splitlines() if line.strip()]
        return (lines[-1] if lines else "trial failed without an error message"), detail
    message = str(cause).strip().splitlines()
    return (f"{type(cause).__name__}: {message[0]}" if message else type(cause).__name__), detail
