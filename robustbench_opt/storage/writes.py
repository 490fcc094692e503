"""Writes of a run: registering a study and recording its trials, in our tables and mirrored
as Optuna trials (see `_base` for what each guarantees)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import TrialState

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.states import DIVERGED, DONE, FAILED, PENDING
from robustbench_opt.storage import tables as t
from robustbench_opt.storage._base import SpecChanged
from robustbench_opt.storage.bootstrap import Db, insert_ignore
from robustbench_opt.storage.optuna_trials import CellKey, study_distributions, template
from robustbench_opt.storage.reads import study_record

INSERT_CHUNK = 5000  # cell rows per INSERT statement when a study is registered


def register_study(
    db: Db,
    name: str,
    spec: dict[str, Any],
    spec_hash: str,
    cells: Sequence[TrialConfig],
    grown: bool = False,
) -> None:
    """Registers study `name` and its cells, or checks they match what is registered (see
    `_base.ResultStore.register_study`, `grown` included)."""
    with db.engine.begin() as conn:
        conn.execute(insert_ignore(db, t.study), [study_values(name, "run", spec, spec_hash)])
    record = study_record(db, name)
    assert record is not None
    if record.source != "run" or record.spec_hash != spec_hash:
        raise SpecChanged(record)
    with db.engine.begin() as conn:
        registered = set(
            conn.execute(sa.select(t.cell.c.cell_id).where(t.cell.c.study == name)).scalars()
        )
        new = [c for c in cells if c.cell_id(name) not in registered]
        if grown:
            conn.execute(
                sa.update(t.study)
                .where(t.study.c.name == name)
                .values(spec_json=json.dumps(spec, sort_keys=True))
            )
        elif registered and new:
            raise UserError(
                f"study {name!r}: the file is unchanged but {len(new)} cell identities are "
                "new (code version change?); run it under a new --study-name"
            )
        for start in range(0, len(new), INSERT_CHUNK):  # bounded memory for 10^5 cells
            chunk = new[start : start + INSERT_CHUNK]
            conn.execute(insert_ignore(db, t.cell), [_pending_row(name, c) for c in chunk])
            conn.execute(insert_ignore(db, t.point), [_point_row(name, c) for c in chunk])
    try:
        study_id = db.optuna.create_new_study([StudyDirection.MAXIMIZE], name)
        db.optuna.set_study_user_attr(study_id, "source", "run")
        db.optuna.set_study_user_attr(study_id, "spec", spec)
    except optuna.exceptions.DuplicatedStudyError:
        pass


def _pending_row(study: str, config: TrialConfig) -> dict[str, Any]:
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    return cell_values(study, config.cell_id(study), _key(config), config_json) | {"state": PENDING}


def _point_row(study: str, config: TrialConfig) -> dict[str, Any]:
    return {
        "study": study,
        "cell_id": config.cell_id(study),
        "point": config.point,
        "workload": config.workload,
        # A config made without a space (train, a notebook) is a point of lr x weight decay.
        "axes_json": json.dumps(
            config.to_dict()["axes"] or {"lr": config.lr, "weight_decay": config.weight_decay}
        ),
    }


def record_start(db: Db, study: str, cell_id: str) -> None:
    """A claimed cell starts training: a RUNNING Optuna trial, earlier epochs dropped."""
    row = cell_row(db, study, cell_id)
    trial_id = _new_running_trial(db, study, row)
    with db.engine.begin() as conn:
        conn.execute(
            sa.delete(t.epoch).where(t.epoch.c.study == study, t.epoch.c.cell_id == cell_id)
        )
        conn.execute(
            sa.update(t.cell)
            .where(t.cell.c.id == row.id)
            .values(optuna_trial_id=trial_id, updated=now())
        )


def record_epoch(db: Db, study: str, cell_id: str, record: EpochRecord) -> None:
    """One epoch's metrics: an Optuna intermediate value (test acc) and an epoch row."""
    row = cell_row(db, study, cell_id)
    if row.optuna_trial_id is not None:
        db.optuna.set_trial_intermediate_value(row.optuna_trial_id, record.epoch, record.test_acc)
    with db.engine.begin() as conn:
        conn.execute(
            sa.delete(t.epoch).where(
                t.epoch.c.study == study,
                t.epoch.c.cell_id == cell_id,
                t.epoch.c.epoch == record.epoch,
            )
        )
        conn.execute(sa.insert(t.epoch), [_epoch_values(study, cell_id, record)])


def record_result(db: Db, study: str, cell_id: str, result: TrialResult) -> None:
    """A finished trial (completed or diverged): Optuna COMPLETE, then the cell's row."""
    trial_id = cell_row(db, study, cell_id).optuna_trial_id
    if trial_id is None:
        record_start(db, study, cell_id)
        trial_id = cell_row(db, study, cell_id).optuna_trial_id
    written = db.optuna.get_trial(trial_id).intermediate_values  # by record_epoch
    for epoch in result.epochs:
        if epoch.epoch not in written:
            db.optuna.set_trial_intermediate_value(trial_id, epoch.epoch, epoch.test_acc)
    attrs = complete_attrs(cell_id, result.status, result.best_test_acc, result.to_dict())
    for key, value in attrs.items():
        db.optuna.set_trial_user_attr(trial_id, key, value)
    db.optuna.set_trial_state_values(trial_id, TrialState.COMPLETE, [finite(result.final_test_acc)])
    write_result(db, study, cell_id, result)


