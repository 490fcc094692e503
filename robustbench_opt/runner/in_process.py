"""The in-process executor: the driver trains the feed's tasks itself, one after another.

What a small study on this machine spends most of its time on under Ray is Ray: starting it,
a first worker importing torch, shutting it down (`plan.RAY_FIXED_SECONDS`). Here the driver,
with torch already imported, trains each task the feed hands out on `threads` torch threads,
and the recorder writes its reports as it writes a Ray worker's: the same tasks, claims,
reports and records, so a cell's record does not depend on the executor. A trial that raises
fails its unfinished cells (the next run retries them); Ctrl-C or SIGTERM stops at once and the
run releases its claimed cells; a killed driver's claims go stale, as under Ray.
"""

from __future__ import annotations

import itertools
import time

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import CTRL_C
from robustbench_opt.runner.recorder import Recorder, TrialError
from robustbench_opt.runner.reports import epoch_report, result_report
from robustbench_opt.trial.hooks import EpochHook, ResultHook, TrialFn


def default_trial_fn(
    configs: list[TrialConfig], on_epoch: EpochHook, on_result: ResultHook
) -> None:
    """Trains a task's cells with the trial engine."""
    from robustbench_opt.trial.engine import train_cells

    train_cells(configs, on_epoch, on_result)


def fit(feed: TaskFeed, recorder: Recorder, threads: int, trial_fn: TrialFn | None = None) -> None:
    """Trains every task `feed` hands out in this process, on `threads` torch threads."""
    import torch

    train = trial_fn or default_trial_fn
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with CTRL_C.installed():
            for n in itertools.count():
                trial_id = f"in-process-{n}"
                task = feed.suggest(trial_id)
                if task is None or task == TaskFeed.FINISHED:  # None: only with a trial unsettled
                    return
                _train(feed, recorder, train, trial_id, task["cells"])
    finally:
        torch.set_num_threads(before)


def _train(
    feed: TaskFeed, recorder: Recorder, train: TrialFn, trial_id: str, ids: list[str]
) -> None:
    recorder.started(ids)
    ready = time.time()

    def on_epoch(k: int, record: EpochRecord) -> None:
        recorder.report(trial_id, epoch_report(ids[k], record, ready))

    def on_result(k: int, result: TrialResult) -> None:
        recorder.report(trial_id, result_report(ids[k], result, ready))

    try:
        train([feed.configs[cell] for cell in ids], on_epoch, on_result)
    except Exception as err:  # the trial's failure, recorded per cell; the run goes on
        recorder.errored(trial_id, ids, TrialError.raised(err))
    else:
        recorder.completed(trial_id, ids)
