"""Runs and their claims: leases with heartbeats, stale detection, claiming, release and
recovery of a dead run's cells (see `_base` for what each guarantees)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from robustbench_opt.config import TrialResult
from robustbench_opt.states import FAILED, PENDING, RUNNING
from robustbench_opt.storage import tables as t
from robustbench_opt.storage._base import Recovered
from robustbench_opt.storage.bootstrap import Db
from robustbench_opt.storage.reads import utc
from robustbench_opt.storage.writes import fail_trial, now, write_result

_CHUNK = 500  # cell ids per IN (...) clause


def start_run(db: Db, study: str) -> str:
    """Registers a run of this process; returns its id for claims and heartbeats."""
    run_id = uuid.uuid4().hex[:16]
    started = now()
    row = {
        "run_id": run_id,
        "study": study,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "heartbeat": started,
    }
    with db.engine.begin() as conn:
        conn.execute(sa.insert(t.run), [row])
    return run_id


def heartbeat(db: Db, run_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.update(t.run).where(t.run.c.run_id == run_id).values(heartbeat=now()))


def end_run(db: Db, run_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.update(t.run).where(t.run.c.run_id == run_id).values(ended=now()))


def stale_runs(db: Db, study: str, stale_after_s: float) -> list[str]:
    """Unfinished runs of `study` that are dead: silent too long, or (this host) pid gone."""
    limit = now() - timedelta(seconds=stale_after_s)
    host = socket.gethostname()
    with db.engine.connect() as conn:
        runs = conn.execute(
            sa.select(t.run).where(t.run.c.study == study, t.run.c.ended.is_(None))
        ).all()
    return [
        r.run_id
        for r in runs
        if utc(r.heartbeat) < limit
        or (r.host == host and r.pid != os.getpid() and not pid_alive(r.pid))
    ]


def claim(db: Db, study: str, run_id: str, cell_ids: Iterable[str]) -> list[str]:
    """Atomically claims those of `cell_ids` that are pending or failed; returns the run's."""
    ids = list(cell_ids)
    for part in _chunks(ids):
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(t.cell)
                .where(
                    t.cell.c.study == study,
                    t.cell.c.cell_id.in_(part),
                    t.cell.c.state.in_([PENDING, FAILED]),
                )
                .values(state=RUNNING, claim_run=run_id, updated=now())
            )
    got: set[str] = set()
    with db.engine.connect() as conn:
        for part in _chunks(ids):
            got.update(
                conn.execute(
                    sa.select(t.cell.c.cell_id).where(
                        t.cell.c.study == study,
                        t.cell.c.cell_id.in_(part),
                        t.cell.c.claim_run == run_id,
                        t.cell.c.state == RUNNING,
                    )
                ).scalars()
            )
    return [c for c in ids if c in got]


def claims(db: Db, study: str) -> dict[str, str]:
    """Cell id -> claiming run id, for the cells of `study` currently claimed."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.cell.c.cell_id, t.cell.c.claim_run).where(
                t.cell.c.study == study, t.cell.c.state == RUNNING
            )
        ).all()
    return {cell_id: run_id for cell_id, run_id in rows}


def release(db: Db, run_id: str) -> list[str]:
    """Ends a run: cells it claimed but did not finish go back (Optuna FAIL if started)."""
    with db.engine.connect() as conn:
        claimed = conn.execute(
            sa.select(t.cell.c.study, t.cell.c.cell_id, t.cell.c.optuna_trial_id).where(
                t.cell.c.claim_run == run_id, t.cell.c.state == RUNNING
            )
        ).all()
    released = []
    for study, cell_id, trial_id in claimed:
        state = PENDING if trial_id is None else FAILED
        error = None if trial_id is None else "run interrupted before this cell finished"
        if _release_cell(db, study, cell_id, run_id, state, error):
            fail_trial(db, trial_id, error)
            released.append(cell_id)
    end_run(db, run_id)
    return released


def recover_stale(db: Db, study: str, stale_after_s: float) -> Recovered:
    """Frees the cells claimed by dead runs: their RUNNING Optuna trials become FAIL and the
    cells failed (retried); a trial that did complete is adopted as the cell's result."""
    failed: list[str] = []
    adopted: list[str] = []
    for run_id in stale_runs(db, study, stale_after_s):
        with db.engine.connect() as conn:
            claimed = conn.execute(
                sa.select(t.cell.c.cell_id, t.cell.c.optuna_trial_id).where(
                    t.cell.c.study == study,
                    t.cell.c.claim_run == run_id,
                    t.cell.c.state == RUNNING,
                )
            ).all()
        for cell_id, trial_id in claimed:
            trial = db.optuna.get_trial(trial_id) if trial_id is not None else None
            if trial is not None and trial.state == TrialState.COMPLETE:
                if _adopt(db, study, cell_id, run_id, trial):
                    adopted.append(cell_id)
                continue
            error = f"run {run_id} stopped before this cell finished; retried"
            if _release_cell(db, study, cell_id, run_id, FAILED, error):
                fail_trial(db, trial_id, error)
                failed.append(cell_id)
        end_run(db, run_id)
    return Recovered(failed, adopted)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


def _release_cell(
    db: Db, study: str, cell_id: str, run_id: str, state: str, error: str | None
) -> bool:
    """Conditional reset of a claimed cell; True if this call did it."""
    with db.engine.begin() as conn:
        done = conn.execute(
            sa.update(t.cell)
            .where(
                t.cell.c.study == study,
                t.cell.c.cell_id == cell_id,
                t.cell.c.claim_run == run_id,
                t.cell.c.state == RUNNING,
            )
            .values(state=state, claim_run=None, error=error, updated=now())
        )
    return done.rowcount == 1


def _adopt(db: Db, study: str, cell_id: str, run_id: str, trial: FrozenTrial) -> bool:
    """A dead run's trial completed in Optuna before our row was written: keep it."""
    record: Any = trial.user_attrs.get("record")
    if record is None:
        return False
    with db.engine.connect() as conn:
        still = conn.execute(
            sa.select(sa.func.count()).where(
                t.cell.c.study == study,
                t.cell.c.cell_id == cell_id,
                t.cell.c.claim_run == run_id,
                t.cell.c.state == RUNNING,
            )
        ).scalar_one()
    if not still:
        return False
    write_result(db, study, cell_id, TrialResult.from_dict(record))
    return True


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