def record_failure(db: Db, study: str, cell_id: str, error: str, detail: str = "") -> None:
    """A crashed trial: Optuna FAIL with the error, the cell failed (retried next run)."""
    row = cell_row(db, study, cell_id)
    trial_id = row.optuna_trial_id
    if trial_id is None:
        trial_id = _new_running_trial(db, study, row)
    db.optuna.set_trial_user_attr(trial_id, "error", error)
    fail_trial(db, trial_id, error)
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(t.cell)
            .where(t.cell.c.id == row.id)
            .values(
                state=FAILED,
                claim_run=None,
                optuna_trial_id=trial_id,
                error=error,
                record_json=json.dumps({"error": error, "traceback": detail}),
                updated=now(),
            )
        )


def write_result(db: Db, study: str, cell_id: str, result: TrialResult) -> None:
    """The cell's result columns and epoch rows, in one transaction; the cell done/diverged."""
    with db.engine.begin() as conn:
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
                state=DIVERGED if result.status == "diverged" else DONE,
                claim_run=None,
                final_test_acc=result.final_test_acc,
                best_test_acc=result.best_test_acc,
                best_epoch=result.best_epoch,
                test_acc_at_best_val=result.test_acc_at_best_val,
                epochs_run=len(result.epochs),
                seconds=result.wall_seconds,
                error=result.diverged_reason,
                record_json=json.dumps(result.to_dict()),
                updated=now(),
            )
        )


def fail_trial(db: Db, trial_id: int | None, error: str | None) -> None:
    """Marks an Optuna trial FAIL unless it already finished."""
    if trial_id is None or db.optuna.get_trial(trial_id).state.is_finished():
        return
    if error:
        db.optuna.set_trial_user_attr(trial_id, "error", error)
    db.optuna.set_trial_state_values(trial_id, TrialState.FAIL)


def cell_row(db: Db, study: str, cell_id: str) -> Any:
    """The cell's row in our table; KeyError if it is not registered."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.cell).where(t.cell.c.study == study, t.cell.c.cell_id == cell_id)
        ).first()
    if row is None:
        raise KeyError(f"cell {cell_id} is not registered in study {study!r}")
    return row


def complete_attrs(
    cell_id: str, status: str, best_test_acc: float | None, record: dict[str, Any]
) -> dict[str, Any]:
    """The user attributes of a COMPLETE Optuna trial; `status` is "completed" or "diverged"."""
    return {
        "cell_id": cell_id,
        "status": status,
        "diverged": status == "diverged",
        "best_test_acc": best_test_acc,
        "record": record,
    }


def cell_values(study: str, cell_id: str, key: CellKey, config_json: str) -> dict[str, Any]:
    """A new row of our cell table (its state and results are the caller's)."""
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


def study_values(name: str, source: str, spec: dict[str, Any], spec_hash: str) -> dict[str, Any]:
    """A new row of our study table."""
    return {
        "name": name,
        "source": source,
        "spec_json": json.dumps(spec, sort_keys=True),
        "spec_hash": spec_hash,
        "note": "",
        "created": now(),
    }


def finite(value: float) -> float:
    """Optuna needs a finite objective; a non-finite accuracy scores as 0."""
    return value if math.isfinite(value) else 0.0


def now() -> datetime:
    return datetime.now(UTC)


def _new_running_trial(db: Db, study: str, row: Any) -> int:
    """A RUNNING Optuna trial for a cell row (its params, config attribute); its id."""
    config = json.loads(row.config_json)
    attrs = {"cell_id": row.cell_id, "config": config}
    key = _row_key(row, config.get("axes", {}))
    trial = template(key, _distributions(db, study), TrialState.RUNNING, attrs)
    return db.optuna.create_new_trial(db.optuna.get_study_id_from_name(study), template_trial=trial)


def _distributions(db: Db, study: str) -> dict[str, Any]:
    if study not in db.distributions:
        cols = (t.cell.c.optimizer, t.cell.c.variant, t.cell.c.lr, t.cell.c.weight_decay)
        with db.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols, t.cell.c.seed).where(t.cell.c.study == study))
            keys = [_row_key(r, {}) for r in rows]
        record = study_record(db, study)
        db.distributions[study] = study_distributions(keys, record.spec if record else None)
    return db.distributions[study]


def _key(config: TrialConfig) -> CellKey:
    return CellKey(
        config.optimizer_label,
        config.variant,
        float(config.lr),
        float(config.weight_decay),
        int(config.seed),
    )


def _row_key(row: Any, axes: dict[str, Any]) -> CellKey:
    """A cell row's params; `axes` (its point's values) adds the axes besides lr and wd."""
    others = tuple((k, v) for k, v in axes.items() if k not in ("lr", "weight_decay"))
    return CellKey(row.optimizer, row.variant, row.lr, row.weight_decay, row.seed, others)


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
