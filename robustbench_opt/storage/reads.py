"""Reads: the study registry and the cell and epoch tables as DataFrames (one query each)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from robustbench_opt.states import DIVERGED, DONE, FAILED, PENDING, RUNNING
from robustbench_opt.storage import tables as t
from robustbench_opt.storage._base import StudyRecord, StudySummary
from robustbench_opt.storage.bootstrap import Db

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


def list_studies(db: Db) -> list[StudySummary]:
    """Every registered study with its cell counts per state, oldest first."""
    with db.engine.connect() as conn:
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
                done=c.get(DONE, 0),
                diverged=c.get(DIVERGED, 0),
                failed=c.get(FAILED, 0),
                running=c.get(RUNNING, 0),
                pending=c.get(PENDING, 0),
                created=utc(row.created),
            )
        )
    return out


def study_record(db: Db, name: str) -> StudyRecord | None:
    """The registered spec of study `name`, or None."""
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(t.study).where(t.study.c.name == name)).first()
    if row is None:
        return None
    return StudyRecord(row.name, row.source, json.loads(row.spec_json), row.spec_hash)


def cells_frame(db: Db, study: str) -> pd.DataFrame:
    """One row per registered cell; accuracies are fractions, NaN where absent. `point` is a
    sampled design's point index (None on a grid), `workload` the cell's workload in a
    multi-workload study (None otherwise) and `axes` the cell's value on each axis of the
    study's space ({lr, weight_decay} for cells stored without a point row)."""
    cols = [t.cell.c[name] for name in CELL_COLUMNS]
    joined = t.cell.outerjoin(
        t.point, sa.and_(t.point.c.study == t.cell.c.study, t.point.c.cell_id == t.cell.c.cell_id)
    )
    query = (
        sa.select(*cols, t.point.c.point, t.point.c.workload, t.point.c.axes_json)
        .select_from(joined)
        .where(t.cell.c.study == study)
        .order_by(t.cell.c.id)
    )
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame([tuple(r)[: len(CELL_COLUMNS)] for r in rows], columns=list(CELL_COLUMNS))
    frame["point"] = [r.point for r in rows]
    frame["workload"] = [r.workload for r in rows]
    frame["axes"] = [
        json.loads(r.axes_json)
        if r.axes_json is not None
        else {"lr": float(r.lr), "weight_decay": float(r.weight_decay)}
        for r in rows
    ]
    floats = ["lr", "weight_decay", "final_test_acc", "best_test_acc"]
    floats += ["test_acc_at_best_val", "seconds", "best_epoch", "epochs_run"]
    frame[floats] = frame[floats].astype(float)
    frame["seed"] = frame["seed"].astype(int)
    return frame


def epochs_frame(db: Db, study: str) -> pd.DataFrame:
    """One row per recorded epoch of every cell of `study`."""
    cols = [t.epoch.c[name] for name in EPOCH_COLUMNS]
    query = (
        sa.select(*cols)
        .where(t.epoch.c.study == study)
        .order_by(t.epoch.c.cell_id, t.epoch.c.epoch)
    )
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(EPOCH_COLUMNS))
    floats = [c for c in EPOCH_COLUMNS if c not in ("cell_id", "epoch")]
    frame[floats] = frame[floats].astype(float)
    frame["epoch"] = frame["epoch"].astype(int)
    return frame


def utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
