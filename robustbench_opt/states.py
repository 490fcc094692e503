"""The states a grid cell moves through, defined once (plain strings: no torch, no SQL).

pending -> running (claimed by a run: queued or training) -> done | diverged | failed.
A failed cell (crash, lost node) is retried by the next run; done and diverged are results.
"""

from __future__ import annotations

PENDING, RUNNING, DONE, DIVERGED, FAILED = "pending", "running", "done", "diverged", "failed"
STATES: tuple[str, ...] = (DONE, DIVERGED, FAILED, RUNNING, PENDING)  # display order
FINISHED: tuple[str, ...] = (DONE, DIVERGED)  # measured: never trained again
