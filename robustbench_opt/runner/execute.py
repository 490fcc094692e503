"""Trains a plan's tasks on Ray Tune and records them through the Store (driver side only).

The rooms: `connect` reaches Ray and checks the nodes, `feed` hands Tune the plan's tasks and
claims their cells, `worker` is what a trial runs, `recorder` writes what the trials report,
`interrupt` makes Ctrl-C quick but never cut a database write. Reused actors, no retries inside
Tune: a cell lost with its worker or node is handed out again by the feed, in this run; a cell
that failed by itself is retried by the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TextIO

from ray import tune

from robustbench_opt.runner import worker
from robustbench_opt.runner.connect import connect, disconnect, preflight
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import CTRL_C
from robustbench_opt.runner.plan import Plan, ray_address
from robustbench_opt.runner.recorder import Heartbeat, Recorder
from robustbench_opt.runner.timings import TIMINGS
from robustbench_opt.spec import StudySpec, spec_hash
from robustbench_opt.states import FAILED
from robustbench_opt.storage import Store


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
    trial_fn: worker.TrialFn | None = None,
    progress: TextIO | None = None,
) -> Outcome:
    """Trains the plan's tasks on Ray Tune and records them; returns what happened.

    Nothing is written before Ray is reachable, the trial resources fit the cluster and, on a
    cluster (`address` or $RAY_ADDRESS), every node passed `preflight`; on this machine the
    caller checks the data (`data.check_data`). The progress line goes to `progress`
    (default: stderr).
    """
    started = time.perf_counter()
    with TIMINGS.phase("Ray start"):
        ray_started = connect(address)
    try:
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
            recorder = Recorder(store, plan.study, len(plan.configs), progress or sys.stderr, feed)
            fit_start = time.time()
            try:
                _fit(
                    feed,
                    resources,
                    plan.max_concurrent,
                    trial_fn,
                    recorder,
                    f"{plan.study}-{run_id}",
                )
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


def _fit(
    feed: TaskFeed,
    resources: worker.RayResources,
    max_concurrent: int | None,
    trial_fn: worker.TrialFn | None,
    recorder: Recorder,
    name: str,
) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new output prints even at verbose=0
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C is `CTRL_C`'s
    # Tune logs every trial traceback and its file writes; errors are recorded in the database
    # and summarised by `run`, so keep the terminal to our progress line.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    trainable = tune.with_parameters(
        worker.trainable, groups=feed.shared(), trial_fn=trial_fn or worker.default_trial_fn
    )
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
                failure_config=tune.FailureConfig(max_failures=0),  # the feed retries cells
            ),
        )
        with CTRL_C.installed():
            tuner.fit()
    finally:
        tune_logger.setLevel(level)
        shutil.rmtree(results_dir, ignore_errors=True)
