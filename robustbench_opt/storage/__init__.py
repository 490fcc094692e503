"""Results database: Optuna RDB storage (SQLite or PostgreSQL) plus our per-cell tables.

The contract (what each operation guarantees, its idempotency and concurrency) is written once
in `_base`; `Store` implements it.
"""

from __future__ import annotations

from robustbench_opt.storage._base import (
    HEARTBEAT_SECONDS,
    STALE_AFTER_SECONDS,
    ImportRow,
    Recovered,
    SpecChanged,
    StudyRecord,
    StudySummary,
)
from robustbench_opt.storage.bootstrap import DEFAULT_URL, ENV_VAR, resolve_url
from robustbench_opt.storage.store import Store

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "HEARTBEAT_SECONDS",
    "STALE_AFTER_SECONDS",
    "ImportRow",
    "Recovered",
    "SpecChanged",
    "Store",
    "StudyRecord",
    "StudySummary",
    "resolve_url",
]
