"""The Ray executor: Tune trains the feed's tasks on Ray workers, the recorder writes.

`TuneFeed` is the feed as Tune's searcher, `TuneRecorder` the recorder as Tune's callback (it
also tells a lost worker from a trial that raised). Reused actors, no retries inside Tune: a
cell lost with its worker or node is handed out again by the feed, in this run; a cell that
failed by itself is retried by the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

import ray
from ray import tune
from ray.exceptions import LocalRayletDiedError, NodeDiedError, RayActorError, WorkerCrashedError
from ray.tune.search import Searcher

from robustbench_opt.runner import orphans, worker
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import CTRL_C
from robustbench_opt.runner.recorder import Recorder, TrialError, error_line
from robustbench_opt.trial.hooks import TrialFn

# Ray's errors for a trial whose process or node went away (not for one that raised)
LOST_ERRORS = (RayActorError, WorkerCrashedError, NodeDiedError, LocalRayletDiedError)


def fit(
    feed: TaskFeed,
    recorder: Recorder,
    resources: worker.RayResources,
    max_concurrent: int | None,
    trial_fn: TrialFn | None,
    name: str,
) -> None:
    """Trains every task `feed` hands out on Ray Tune; `recorder` writes what they report."""
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
                search_alg=TuneFeed(feed),
                num_samples=-1,  # until the feed says FINISHED
                max_concurrent_trials=max_concurrent or 0,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=results_dir,
                verbose=0,
                callbacks=[TuneRecorder(recorder)],
                failure_config=tune.FailureConfig(max_failures=0),  # the feed retries cells
            ),
        )
        with CTRL_C.installed():
            tuner.fit()
    finally:
        tune_logger.setLevel(level)
        shutil.rmtree(results_dir, ignore_errors=True)


class TuneFeed(Searcher):
    """The task feed as Tune's searcher."""

    def __init__(self, feed: TaskFeed) -> None:
        super().__init__(metric=None, mode=None)
        self.feed = feed

    def __getstate__(self) -> dict[str, Any]:
        """Tune may pickle its searcher for restores, which we never do: drop the feed."""
        return {k: v for k, v in self.__dict__.items() if k != "feed"}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        task = self.feed.suggest(trial_id)
        return Searcher.FINISHED if task == TaskFeed.FINISHED else task

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Results are recorded by the recorder, per cell, which settles the trial."""


class TuneRecorder(tune.Callback):
    """The recorder as Tune's driver-side callback."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config for restores, which we never do: drop the recorder."""
        return {k: v for k, v in self.__dict__.items() if k != "recorder"}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        orphans.refresh()  # the trial's worker joins this run's record of Ray processes
        self.recorder.started(trial.config["cells"])

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.recorder.report(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.recorder.completed(trial.trial_id, trial.config["cells"])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.recorder.errored(trial.trial_id, trial.config["cells"], error_of(trial))


def error_of(trial: Any) -> TrialError:
    """A failed trial's error, read from the trial's local error files: `Trial.get_error()`
    reads the storage copy, which is not synced yet when `on_trial_error` runs."""
    detail, err = "", None
    if trial.error_file and os.path.exists(trial.error_file):
        with open(trial.error_file) as f:
            detail = f.read()
    if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
        with open(trial.pickled_error_file, "rb") as f:
            err = ray.cloudpickle.load(f)
    if err is None:
        lines = [line for line in detail.splitlines() if line.strip()]
        return TrialError(
            lines[-1] if lines else "trial failed without an error message", detail, False
        )
    cause = getattr(err, "cause", None) or err
    # An actor whose creation raised is the code's failure, not a lost process.
    lost = isinstance(cause, LOST_ERRORS) and not getattr(err, "actor_init_failed", False)
    return TrialError(error_line(cause), detail, lost)
