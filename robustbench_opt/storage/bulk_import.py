"""Importing results measured elsewhere in one transaction: our rows and Optuna's, written with
SQLAlchemy straight into Optuna's schema (one trial per row would be one transaction per row:
about 26 ms each on SQLite). `optuna.load_study` reads them as it reads its own (a test checks
it against trials written through Optuna's API).

The rows are validated where they are read (`analysis.read_results_csv`: types, units, ranges,
repeated cells), the one place that knows the file and line a bad value came from. Here a row
that repeats a cell still cannot land: it violates the cell table's unique key and the whole
import is rolled back.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from optuna.distributions import distribution_to_json
from optuna.storages._rdb import models
from optuna.study import StudyDirection
from optuna.trial import TrialState

from robustbench_opt.errors import UserError
from robustbench_opt.states import DIVERGED, DONE
from robustbench_opt.storage import tables as t
from robustbench_opt.storage._base import ImportRow
from robustbench_opt.storage.bootstrap import Db
from robustbench_opt.storage.optuna_trials import CellKey, study_distributions
from robustbench_opt.storage.reads import study_record
from robustbench_opt.storage.writes import (
    cell_values,
    complete_attrs,
    finite,
    now,
    study_values,
)

_STUDIES = models.StudyModel.__table__
_DIRECTIONS = models.StudyDirectionModel.__table__
_STUDY_ATTRS = models.StudyUserAttributeModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel.__table__
_TRIAL_ATTRS = models.TrialUserAttributeModel.__table__


def import_cells(
    db: Db, study: str, rows: Sequence[ImportRow], source_note: str, num_classes: int
) -> None:
    """Registers study `study` from measured rows, all or nothing (see `_base.import_cells`)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(
            f"num_classes={num_classes!r} is not a whole number >= 1; set it to the number of "
            "classes of the data set the results were measured on"
        )
    if not rows:
        raise UserError(f"nothing to import into study {study!r}: no rows")
    if _name_taken(db, study):
        raise UserError(
            f"study {study!r} already exists in {db.display_url}; import under another name"
        )
    keys = [
        CellKey(r["optimizer"], r["variant"], r["lr"], r["weight_decay"], r["seed"]) for r in rows
    ]
    dists = study_distributions(keys)
    dists_json = {name: distribution_to_json(dist) for name, dist in dists.items()}
    stamp = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
    spec = {"import": source_note, "num_classes": num_classes}
    try:
        with db.engine.begin() as conn:
            study_id = conn.execute(
                sa.insert(_STUDIES).values(study_name=study)
            ).inserted_primary_key[0]
            conn.execute(
                sa.insert(_DIRECTIONS),
                [{"study_id": study_id, "objective": 0, "direction": StudyDirection.MAXIMIZE}],
            )
            conn.execute(
                sa.insert(_STUDY_ATTRS),
                [
                    {"study_id": study_id, "key": key, "value_json": json.dumps(value)}
                    for key, value in (("source", "import"), ("note", source_note))
                ],
            )
            conn.execute(
                sa.insert(_TRIALS),
                [
                    {
                        "number": number,
                        "study_id": study_id,
                        "state": TrialState.COMPLETE,
                        "datetime_start": stamp,
                        "datetime_complete": stamp,
                    }
                    for number in range(len(rows))
                ],
            )
            trial_ids = dict(
                conn.execute(
                    sa.select(_TRIALS.c.number, _TRIALS.c.trial_id).where(
                        _TRIALS.c.study_id == study_id
                    )
                ).all()
            )
            params, values, attrs, cells = [], [], [], []
            for number, (key, row) in enumerate(zip(keys, rows, strict=True)):
                trial_id = trial_ids[number]
                cell_id = import_cell_id(study, key)
                acc = row["final_test_acc"]
                record = json.dumps({"source": "import", "note": source_note, "row": dict(row)})
                status = "diverged" if row["diverged"] else "completed"
                params += [
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": dists[name].to_internal_repr(value),
                        "distribution_json": dists_json[name],
                    }
                    for name, value in key.params().items()
                ]
                values.append(
                    {
                        "trial_id": trial_id,
                        "objective": 0,
                        "value": finite(math.nan if acc is None else acc),
                        "value_type": models.TrialValueModel.TrialValueType.FINITE,
                    }
                )
                trial_attrs = complete_attrs(cell_id, status, row.get("best_test_acc"), {})
                attrs += [
                    {
                        "trial_id": trial_id,
                        "key": k,
                        "value_json": record if k == "record" else json.dumps(v),
                    }
                    for k, v in trial_attrs.items()
                ]
                cells.append(
                    cell_values(study, cell_id, key, "{}")
                    | {
                        "state": DIVERGED if row["diverged"] else DONE,
                        "optuna_trial_id": trial_id,
                        "final_test_acc": acc,
                        "best_test_acc": row.get("best_test_acc"),
                        "epochs_run": row.get("epochs"),
                        "record_json": record,
                        "updated": now(),
                    }
                )
            conn.execute(sa.insert(_PARAMS), params)
            conn.execute(sa.insert(_VALUES), values)
            conn.execute(sa.insert(_TRIAL_ATTRS), attrs)
            conn.execute(
                sa.insert(t.study), [study_values(study, "import", spec, import_hash(spec))]
            )
            conn.execute(sa.insert(t.cell), cells)
    except sa.exc.IntegrityError as err:
        first = str(err.orig).strip().splitlines()[0]
        raise UserError(
            f"cannot import study {study!r}: {first} (two rows are the same cell, or the name "
            "was taken meanwhile); nothing was written"
        ) from None


def import_hash(spec: dict[str, Any]) -> str:
    """The stored hash of an imported study: of its spec (note and classes) as stored. Nothing
    is compared with it (an imported study is never resumed); it fills the column."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def import_cell_id(study: str, key: CellKey) -> str:
    """The cell id of an imported row: its study and five coordinates, hashed."""
    blob = json.dumps({"study": study, "import": key.params()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _name_taken(db: Db, study: str) -> bool:
    """Whether `study` names a study in our tables or in Optuna's."""
    if study_record(db, study) is not None:
        return True
    with db.engine.connect() as conn:
        found = conn.execute(sa.select(_STUDIES.c.study_id).where(_STUDIES.c.study_name == study))
        return found.first() is not None
