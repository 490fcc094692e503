"""Results database: Optuna RDB storage (SQLite or PostgreSQL) plus our per-cell table."""

from __future__ import annotations

from robustbench_opt.storage.store import (
    DEFAULT_URL,
    ENV_VAR,
    HEARTBEAT_SECONDS,
    STALE_AFTER_SECONDS,
    Recovered,
    SpecChanged,
    Store,
    StudyRecord,
    StudySummary,
    resolve_url,
    spec_hash,
)

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "HEARTBEAT_SECONDS",
    "STALE_AFTER_SECONDS",
    "Recovered",
    "SpecChanged",
    "Store",
    "StudyRecord",
    "StudySummary",
    "resolve_url",
    "spec_hash",
]
