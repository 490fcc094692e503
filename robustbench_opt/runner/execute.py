"""Trains a plan's tasks and records them through the Store (driver side only).

Two executors train the same tasks (`plan.executor`): `ray` (`tune_fit`: Ray Tune trials on
Ray workers, on this machine or a cluster) and `local` (`local`: worker processes forked from
the driver, on this machine's CPUs, without Ray). Both share the rooms: `feed` hands out the
plan's tasks and claims their cells, `recorder` writes what the trials report, `interrupt`
makes Ctrl-C quick but never cut a database write. Under Ray, `connect` reaches Ray and checks
the nodes, `worker` is what a trial runs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from robustbench_opt.runner import local
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import CTRL_C
from robustbench_opt.runner.plan import Plan, ray_address
from robustbench_opt.runner.recorder import Heartbeat, Recorder
from robustbench_opt.runner.timings import TIMINGS
from robustbench_opt.spec import StudySpec, spec_hash
from robustbench_opt.states import FAILED
from robustbench_opt.storage import Store
from robustbench_opt.trial.hooks import TrialFn


@dataclass
class Outcome:
    """What a run did."""

    claimed: list[str] = field(default_factory=list)  # cell ids this run claimed, once each
    tasks: int = 0  # Ray trials: single cells and packs, retries included
    finished: int = 0  # cells this run recorded done or diverged
    released: list[str] = field(default_factory=list)  # claimed, unfinished, given back at the end
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error
    retried: dict[str, str] = field(default_factory=dict)  # lost with a worker/node -> error
    recovered: list[str] = field(default_factory=list)  # cells freed from dead runs
    interrupted: str | None = None  # what stopped it: "Ctrl-C" or "SIGTERM"
    wall_seconds: float = 0.0  # whole run, Ray start included
    trial_seconds: float = 0.0  # summed wall time of the finished trials


def run_plan(
    store: Store,
    spec: StudySpec,
    plan: Plan,
    *,
    address: str | None = None,
    trial_fn: TrialFn | None = None,
    progress: TextIO | None = None,
) -> Outcome:
    """Trains the plan's tasks with its executor and records them; returns what happened.

    Under Ray, nothing is written before Ray is reachable, the trial resources fit the cluster
    and, on a cluster (`address` or $RAY_ADDRESS), every node passed `preflight`; on this
    machine the caller checks the data (`data.check_data`). `trial_fn` trains a task (default:
    the trial engine). The progress line goes to `progress` (default: stderr).
    """
    started = time.perf_counter()
    ray_run, ray_started = plan.executor == "ray", False
    if ray_run:
        from robustbench_opt.runner import tune_fit, worker  # imports Ray
        from robustbench_opt.runner.connect import connect, disconnect, preflight

        with TIMINGS.phase("Ray start"):
            ray_started = connect(address)
    try:
        if ray_run:
            with TIMINGS.phase("Ray start"):
                resources = worker.trial_resources(spec, plan.configs, plan.trial_cpus)
                if ray_address(address):
                    preflight(spec)
        with TIMINGS.phase("storage setup"):
            store.register_study(
                plan.study, plan.spec, spec_hash(plan.spec), plan.cells, grown=plan.grown
            )
            run_id = store.start_run(plan.study)
        beat = Heartbeat(store, run_id)
        try:
            with TIMINGS.phase("storage setup"):
                outcome = Outcome(recovered=store.recover_stale(plan.study).failed)
            feed = TaskFeed(store, plan.study, run_id, plan.tasks, plan.configs)
            recorder = Recorder(
                store, plan.study, len(plan.configs), progress or sys.stderr, feed, plan.workers
            )
            fit_start = time.time()
            try:
                if ray_run:
                    name = f"{plan.study}-{run_id}"
                    tune_fit.fit(feed, recorder, resources, plan.max_concurrent, trial_fn, name)
                else:
                    local.fit(feed, recorder, plan.workers, int(plan.trial_cpus), trial_fn)
            except KeyboardInterrupt:
                outcome.interrupted = CTRL_C.caught or "Ctrl-C"
            fit_seconds = time.time() - fit_start
            ready = min(recorder.first_ready, time.time()) - fit_start
            TIMINGS.add("first worker ready", max(0.0, ready))
            TIMINGS.add("trials", fit_seconds - max(0.0, ready))
            recorder.close()
            outcome.claimed = list(feed.claimed)
            outcome.tasks = feed.handed_out
            outcome.finished = sum(s != FAILED for s in recorder.finished.values())
            outcome.failed, outcome.retried = recorder.failed, recorder.retried
            outcome.trial_seconds = recorder.trial_seconds
        finally:
            with TIMINGS.phase("shutdown"):
                beat.stop()
                released = store.release(run_id)
        outcome.released = released
    finally:
        if ray_started:
            with TIMINGS.phase("shutdown"):
                disconnect()
    outcome.wall_seconds = time.perf_counter() - started
    return outcome
