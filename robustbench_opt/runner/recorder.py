"""The recorder: the driver side that writes every trial event, per cell.

Trials only train and report JSON strings tagged with the cell id (`reports`: one per epoch,
one per finished cell): a Ray worker through `tune.report` (`tune_fit.TuneRecorder` passes
them on), a local worker through its pipe (`local`); workers hold no database code or
credentials. The recorder writes each event through the Store, shows the progress line and,
when a trial ends, settles it with the feed: a trial that raised fails its unfinished cells
(the next run retries them), while the unfinished cells of a trial whose worker process or
node died (`lost`) are recorded as failed attempts and handed to the feed to train again in
this run. A pack's finished cells stay finished either way. The run's heartbeat is here too.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from robustbench_opt.config import EpochRecord, TrialResult
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import atomic
from robustbench_opt.runner.plan import duration
from robustbench_opt.runner.timings import TIMINGS
from robustbench_opt.states import DIVERGED, DONE, FAILED
from robustbench_opt.storage import HEARTBEAT_SECONDS, Store

LOG_EVERY_S = 30.0  # off a terminal, a progress line at most this often ...
LOG_EVERY_SHARE = 0.01  # ... or when another 1% of the cells finished, and at the end


class Recorder:
    """Writes every trial event through the Store and shows progress (driver side)."""

    def __init__(
        self,
        store: Store,
        study: str,
        total: int,
        stream: TextIO,
        feed: TaskFeed,
        trials_at_once: int,
    ) -> None:
        self.store, self.study, self.total, self.stream = store, study, total, stream
        self.feed = feed
        self.trials_at_once = trials_at_once  # the plan's choice, recorded in each runtime
        self.running: set[str] = set()
        self.finished: dict[str, str] = {}  # cell id -> done | diverged | failed
        self.failed: dict[str, str] = {}  # cell id -> error
        self.retried: dict[str, str] = {}  # cell id -> the error it was lost with, last time
        self.task_seconds: dict[str, float] = {}  # Ray trial id -> its longest cell's seconds
        self.began = time.monotonic()
        self.tty = stream.isatty()
        self.logged_at, self.logged_finished = -math.inf, -1  # last line off a terminal
        self.first_ready = math.inf  # epoch seconds the first trial's worker began it

    @atomic
    def started(self, cells: Sequence[str]) -> None:
        """A trial of `cells` started."""
        with TIMINGS.phase("recording"):
            for cell_id in cells:
                self.store.record_start(self.study, cell_id)
                self.running.add(cell_id)
        self._show()

    @atomic
    def report(self, trial_id: str, result: dict[str, Any]) -> None:
        """Trial `trial_id` reported `result` (`epoch_report` or `result_report`)."""
        with TIMINGS.phase("recording"):
            self._record(trial_id, result)

    def _record(self, trial_id: str, result: dict[str, Any]) -> None:
        cell_id = result.get("cell")
        if "rbo_ready" in result:
            self.first_ready = min(self.first_ready, float(result["rbo_ready"]))
        if "rbo_epoch" in result:
            record = EpochRecord(**json.loads(result["rbo_epoch"]))
            self.store.record_epoch(self.study, cell_id, record)
        if "rbo_result" in result:
            outcome = TrialResult.from_dict(json.loads(result["rbo_result"]))
            outcome.runtime["trials_at_once"] = self.trials_at_once  # beside its threads
            self.store.record_result(self.study, cell_id, outcome)
            # A pack's cells each report the pack's time so far: count the trial once.
            seconds = max(self.task_seconds.get(trial_id, 0.0), outcome.wall_seconds)
            self.task_seconds[trial_id] = seconds
            self._end(cell_id, DIVERGED if outcome.status == "diverged" else DONE)

    @atomic
    def completed(self, trial_id: str, cells: Sequence[str]) -> None:
        """Trial `trial_id` of `cells` returned; a cell it did not report finished fails."""
        for cell_id in self._unfinished(cells):
            self._fail(cell_id, TrialError("trial ended without reporting a result", "", False))
        self.feed.settle(trial_id)

    @atomic
    def errored(self, trial_id: str, cells: Sequence[str], error: TrialError) -> None:
        """Trial `trial_id` of `cells` raised or was lost: its unfinished cells fail, or, when
        lost, go back to the feed (up to its retries)."""
        unfinished = self._unfinished(cells)  # a pack's finished cells stay finished
        again = self.feed.settle(trial_id, unfinished if error.lost else ())
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

    def _unfinished(self, cells: Sequence[str]) -> list[str]:
        return [cell_id for cell_id in cells if cell_id not in self.finished]

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
        per_cell = (time.monotonic() - self.began) / n
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

    @classmethod
    def raised(cls, err: BaseException) -> TrialError:
        """The error of a trial that raised `err` (in this process)."""
        return cls(error_line(err), "".join(traceback.format_exception(err)), False)


def error_line(err: BaseException) -> str:
    """`Type: first line of the message`, or `Type` when it has none."""
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0]}" if message else type(err).__name__
