"""`Store`: the one object callers use; it implements the contract in `_base` by delegating to
the modules that own each concern (bootstrap, leases, writes, bulk_import, reads)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from optuna.storages import RDBStorage

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.storage import bootstrap, bulk_import, leases, reads, writes
from robustbench_opt.storage._base import (
    STALE_AFTER_SECONDS,
    ImportRow,
    Recovered,
    ResultStore,
    StudyRecord,
    StudySummary,
)


class Store(ResultStore):
    """Read and write access to one results database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Opens `url`; a bad or unreachable URL is a UserError and leaves the database untouched.

        `create=False` refuses a SQLite file that does not exist yet (for read-only commands).
        """
        self._db = bootstrap.open_db(url, create)
        self.url = url
        self.display_url = self._db.display_url

    def close(self) -> None:
        """Closes this Store's database connections; it is not used again. A Store that is
        dropped without close keeps its pooled connections until garbage collection."""
        self._db.optuna.remove_session()
        self._db.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def exists(url: str) -> bool:
        """False only for a SQLite file that does not exist yet (nothing to read)."""
        return bootstrap.exists(url)

    @property
    def optuna_storage(self) -> RDBStorage:
        return self._db.optuna

    def register_study(
        self,
        name: str,
        spec: dict[str, Any],
        spec_hash: str,
        cells: Sequence[TrialConfig],
        grown: bool = False,
    ) -> None:
        writes.register_study(self._db, name, spec, spec_hash, cells, grown)

    def import_cells(
        self, study: str, rows: Sequence[ImportRow], source_note: str, num_classes: int = 10
    ) -> None:
        bulk_import.import_cells(self._db, study, rows, source_note, num_classes)

    def start_run(self, study: str) -> str:
        return leases.start_run(self._db, study)

    def heartbeat(self, run_id: str) -> None:
        leases.heartbeat(self._db, run_id)

    def stale_runs(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> list[str]:
        return leases.stale_runs(self._db, study, stale_after_s)

    def recover_stale(self, study: str, stale_after_s: float = STALE_AFTER_SECONDS) -> Recovered:
        return leases.recover_stale(self._db, study, stale_after_s)

    def claim(self, study: str, run_id: str, cell_ids: Iterable[str]) -> list[str]:
        return leases.claim(self._db, study, run_id, cell_ids)

    def claims(self, study: str) -> dict[str, str]:
        return leases.claims(self._db, study)

    def release(self, run_id: str) -> list[str]:
        return leases.release(self._db, run_id)

    def end_run(self, run_id: str) -> None:
        leases.end_run(self._db, run_id)

    def record_start(self, study: str, cell_id: str) -> None:
        writes.record_start(self._db, study, cell_id)

    def record_epoch(self, study: str, cell_id: str, record: EpochRecord) -> None:
        writes.record_epoch(self._db, study, cell_id, record)

    def record_result(self, study: str, cell_id: str, result: TrialResult) -> None:
        writes.record_result(self._db, study, cell_id, result)

    def record_failure(self, study: str, cell_id: str, error: str, detail: str = "") -> None:
        writes.record_failure(self._db, study, cell_id, error, detail)

    def list_studies(self) -> list[StudySummary]:
        return reads.list_studies(self._db)

    def study_record(self, name: str) -> StudyRecord | None:
        return reads.study_record(self._db, name)

    def cells_frame(self, study: str) -> pd.DataFrame:
        return reads.cells_frame(self._db, study)

    def epochs_frame(self, study: str) -> pd.DataFrame:
        return reads.epochs_frame(self._db, study)
