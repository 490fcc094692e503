"""The task feed: hands out the plan's tasks and claims their cells, one task at a time.

A task is one trial: one cell, or a pack of cells of one optimizer entry and variant
(`tasks.make_tasks`). The feed hands the executor (Tune, through `tune_fit.TuneFeed`, or the
local workers' loop) the next task when a slot frees and claims its cells only then, so a run
holds a window of cells, never the whole study, and two launchers on one database share a
study's cells: cells another launcher claimed first are skipped, and a task it partly took
trains the rest.

Cells lost with their worker process or node (the recorder tells it, `settle`) are handed out
again in the same run, first, up to `LOST_RETRIES` times each: the recorder has recorded that
attempt as failed, so they are claimed again like any failed cell, and a cell that finished
is never claimed again. The feed says FINISHED only when nothing is left to hand out and no
trial it handed out is still unsettled (one may yet lose cells to retry).
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from robustbench_opt.config import PER_CELL, TrialConfig
from robustbench_opt.runner.interrupt import atomic
from robustbench_opt.storage import Store

LOST_RETRIES = 2  # times one run trains a cell again after it was lost with a worker or node


class TaskFeed:
    """Hands out one task at a time and claims its cells only then (a window, not the study)."""

    FINISHED = "FINISHED"  # `suggest`: nothing is left to hand out (Tune's `Searcher.FINISHED`)

    def __init__(
        self,
        store: Store,
        study: str,
        run_id: str,
        tasks: Sequence[list[str]],
        configs: dict[str, TrialConfig],
    ) -> None:
        self.store, self.study, self.run_id = store, study, run_id
        self.queue, self.configs = deque(tasks), configs
        # What a task's cells share, sent to the workers once (`worker.trainable`'s `groups`);
        # a trial's parameters carry only its cells' per-cell values.
        self.groups: dict[str, int] = {}
        for config in configs.values():
            self.groups.setdefault(config.pack_key, len(self.groups))
        self.claimed: dict[str, None] = {}  # cell ids this feed claimed, in order, once each
        self.handed_out = 0  # trials handed out
        self.total = len(tasks)  # trials to hand out, retries included
        self.retries: Counter[str] = Counter()  # cell id -> times retried after a loss
        self.unsettled: set[str] = set()  # trial ids handed out and not yet settled

    def shared(self) -> list[dict[str, Any]]:
        """Each group's config without the per-cell keys, in group order."""
        return [json.loads(key) for key in self.groups]

    @atomic
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next task, as trial `trial_id`'s parameters ("cells": its cells, claimed now;
        "group": the index of their shared config in `shared()`; "per_cell": their own
        values). When nothing is left: None while a trial is unsettled (it may yet lose cells
        to retry: ask again later), else FINISHED."""
        while self.queue:
            got = self.store.claim(self.study, self.run_id, self.queue.popleft())
            if got:
                self.claimed.update(dict.fromkeys(got))
                self.handed_out += 1
                self.unsettled.add(trial_id)
                first = self.configs[got[0]]
                return {
                    "cells": got,
                    "group": self.groups[first.pack_key],
                    "per_cell": [
                        {key: getattr(self.configs[cell], key) for key in PER_CELL} for cell in got
                    ],
                }
        return None if self.unsettled else self.FINISHED

    def settle(self, trial_id: str, lost: Sequence[str] = ()) -> list[str]:
        """Trial `trial_id` ended; `lost` are its unfinished cells when its worker or node
        died. Those retried fewer than `LOST_RETRIES` times go back to the front of the queue,
        as one task; returns them."""
        self.unsettled.discard(trial_id)
        again = [cell for cell in lost if self.retries[cell] < LOST_RETRIES]
        if again:
            self.retries.update(again)
            self.queue.appendleft(again)
            self.total += 1
        return again
