"""The storage contract: what each operation on the results database guarantees.

Written once, here, as optuna's `storages/_base.py` does. `Store` implements it on SQLite and
PostgreSQL (modules `bootstrap`, `leases`, `writes`, `bulk_import`, `reads`), and tests/storage/
is the one suite that checks it on both.

Model
    A study is registered once with its spec and the hash of what it measures (the caller
    computes the hash, `robustbench_opt.spec.spec_hash`; storage stores and compares it and
    knows nothing of study files). A study owns one row per grid cell (unique key: study
    name + cell id, the hash of the cell's resolved config) and one Optuna study of the same
    name, with one Optuna trial per attempt to train a cell: Optuna's tables are what users
    browse (optuna-dashboard), ours hold what Optuna cannot guarantee. A *run* is one driver
    process working on a study: it holds a lease (a row with a heartbeat) and claims cells
    under it. A cell's state (`robustbench_opt.states`) moves only by conditional UPDATEs:

        pending | failed  --claim-->  running  --record_result-->  done | diverged
        running  --record_failure | recover_stale | release (after record_start)-->  failed
        running  --release (before record_start)-->  pending

Writers
    Only drivers write; workers never see the database. Any number of drivers (processes, or
    hosts sharing PostgreSQL) may work on one study at once: claims keep them apart. The
    record_* methods write the cell they are given; the caller records only cells its run
    claimed. Each call commits its own transactions, so a killed driver leaves whole rows.

Exactly once
    done and diverged are final: such a cell is never claimed again, hence never trained nor
    written twice. A failed cell is claimed again by the next run; its earlier Optuna trial
    stays, as FAIL.

Leases
    A run refreshes its heartbeat every HEARTBEAT_SECONDS. It is stale when its heartbeat is
    older than STALE_AFTER_SECONDS (any host), or at once when it ran on this host and its
    process is gone. Stale runs' cells are freed by `recover_stale`, which every run calls
    before it claims.

Reads
    Reads never write and never create a database file; each is one query, so it sees one
    committed state.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import pandas as pd
from optuna.storages import RDBStorage

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult

HEARTBEAT_SECONDS = 15.0  # how often a run refreshes its heartbeat
STALE_AFTER_SECONDS = 180.0  # a run silent this long has lost its claims (any host)


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
    source: str  # "run" | "import"
    spec: dict[str, Any]  # a run: the study file's canonical dict; an import: its note, classes
    spec_hash: str  # a run: as given to register_study; an import: the SHA-256 of its spec


@dataclass(frozen=True)
class Recovered:
    """Cells whose claiming run stopped without finishing them."""

    failed: list[str]  # reset to failed, to be retried
    adopted: list[str]  # their Optuna trial had completed: the result is kept


class SpecChanged(Exception):
    """A study of that name is registered with another spec hash (or was imported)."""

    def __init__(self, record: StudyRecord) -> None:
        super().__init__(f"study {record.name!r} is registered with a different spec")
        self.record = record


class ImportRow(TypedDict):
    """One measured cell to import; `analysis.read_results_csv` makes these and is the one
    place that validates them (types, units, ranges, repeated cells)."""

    optimizer: str
    variant: str
    lr: float
    weight_decay: float
    seed: int
    final_test_acc: float | None  # fraction; None only on a diverged row
    diverged: bool
    best_test_acc: NotRequired[float | None]
    epochs: NotRequired[int | None]


class ResultStore(abc.ABC):
    """The operations of the results database; the module docstring states the model."""

    url: str
    display_url: str  # the URL with its password hidden, for messages

    @property
    @abc.abstractmethod
    def optuna_storage(self) -> RDBStorage:
        """Optuna's storage on the same database (for `optuna.load_study`, the dashboard)."""

    # ------------------------------------------------------------------ registry

    @abc.abstractmethod
    def register_study(
        self,
        name: str,
        spec: dict[str, Any],
        spec_hash: str,
        cells: Sequence[TrialConfig],
        grown: bool = False,
    ) -> None:
        """Registers study `name` with `spec` and `spec_hash`, its cells (pending) and its
        Optuna study.

        `spec_hash` is the caller's hash of what the study measures (`spec.spec_hash`):
        storage stores it and compares it, and never reads `spec` to compute one. Idempotent,
        and safe when several drivers register the same study at once. Another hash under the
        same name (or an imported study of that name) raises SpecChanged; the caller words the
        refusal, it knows the diff. The same hash keeps the spec first stored. An unchanged
        hash whose cells hash to new ids (the code's identity changed) is a UserError: nothing
        is added, unless `grown` (the caller says the study grew: a sampled space's `points`
        raised): then the new cells are added and `spec` replaces the stored spec.
        """

    @abc.abstractmethod
    def import_cells(
        self,
        study: str,
        rows: Sequence[ImportRow],
        source_note: str,
        num_classes: int = 10,
    ) -> None:
        """Registers study `study` from results measured elsewhere: each row becomes a cell
        (done or diverged) and a COMPLETE Optuna trial (value: final accuracy, 0 when absent).

        All or nothing, in one transaction. An existing study name, in our tables or Optuna's,
        is a UserError. `num_classes` (the data set's classes, for chance accuracy) is stored in
        the study's spec as `spec["num_classes"]`, beside `spec["import"]` (the note).
        """

    # ------------------------------------------------------------------ leases

    @abc.abstractmethod
    def start_run(self, study: str) -> str:
        """Opens a lease for this process on `study`; returns its run id."""

    @abc.abstractmethod
    def heartbeat(self, run_id: str) -> None:
        """Refreshes the run's heartbeat. Idempotent."""

    @abc.abstractmethod
    def stale_runs(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> list[str]:
        """Unended runs of `study` that are dead (see Leases). Reads only."""

    @abc.abstractmethod
    def recover_stale(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> Recovered:
        """Frees the cells of stale runs and ends those runs. A cell whose Optuna trial had
        completed (the driver died between the two writes) is adopted: its result is written
        and it is done. Otherwise its trial becomes FAIL and the cell failed, to be retried.

        Idempotent; concurrent callers each free a cell at most once (conditional UPDATE).
        """

    @abc.abstractmethod
    def claim(self, study: str, run_id: str, cell_ids: Iterable[str]) -> list[str]:
        """Claims those of `cell_ids` that are pending or failed for `run_id`; returns the
        cells this run holds among them, in the given order (earlier claims included).

        Atomic: concurrent runs get disjoint sets. Finished cells are never returned.
        """

    @abc.abstractmethod
    def claims(self, study: str) -> dict[str, str]:
        """Cell id -> run id, for every running cell of `study`. Reads only."""

    @abc.abstractmethod
    def release(self, run_id: str) -> list[str]:
        """Ends the run: its unfinished cells go back, pending if never started, else failed
        (their Optuna trial FAIL). Returns them. Idempotent."""

    @abc.abstractmethod
    def end_run(self, run_id: str) -> None:
        """Marks the run ended (its claims are left as they are). Idempotent."""

    # ------------------------------------------------------------------ records

    @abc.abstractmethod
    def record_start(self, study: str, cell_id: str) -> None:
        """A claimed cell starts training: a new RUNNING Optuna trial (params, config), and
        epoch rows of an earlier attempt dropped. Each call is a new attempt."""

    @abc.abstractmethod
    def record_epoch(self, study: str, cell_id: str, record: EpochRecord) -> None:
        """One epoch: an epoch row and the Optuna intermediate value (test accuracy).
        Idempotent per epoch: a repeated epoch replaces the earlier row."""

    @abc.abstractmethod
    def record_result(self, study: str, cell_id: str, result: TrialResult) -> None:
        """A finished trial, completed or diverged: the Optuna trial COMPLETE with the full
        record as user attributes (written first: `recover_stale` adopts it if the driver dies
        next), then the cell done or diverged with its result columns and epoch rows."""

    @abc.abstractmethod
    def record_failure(self, study: str, cell_id: str, error: str, detail: str = "") -> None:
        """A crashed trial: the Optuna trial FAIL with `error`, the cell failed with `error` and
        `detail` (the traceback); the next run retries it."""

    # ------------------------------------------------------------------ reads

    @abc.abstractmethod
    def list_studies(self) -> list[StudySummary]:
        """Every registered study with its cell counts per state, oldest first."""

    @abc.abstractmethod
    def study_record(self, name: str) -> StudyRecord | None:
        """What study `name` was registered with, or None."""

    def has_study(self, name: str) -> bool:
        """Whether study `name` is registered."""
        return self.study_record(name) is not None

    @abc.abstractmethod
    def cells_frame(self, study: str) -> pd.DataFrame:
        """One row per registered cell, in registration order: reads.CELL_COLUMNS; accuracies
        are fractions, NaN where absent."""

    @abc.abstractmethod
    def epochs_frame(self, study: str) -> pd.DataFrame:
        """One row per recorded epoch of every cell of `study`: reads.EPOCH_COLUMNS."""
