"""The recorder: the driver-side Tune callback that writes every trial event, per cell.

Workers only train and `tune.report` JSON strings tagged with the cell id, one per epoch
(`rbo_epoch`) and one per finished cell (`rbo_result`); they hold no database code or
credentials. The recorder writes each event through the Store, shows the progress line and,
when a trial ends, settles it with the feed: a trial that raised fails its unfinished cells
(the next run retries them), while the unfinished cells of a trial whose worker process or node
died (`lost`) are recorded as failed attempts and handed to the feed to train again in this
run. A pack's finished cells stay finished either way. The run's heartbeat is here too.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import ray
from ray import tune
from ray.exceptions import LocalRayletDiedError, NodeDiedError, RayActorError, WorkerCrashedError

from robustbench_opt.config import EpochRecord, TrialResult
from robustbench_opt.runner import orphans
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import atomic
from robustbench_opt.runner.plan import duration
from robustbench_opt.runner.timings import TIMINGS
from robustbench_opt.states import DIVERGED, DONE, FAILED
from robustbench_opt.storage import HEARTBEAT_SECONDS, Store

LOG_EVERY_S = 30.0  # off a terminal, a progress line at most this often ...
LOG_EVERY_SHARE = 0.01  # ... or when another 1% of the cells finished, and at the end
# Ray's errors for a trial whose process or node went away (not for one that raised)
LOST_ERRORS = (RayActorError, WorkerCrashedError, NodeDiedError, LocalRayletDiedError)


class Recorder(tune.Callback):
    """Driver-side Tune callback: writes every trial event through the Store, shows progress."""

    def __init__(self, store: Store, study: str, total: int, stream: TextIO, feed: TaskFeed):
        self.store, self.study, self.total, self.stream = store, study, total, stream
        self.feed = feed
        self.running: set[str] = set()
        self.finished: dict[str, str] = {}  # cell id -> done | diverged | failed
        self.failed: dict[str, str] = {}  # cell id -> error
        self.retried: dict[str, str] = {}  # cell id -> the error it was lost with, last time
        self.task_seconds: dict[str, float] = {}  # Ray trial id -> its longest cell's seconds
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.logged_at, self.logged_finished = -math.inf, -1  # last line off a terminal
        self.first_ready = math.inf  # epoch seconds the first trial's worker began it

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config for restores, which we never do: drop the live handles."""
        drop = ("store", "stream", "feed")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    @atomic
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        orphans.refresh()  # the trial's worker joins this run's record of Ray processes
        with TIMINGS.phase("recording"):
            for cell_id in trial.config["cells"]:
                self.store.record_start(self.study, cell_id)
                self.running.add(cell_id)
        self._show()

    @atomic
    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        with TIMINGS.phase("recording"):
            self._record(trial, result)

    def _record(self, trial: Any, result: dict) -> None:
        cell_id = result.get("cell")
        if "rbo_ready" in result:
            self.first_ready = min(self.first_ready, float(result["rbo_ready"]))
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

    @atomic
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for cell_id in self._unfinished(trial):
            self._fail(cell_id, TrialError("trial ended without reporting a result", "", False))
        self.feed.settle(trial.trial_id)

    @atomic
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = error_of(trial)
        unfinished = self._unfinished(trial)  # a pack's finished cells stay finished
        again = self.feed.settle(trial.trial_id, unfinished if error.lost else ())
        for cell_id in unfinished:
            if cell_id in again:  # this attempt failed; the feed hands the cell out again
                self.store.record_failure(self.study, cell_id, error.line, error.detail)
                self.retried[cell_id] = error.line
                self.running.discard(cell_id)
            else:
                self._fail(cell_id, error)
        self._show()

    @property
    def trial_seconds(self) -> float:
        """Summed wall time of the finished trials (a pack counted once)."""
        return sum(self.task_seconds.values())

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _unfinished(self, trial: Any) -> list[str]:
        return [cell_id for cell_id in trial.config["cells"] if cell_id not in self.finished]

    def _fail(self, cell_id: str, error: TrialError) -> None:
        self.store.record_failure(self.study, cell_id, error.line, error.detail)
        self.failed[cell_id] = error.line
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
            f"{left} left, {self.feed.handed_out}/{self.feed.total} trials started, "
            f"ETA {self._eta()}"
        )
        self.stream.write("\r\033[K" + line if self.tty else line + "\n")
        self.stream.flush()

    def _eta(self) -> str:
        n = len(self.finished)
        if n == 0:
            return "?"
        per_cell = (time.monotonic() - self.started) / n
        return duration(per_cell * (self.total - n))


class Heartbeat:
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


@dataclass(frozen=True)
class TrialError:
    """Why a trial failed: one line (`Type: message`), the full traceback, and whether its
    worker process or node was lost (rather than the training raising)."""

    line: str
    detail: str
    lost: bool


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
    message = str(cause).strip().splitlines()
    line = f"{type(cause).__name__}: {message[0]}" if message else type(cause).__name__
    return TrialError(line, detail, lost)
