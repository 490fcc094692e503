"""The local executor: worker processes forked from the driver train the feed's tasks on this
machine's CPUs, without Ray.

What a small study on this machine spends most of its time on under Ray is Ray: starting it,
a first worker importing torch, shutting it down (8-10 s on a 2-core machine). Here the driver
forks `workers` processes once it has planned: each starts at once with torch and the engine
already imported, trains one task at a time on `threads` torch threads and sends its cells'
reports back through its pipe, and the driver hands out the tasks (the feed) and writes every
report (the recorder), as for Ray workers: the same tasks, claims, reports and records, so a
cell's record does not depend on the executor.

- A task that raises fails its unfinished cells (the next run retries them).
- A worker process that dies (killed, out of memory) loses its task: its unfinished cells go
  back to the feed and a new worker trains them in this run (`feed.LOST_RETRIES`).
- Ctrl-C or SIGTERM stops the workers at once and the run releases its claimed cells; the
  workers end with a driver killed by kill -9 (`forked.die_with_parent`), whose claims go
  stale as under Ray.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.runner import forked
from robustbench_opt.runner.feed import TaskFeed
from robustbench_opt.runner.interrupt import CTRL_C
from robustbench_opt.runner.recorder import Recorder, TrialError
from robustbench_opt.runner.reports import epoch_report, result_report
from robustbench_opt.trial.hooks import EpochHook, ResultHook, TrialFn

COMPLETED = "completed"  # a worker's last message of a task that returned


def default_trial_fn(
    configs: list[TrialConfig], on_epoch: EpochHook, on_result: ResultHook
) -> None:
    """Trains a task's cells with the trial engine."""
    from robustbench_opt.trial.engine import train_cells

    train_cells(configs, on_epoch, on_result)


@dataclass
class _Worker:
    """One forked worker process and the task it trains (None: idle)."""

    process: BaseProcess
    conn: Connection
    trial_id: str | None = None
    cells: list[str] = field(default_factory=list)


def fit(
    feed: TaskFeed, recorder: Recorder, workers: int, threads: int, trial_fn: TrialFn | None = None
) -> None:
    """Trains every task `feed` hands out in `workers` forked processes of `threads` torch
    threads each; returns when the feed is finished."""
    train = trial_fn or default_trial_fn
    names = (f"local-{n}" for n in itertools.count())
    pool = [_fork(threads, train) for _ in range(workers)]
    try:
        with CTRL_C.installed():
            while True:
                for worker in pool:
                    if worker.trial_id is None and not _hand_out(worker, feed, recorder, names):
                        break
                busy = [worker for worker in pool if worker.trial_id is not None]
                if not busy:
                    return  # nothing in flight, nothing left to hand out
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in pool])
                for i, worker in enumerate(pool):
                    if worker.conn in ready or worker.process.sentinel in ready:
                        if not _receive(worker, recorder):  # it died, busy or idle
                            pool[i] = _fork(threads, train)
    finally:
        for worker in pool:
            worker.process.kill()
        for worker in pool:
            worker.process.join()
            worker.conn.close()


def _fork(threads: int, train: TrialFn) -> _Worker:
    ours, theirs = forked.FORK.Pipe()
    process = forked.FORK.Process(target=_serve, args=(theirs, threads, train), daemon=True)
    process.start()
    theirs.close()
    return _Worker(process, ours)


def _hand_out(worker: _Worker, feed: TaskFeed, recorder: Recorder, names: Iterator[str]) -> bool:
    """Gives `worker` the feed's next task; False when the feed has none now."""
    trial_id = next(names)
    task = feed.suggest(trial_id)
    if task is None or task == TaskFeed.FINISHED:  # None: only while a task is in flight
        return False
    worker.trial_id, worker.cells = trial_id, task["cells"]
    recorder.started(worker.cells)
    try:
        worker.conn.send((worker.cells, [feed.configs[cell] for cell in worker.cells]))
    except OSError:  # it died since: `_receive` finds it dead and its task lost
        pass
    return True


def _receive(worker: _Worker, recorder: Recorder) -> bool:
    """Records what `worker` sent; False when its process died (its task is then lost)."""
    try:
        while worker.conn.poll():
            message = worker.conn.recv()
            if isinstance(message, dict):
                recorder.report(worker.trial_id, message)
                continue
            if message == COMPLETED:
                recorder.completed(worker.trial_id, worker.cells)
            else:
                recorder.errored(worker.trial_id, worker.cells, message)
            worker.trial_id, worker.cells = None, []
    except EOFError:
        pass
    if worker.process.is_alive():
        return True
    worker.process.join()
    if worker.trial_id is not None:
        code = worker.process.exitcode or 0
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        line = f"worker process {worker.process.pid} died ({how})"
        recorder.errored(worker.trial_id, worker.cells, TrialError(line, "", True))
    worker.conn.close()
    return False


def _serve(conn: Connection, threads: int, train: TrialFn) -> None:
    """A worker process: trains each task it is sent, reporting through `conn`, until the
    driver closes it."""
    forked.die_with_parent()  # first: until then it has the driver's signal handlers
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            ids, configs = conn.recv()
        except EOFError:
            return
        _train(conn, train, ids, configs)


def _train(conn: Connection, train: TrialFn, ids: list[str], configs: list[TrialConfig]) -> None:
    """One task in a worker: its reports, then COMPLETED or the TrialError it raised."""
    ready = time.time()

    def on_epoch(k: int, record: EpochRecord) -> None:
        conn.send(epoch_report(ids[k], record, ready))

    def on_result(k: int, result: TrialResult) -> None:
        conn.send(result_report(ids[k], result, ready))

    try:
        train(configs, on_epoch, on_result)
    except Exception as err:  # the task's failure, recorded per cell; the worker goes on
        conn.send(TrialError.raised(err))
    else:
        conn.send(COMPLETED)
