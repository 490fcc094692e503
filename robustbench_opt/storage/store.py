"""The results database: Optuna RDB storage plus our cell table, in one SQL database.

Optuna's tables are what users browse (optuna-dashboard); our tables (`tables.py`) give every
grid cell a unique row whose state is changed only by atomic conditional UPDATEs, so two
concurrent runs never train the same cell. Only the driver process writes here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.spec import identity
from robustbench_opt.storage import tables as t
from robustbench_opt.storage.optuna_trials import CellKey, study_distributions, template

DEFAULT_URL = "sqlite:///storage/robustbench.db"
ENV_VAR = "ROBUSTBENCH_STORAGE"
HEARTBEAT_SECONDS = 15.0  # how often a run refreshes its heartbeat
STALE_AFTER_SECONDS = 180.0  # a run silent this long has lost its claims (any host)
_CHUNK = 500  # cell ids per IN (...) clause
SCHEMA_ATTEMPTS = 5  # opening a new database retries when another process creates it too

CELL_COLUMNS = (
    "cell_id",
    "optimizer",
    "variant",
    "lr",
    "weight_decay",
    "seed",
    "state",
    "final_test_acc",
    "best_test_acc",
    "best_epoch",
    "test_acc_at_best_val",
    "epochs_run",
    "seconds",
    "error",
)
EPOCH_COLUMNS = (
    "cell_id",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
)
IMPORT_REQUIRED = (
    "optimizer",
    "variant",
    "lr",
    "weight_decay",
    "seed",
    "final_test_acc",
    "diverged",
)
IMPORT_OPTIONAL = ("best_test_acc", "epochs")


def resolve_url(url: str | None) -> str:
    """The --storage argument, else $ROBUSTBENCH_STORAGE, else the default SQLite file."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def spec_hash(spec: dict[str, Any]) -> str:
    """Stable hash of what a study measures (its canonical dict less the run-only keys)."""
    return hashlib.sha256(json.dumps(identity(spec), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StudySummary:
    """One registered study and how many of its cells are in each state."""

    name: str
    source: str  # "run" | "import"
    n_cells: int
    done: int
    diverged: int
    failed: int
    running: int
    pending: int
    created: datetime  # UTC


@dataclass(frozen=True)
class StudyRecord:
    """What a study was registered with."""

    name: str
    source: str
    spec: dict[str, Any]
    spec_hash: str


@dataclass(frozen=True)
class Recovered:
    """Cells whose claiming run stopped without finishing them."""

    failed: list[str]  # reset to failed, to be retried
    adopted: list[str]  # their Optuna trial had completed: the result is kept


class Store:
    """Read and write access to one results database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Opens `url`; a bad or unreachable URL is a UserError and leaves the database untouched.

        `create=False` refuses a SQLite file that does not exist yet (for read-only commands).
        """
        self.url = url
        parsed = _parse(url)
        self.display_url = parsed.render_as_string(hide_password=True)
        _check_sqlite_path(parsed, url, create)
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                self._optuna = RDBStorage(url, engine_kwargs=_engine_kwargs(parsed))
                self._engine = self._optuna.engine
                t.metadata.create_all(self._engine)
                break
            except (sa.exc.SQLAlchemyError, ImportError, RuntimeError) as err:
                first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
                if attempt < SCHEMA_ATTEMPTS and _lost_schema_race(first):
                    time.sleep(0.2 * attempt)  # another process just created the schema
                    continue
                raise UserError(
                    f"cannot open storage {self.display_url}: {first}; "
                    f"check --storage or ${ENV_VAR}"
                ) from None
        self._distributions: dict[str, dict[str, Any]] = {}

    @staticmethod
    def exists(url: str) -> bool:
        """False only for a SQLite file that does not exist yet (nothing to read)."""
        parsed = _parse(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return True
        return Path(parsed.database).exists()

    @property
    def optuna_storage(self) -> RDBStorage:
        """The Optuna storage (for optuna.load_study and the dashboard)."""
        return self._optuna

    # ------------------------------------------------------------------ read API

    def list_studies(self) -> list[StudySummary]:
        """Every registered study with its cell counts per state, oldest first."""
        with self._engine.connect() as conn:
            studies = conn.execute(sa.select(t.study).order_by(t.study.c.created)).all()
            counts = conn.execute(
                sa.select(t.cell.c.study, t.cell.c.state, sa.func.count()).group_by(
                    t.cell.c.study, t.cell.c.state
                )
            ).all()
        per: dict[str, dict[str, int]] = {}
        for name, state, n in counts:
            per.setdefault(name, {})[state] = n
        out = []
        for row in studies:
            c = per.get(row.name, {})
            out.append(
                StudySummary(
                    name=row.name,
                    source=row.source,
                    n_cells=sum(c.values()),
                    done=c.get(t.DONE, 0),
                    diverged=c.get(t.DIVERGED, 0),
                    failed=c.get(t.FAILED, 0),
                    running=c.get(t.RUNNING, 0),
                    pending=c.get(t.PENDING, 0),
                    created=_utc(row.created),
                )
            )
        return out

    def has_study(self, name: str) -> bool:
        return self.study_record(name) is not None

    def study_record(self, name: str) -> StudyRecord | None:
        """The registered spec of study `name`, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.study).where(t.study.c.name == name)).first()
        if row is None:
            return None
        return StudyRecord(row.name, row.source, json.loads(row.spec_json), row.spec_hash)

    def cells_frame(self, study: str) -> pd.DataFrame:
        """One row per registered cell (one query); accuracies are fractions, NaN where absent."""
        cols = [t.cell.c[name] for name in CELL_COLUMNS]
        query = sa.select(*cols).where(t.cell.c.study == study).order_by(t.cell.c.id)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=list(CELL_COLUMNS))
        floats = ["lr", "weight_decay", "final_test_acc", "best_test_acc"]
        floats += ["test_acc_at_best_val", "seconds", "best_epoch", "epochs_run"]
        frame[floats] = frame[floats].astype(float)
        frame["seed"] = frame["seed"].astype(int)
        return frame

    def epochs_frame(self, study: str) -> pd.DataFrame:
        """One row per recorded epoch of every cell of `study`."""
        cols = [t.epoch.c[name] for name in EPOCH_COLUMNS]
        query = (
            sa.select(*cols)
            .where(t.epoch.c.study == study)
            .order_by(t.epoch.c.cell_id, t.epoch.c.epoch)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=list(EPOCH_COLUMNS))
        floats = [c for c in EPOCH_COLUMNS if c not in ("cell_id", "epoch")]
        frame[floats] = frame[floats].astype(float)
        frame["epoch"] = frame["epoch"].astype(int)
        return frame

    def import_cells(
        self,
        study: str,
        rows: list[dict[str, Any]],
        source_note: str,
        on_row: Callable[[int], None] | None = None,
    ) -> None:
        """Registers an imported study: every row becomes a COMPLETE Optuna trial and our row.

        All or nothing: rows are validated first, and on any write error everything written
        for `study` is removed again. An existing study name is refused. `on_row(n)` is called
        after the n-th Optuna trial is written (one transaction each: ~25 ms per row on SQLite).
        """
        if self._study_exists_anywhere(study):
            raise UserError(
                f"study {study!r} already exists in {self.display_url}; import under another name"
            )
        cells = [_import_row(study, i, row) for i, row in enumerate(rows)]
        if not cells:
            raise UserError(f"nothing to import into study {study!r}: no rows")
        seen: dict[str, int] = {}
        for i, (cell_id, *_rest) in enumerate(cells):
            if cell_id in seen:
                raise UserError(
                    f"import row {i} repeats row {seen[cell_id]} (same optimizer, variant, lr, "
                    "weight_decay, seed); remove the duplicate"
                )
            seen[cell_id] = i
        spec = {"import": source_note}
        try:
            study_id = self._optuna.create_new_study([StudyDirection.MAXIMIZE], study)
            self._optuna.set_study_user_attr(study_id, "source", "import")
            self._optuna.set_study_user_attr(study_id, "note", source_note)
            dists = study_distributions([c[1] for c in cells])
            cell_rows = []
            for cell_id, key, row in cells:
                attrs = {
                    "cell_id": cell_id,
                    "status": "diverged" if row["diverged"] else "completed",
                    "diverged": bool(row["diverged"]),
                    "best_test_acc": row.get("best_test_acc"),
                    "record": {"source": "import", "note": source_note, "row": row},
                }
                value = _finite(
                    row["final_test_acc"] if row["final_test_acc"] is not None else math.nan
                )
                trial = template(key, dists, TrialState.COMPLETE, attrs, value)
                trial_id = self._optuna.create_new_trial(study_id, template_trial=trial)
                if on_row is not None:
                    on_row(len(cell_rows) + 1)
                cell_rows.append(
                    _cell_values(study, cell_id, key, "{}")
                    | {
                        "state": t.DIVERGED if row["diverged"] else t.DONE,
                        "optuna_trial_id": trial_id,
                        "final_test_acc": row["final_test_acc"],
                        "best_test_acc": row.get("best_test_acc"),
                        "epochs_run": row.get("epochs"),
                        "record_json": json.dumps(attrs["record"]),
                        "updated": _now(),
                    }
                )
            with self._engine.begin() as conn:
                conn.execute(sa.insert(t.study), [_study_values(study, "import", spec)])
                conn.execute(sa.insert(t.cell), cell_rows)
        except BaseException:
            self._remove_study(study)
            raise

    # ------------------------------------------------------------------ write API (runner)

    def register_study(self, name: str, spec: dict[str, Any], cells: list[TrialConfig]) -> None:
        """Registers study `name` and its cells, or checks they match what is registered.

        Idempotent and safe under concurrency. A different spec under the same name raises
        SpecChanged; the caller words the refusal (it knows the diff).
        """
        key_hash = spec_hash(spec)
        with self._engine.begin() as conn:
            conn.execute(self._insert_ignore(t.study), [_study_values(name, "run", spec)])
        record = self.study_record(name)
        assert record is not None
        if record.source != "run" or record.spec_hash != key_hash:
            raise SpecChanged(record)
        values = [
            _cell_values(name, c.cell_id(name), _key(c), json.dumps(c.to_dict(), sort_keys=True))
            | {"state": t.PENDING}
            for c in cells
        ]
        with self._engine.begin() as conn:
            registered = set(
                conn.execute(sa.select(t.cell.c.cell_id).where(t.cell.c.study == name)).scalars()
            )
            new = [v for v in values if v["cell_id"] not in registered]
            if registered and new:
                raise UserError(
                    f"study {name!r}: the file is unchanged but {len(new)} cell identities are "
                    "new (code version change?); run it under a new --study-name"
                )
            if new:
                conn.execute(self._insert_ignore(t.cell), new)
        try:
            study_id = self._optuna.create_new_study([StudyDirection.MAXIMIZE], name)
            self._optuna.set_study_user_attr(study_id, "source", "run")
            self._optuna.set_study_user_attr(study_id, "spec", spec)
        except optuna.exceptions.DuplicatedStudyError:
            pass

    def start_run(self, study: str) -> str:
        """Registers a run of this process; returns its id for claims and heartbeats."""
        run_id = uuid.uuid4().hex[:16]
        now = _now()
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(t.run),
                [
                    {
                        "run_id": run_id,
                        "study": study,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "started": now,
                        "heartbeat": now,
                    }
                ],
            )
        return run_id

    def heartbeat(self, run_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.update(t.run).where(t.run.c.run_id == run_id).values(heartbeat=_now()))

    def stale_runs(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> list[str]:
        """Unfinished runs of `study` that are dead: silent too long, or (this host) pid gone."""
        limit = _now() - timedelta(seconds=stale_after_s)
        host = socket.gethostname()
        with self._engine.connect() as conn:
            runs = conn.execute(
                sa.select(t.run).where(t.run.c.study == study, t.run.c.ended.is_(None))
            ).all()
        return [
            r.run_id
            for r in runs
            if _utc(r.heartbeat) < limit
            or (r.host == host and r.pid != os.getpid() and not _pid_alive(r.pid))
        ]

    def recover_stale(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> Recovered:
        """Frees the cells claimed by dead runs: their RUNNING Optuna trials become FAIL and the
        cells failed (retried); a trial that did complete is adopted as the cell's result."""
        failed: list[str] = []
        adopted: list[str] = []
        for run_id in self.stale_runs(study, stale_after_s):
            with self._engine.connect() as conn:
                claimed = conn.execute(
                    sa.select(t.cell.c.cell_id, t.cell.c.optuna_trial_id).where(
                        t.cell.c.study == study,
                        t.cell.c.claim_run == run_id,
                        t.cell.c.state == t.RUNNING,
                    )
                ).all()
            for cell_id, trial_id in claimed:
                trial = self._optuna.get_trial(trial_id) if trial_id is not None else None
                if trial is not None and trial.state == TrialState.COMPLETE:
                    if self._adopt(study, cell_id, run_id, trial):
                        adopted.append(cell_id)
                    continue
                error = f"run {run_id} stopped before this cell finished; retried"
                if self._release_cell(study, cell_id, run_id, t.FAILED, error):
                    self._fail_trial(trial_id, error)
                    failed.append(cell_id)
            self.end_run(run_id)
        return Recovered(failed, adopted)

    def claim(self, study: str, run_id: str, cell_ids: Iterable[str]) -> list[str]:
        """Atomically claims those of `cell_ids` that are pending or failed; returns them."""
        ids = list(cell_ids)
        for part in _chunks(ids):
            with self._engine.begin() as conn:
                conn.execute(
                    sa.update(t.cell)
                    .where(
                        t.cell.c.study == study,
                        t.cell.c.cell_id.in_(part),
                        t.cell.c.state.in_([t.PENDING, t.FAILED]),
                    )
                    .values(state=t.RUNNING, claim_run=run_id, updated=_now())
                )
        got: set[str] = set()
        with self._engine.connect() as conn:
            for part in _chunks(ids):
                got.update(
                    conn.execute(
                        sa.select(t.cell.c.cell_id).where(
                            t.cell.c.study == study,
                            t.cell.c.cell_id.in_(part),
                            t.cell.c.claim_run == run_id,
                            t.cell.c.state == t.RUNNING,
                        )
                    ).scalars()
                )
        return [c for c in ids if c in got]

    def claims(self, study: str) -> dict[str, str]:
        """Cell id -> claiming run id, for the cells of `study` currently claimed."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.cell.c.cell_id, t.cell.c.claim_run).where(
                    t.cell.c.study == study, t.cell.c.state == t.RUNNING
                )
            ).all()
        return {cell_id: run_id for cell_id, run_id in rows}

    def record_start(self, study: str, cell_id: str) -> None:
        """A claimed cell starts training: a RUNNING Optuna trial, earlier epochs dropped."""
        row = self._cell(study, cell_id)
        trial_id = self._new_running_trial(study, row)
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(t.epoch).where(t.epoch.c.study == study, t.epoch.c.cell_id == cell_id)
            )
            conn.execute(
                sa.update(t.cell)
                .where(t.cell.c.id == row.id)
                .values(optuna_trial_id=trial_id, updated=_now())
            )

    def record_epoch(self, study: str, cell_id: str, record: EpochRecord) -> None:
        """One epoch's metrics: an Optuna intermediate value (test acc) and an epoch row."""
        row = self._cell(study, cell_id)
        if row.optuna_trial_id is not None:
            self._optuna.set_trial_intermediate_value(
                row.optuna_trial_id, record.epoch, record.test_acc
            )
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(t.epoch).where(
                    t.epoch.c.study == study,
                    t.epoch.c.cell_id == cell_id,
                    t.epoch.c.epoch == record.epoch,
                )
            )
            conn.execute(sa.insert(t.epoch), [_epoch_values(study, cell_id, record)])

    def record_result(self, study: str, cell_id: str, result: TrialResult) -> None:
        """A finished trial (completed or diverged): Optuna COMPLETE, then the cell's row."""
        row = self._cell(study, cell_id)
        trial_id = row.optuna_trial_id
        if trial_id is None:
            self.record_start(study, cell_id)
            trial_id = self._cell(study, cell_id).optuna_trial_id
        record = result.to_dict()
        written = self._optuna.get_trial(trial_id).intermediate_values  # by record_epoch
        for epoch in result.epochs:
            if epoch.epoch not in written:
                self._optuna.set_trial_intermediate_value(trial_id, epoch.epoch, epoch.test_acc)
        attrs = {
            "cell_id": cell_id,
            "status": result.status,
            "diverged": result.status == "diverged",
            "best_test_acc": result.best_test_acc,
            "record": record,
        }
        for key, value in attrs.items():
            self._optuna.set_trial_user_attr(trial_id, key, value)
        self._optuna.set_trial_state_values(
            trial_id, TrialState.COMPLETE, [_finite(result.final_test_acc)]
        )
        self._write_result(study, cell_id, result)

    def record_failure(self, study: str, cell_id: str, error: str, detail: str = "") -> None:
        """A crashed trial: Optuna FAIL with the error, the cell failed (retried next run)."""
        row = self._cell(study, cell_id)
        trial_id = row.optuna_trial_id
        if trial_id is None:
            trial_id = self._new_running_trial(study, row)
        self._optuna.set_trial_user_attr(trial_id, "error", error)
        self._fail_trial(trial_id, error)
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(t.cell)
                .where(t.cell.c.id == row.id)
                .values(
                    state=t.FAILED,
                    claim_run=None,
                    optuna_trial_id=trial_id,
                    error=error,
                    record_json=json.dumps({"error": error, "traceback": detail}),
                    updated=_now(),
                )
            )

    def release(self, run_id: str) -> list[str]:
        """Ends a run: cells it claimed but did not finish go back (Optuna FAIL if started)."""
        with self._engine.connect() as conn:
            claimed = conn.execute(
                sa.select(t.cell.c.study, t.cell.c.cell_id, t.cell.c.optuna_trial_id).where(
                    t.cell.c.claim_run == run_id, t.cell.c.state == t.RUNNING
                )
            ).all()
        released = []
        for study, cell_id, trial_id in claimed:
            state = t.PENDING if trial_id is None else t.FAILED
            error = None if trial_id is None else "run interrupted before this cell finished"
            if self._release_cell(study, cell_id, run_id, state, error):
                self._fail_trial(trial_id, error)
                released.append(cell_id)
        self.end_run(run_id)
        return released

    def end_run(self, run_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.update(t.run).where(t.run.c.run_id == run_id).values(ended=_now()))

    # ------------------------------------------------------------------ internals

    def _cell(self, study: str, cell_id: str) -> Any:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(t.cell).where(t.cell.c.study == study, t.cell.c.cell_id == cell_id)
            ).first()
        if row is None:
            raise KeyError(f"cell {cell_id} is not registered in study {study!r}")
        return row

    def _new_running_trial(self, study: str, row: Any) -> int:
        """A RUNNING Optuna trial for a cell row (its params, config attribute); its id."""
        attrs = {"cell_id": row.cell_id, "config": json.loads(row.config_json)}
        trial = template(_row_key(row), self._dists(study), TrialState.RUNNING, attrs)
        return self._optuna.create_new_trial(self._study_id(study), template_trial=trial)

    def _dists(self, study: str) -> dict[str, Any]:
        if study not in self._distributions:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.select(t.cell).where(t.cell.c.study == study)).all()
            self._distributions[study] = study_distributions([_row_key(r) for r in rows])
        return self._distributions[study]

    def _study_id(self, study: str) -> int:
        return self._optuna.get_study_id_from_name(study)

    def _fail_trial(self, trial_id: int | None, error: str | None) -> None:
        """Marks an Optuna trial FAIL unless it already finished."""
        if trial_id is None or self._optuna.get_trial(trial_id).state.is_finished():
            return
        if error:
            self._optuna.set_trial_user_attr(trial_id, "error", error)
        self._optuna.set_trial_state_values(trial_id, TrialState.FAIL)

    def _release_cell(
        self, study: str, cell_id: str, run_id: str, state: str, error: str | None
    ) -> bool:
        """Conditional reset of a claimed cell; True if this call did it."""
        with self._engine.begin() as conn:
            done = conn.execute(
                sa.update(t.cell)
                .where(
                    t.cell.c.study == study,
                    t.cell.c.cell_id == cell_id,
                    t.cell.c.claim_run == run_id,
                    t.cell.c.state == t.RUNNING,
                )
                .values(state=state, claim_run=None, error=error, updated=_now())
            )
        return done.rowcount == 1

    def _adopt(self, study: str, cell_id: str, run_id: str, trial: Any) -> bool:
        """A dead run's trial completed in Optuna before our row was written: keep it."""
        record = trial.user_attrs.get("record")
        if record is None:
            return False
        result = TrialResult.from_dict(record)
        with self._engine.connect() as conn:
            still = conn.execute(
                sa.select(sa.func.count()).where(
                    t.cell.c.study == study,
                    t.cell.c.cell_id == cell_id,
                    t.cell.c.claim_run == run_id,
                    t.cell.c.state == t.RUNNING,
                )
            ).scalar_one()
        if not still:
            return False
        self._write_result(study, cell_id, result)
        return True

    def _write_result(self, study: str, cell_id: str, result: TrialResult) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(t.epoch).where(t.epoch.c.study == study, t.epoch.c.cell_id == cell_id)
            )
            if result.epochs:
                conn.execute(
                    sa.insert(t.epoch), [_epoch_values(study, cell_id, e) for e in result.epochs]
                )
            conn.execute(
                sa.update(t.cell)
                .where(t.cell.c.study == study, t.cell.c.cell_id == cell_id)
                .values(
                    state=t.DIVERGED if result.status == "diverged" else t.DONE,
                    claim_run=None,
                    final_test_acc=result.final_test_acc,
                    best_test_acc=result.best_test_acc,
                    best_epoch=result.best_epoch,
                    test_acc_at_best_val=result.test_acc_at_best_val,
                    epochs_run=len(result.epochs),
                    seconds=result.wall_seconds,
                    error=result.diverged_reason,
                    record_json=json.dumps(result.to_dict()),
                    updated=_now(),
                )
            )

    def _study_exists_anywhere(self, name: str) -> bool:
        if self.has_study(name):
            return True
        return any(s.study_name == name for s in self._optuna.get_all_studies())

    def _remove_study(self, name: str) -> None:
        """Undoes a partial import."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(t.epoch).where(t.epoch.c.study == name))
            conn.execute(sa.delete(t.cell).where(t.cell.c.study == name))
            conn.execute(sa.delete(t.study).where(t.study.c.name == name))
        try:
            self._optuna.delete_study(self._optuna.get_study_id_from_name(name))
        except KeyError:
            pass

    def _insert_ignore(self, table: sa.Table) -> Any:
        """INSERT that skips rows whose unique key exists (SQLite and PostgreSQL)."""
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise UserError(
                f"unsupported storage dialect {dialect!r}; valid: sqlite, postgresql; "
                "use sqlite:///FILE or postgresql+psycopg://..."
            )
        return insert(table).on_conflict_do_nothing()


class SpecChanged(Exception):
    """A study of that name exists with a different spec (or was imported)."""

    def __init__(self, record: StudyRecord) -> None:
        super().__init__(f"study {record.name!r} is registered with a different spec")
        self.record = record


# ---------------------------------------------------------------------- helpers


SCHEMA_RACE_MESSAGES = (
    "already exists",  # a table another process created (SQLite, PostgreSQL)
    "UNIQUE constraint failed",  # SQLite: a version row another process inserted
    "duplicate key value violates unique constraint",  # PostgreSQL: the same, or pg_type rows
)


def _lost_schema_race(message: str) -> bool:
    """Whether opening a database failed because another process was creating its tables and
    version rows at that moment. Opening writes nothing else, so such a conflict is that race."""
    return any(text in message for text in SCHEMA_RACE_MESSAGES)


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(
            f"invalid storage URL {url!r}; valid forms: sqlite:///PATH, "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; "
            f"fix --storage or ${ENV_VAR}"
        ) from None


def _check_sqlite_path(parsed: sa.URL, url: str, create: bool) -> None:
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.exists():
        return
    if not create:
        raise UserError(f"no results database at {path}; run a study first or pass --storage")
    if url == DEFAULT_URL:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise UserError(
            f"cannot create storage {url!r}: directory {str(path.parent)!r} does not exist; "
            "create it or choose another path"
        )


def _engine_kwargs(parsed: sa.URL) -> dict[str, Any]:
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 60}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie (killed, not yet reaped) is dead
        return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    return True


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _finite(value: float) -> float:
    """Optuna needs a finite objective; a non-finite accuracy scores as 0."""
    return value if math.isfinite(value) else 0.0


def _key(config: TrialConfig) -> CellKey:
    return CellKey(
        config.optimizer_label,
        config.variant,
        float(config.lr),
        float(config.weight_decay),
        int(config.seed),
    )


def _row_key(row: Any) -> CellKey:
    return CellKey(row.optimizer, row.variant, row.lr, row.weight_decay, row.seed)


def _cell_values(study: str, cell_id: str, key: CellKey, config_json: str) -> dict[str, Any]:
    return {
        "study": study,
        "cell_id": cell_id,
        "optimizer": key.optimizer,
        "variant": key.variant,
        "lr": key.lr,
        "weight_decay": key.weight_decay,
        "seed": key.seed,
        "config_json": config_json,
    }


def _study_values(name: str, source: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "source": source,
        "spec_json": json.dumps(spec, sort_keys=True),
        "spec_hash": spec_hash(spec),
        "note": "",
        "created": _now(),
    }


def _epoch_values(study: str, cell_id: str, record: EpochRecord) -> dict[str, Any]:
    return {
        "study": study,
        "cell_id": cell_id,
        "epoch": record.epoch,
        "train_loss": record.train_loss,
        "train_acc": record.train_acc,
        "test_loss": record.test_loss,
        "test_acc": record.test_acc,
        "val_loss": record.val_loss,
        "val_acc": record.val_acc,
        "lr": record.lr,
        "seconds": record.seconds,
    }


def _import_row(study: str, index: int, row: dict[str, Any]) -> tuple[str, CellKey, dict]:
    """Validates one import row; returns its cell id, key and the normalised row."""
    missing = [k for k in IMPORT_REQUIRED if k not in row]
    if missing:
        raise UserError(
            f"import row {index} lacks {', '.join(missing)}; required: {', '.join(IMPORT_REQUIRED)}"
        )
    extra = sorted(set(row) - set(IMPORT_REQUIRED) - set(IMPORT_OPTIONAL))
    if extra:
        valid = ", ".join(IMPORT_REQUIRED + IMPORT_OPTIONAL)
        raise UserError(f"import row {index} has unknown key(s) {', '.join(extra)}; valid: {valid}")
    try:
        norm = {
            "optimizer": str(row["optimizer"]),
            "variant": str(row["variant"]),
            "lr": float(row["lr"]),
            "weight_decay": float(row["weight_decay"]),
            "seed": int(row["seed"]),
            "diverged": bool(row["diverged"]),
        }
        # A diverged cell may have no measured accuracy (a paper's "diverged" entry).
        if row["final_test_acc"] is not None or not norm["diverged"]:
            norm["final_test_acc"] = float(row["final_test_acc"])
        else:
            norm["final_test_acc"] = None
        if row.get("best_test_acc") is not None:
            norm["best_test_acc"] = float(row["best_test_acc"])
        if row.get("epochs") is not None:
            norm["epochs"] = int(row["epochs"])
    except (TypeError, ValueError) as err:
        raise UserError(f"import row {index}: {err}; fix the value's type") from None
    for name in ("final_test_acc", "best_test_acc"):
        value = norm.get(name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(
                f"import row {index}: {name}={value} is not a fraction in [0, 1]; "
                "divide percentages by 100"
            )
    if norm["lr"] <= 0:
        raise UserError(f"import row {index}: lr={norm['lr']} must be > 0")
    key = CellKey(
        norm["optimizer"], norm["variant"], norm["lr"], norm["weight_decay"], norm["seed"]
    )
    blob = json.dumps({"study": study, "import": key.params()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], key, norm
