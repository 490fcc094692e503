"""Opening a results database: the URL, the schema (Optuna's, ours, the `rbo_results` view) and
the race when several processes create a new database at the same moment."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from optuna.storages import RDBStorage

from robustbench_opt.errors import UserError
from robustbench_opt.storage import tables as t

DEFAULT_URL = "sqlite:///storage/robustbench.db"
ENV_VAR = "ROBUSTBENCH_STORAGE"
SCHEMA_ATTEMPTS = 5  # opening a new database retries when another process creates it too
SCHEMA_RACE_MESSAGES = (
    "already exists",  # a table or view another process created (SQLite, PostgreSQL)
    "UNIQUE constraint failed",  # SQLite: a version row another process inserted
    "duplicate key value violates unique constraint",  # PostgreSQL: the same, or pg_type rows
)


@dataclass
class Db:
    """An open results database: Optuna's storage and its engine (shared by all modules)."""

    url: str
    display_url: str  # the URL with its password hidden, for messages
    optuna: RDBStorage
    engine: sa.Engine
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)  # per study, cached


def resolve_url(url: str | None) -> str:
    """The --storage argument, else $ROBUSTBENCH_STORAGE, else the default SQLite file."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def exists(url: str) -> bool:
    """False only for a SQLite file that does not exist yet (nothing to read)."""
    path = _sqlite_path(_parse(url))
    return path is None or path.exists()


def open_db(url: str, create: bool) -> Db:
    """Opens `url` and makes sure its schema exists; a bad or unreachable URL is a UserError.

    `create=False` refuses a SQLite file that does not exist yet and creates none (reads).
    """
    parsed = _parse(url)
    display = parsed.render_as_string(hide_password=True)
    _check_sqlite_path(parsed, url, create)
    attempt = 1
    while True:
        try:
            storage = RDBStorage(url, engine_kwargs=_engine_kwargs(parsed))
            t.metadata.create_all(storage.engine)
            _create_results_view(storage.engine)
            return Db(url, display, storage, storage.engine)
        except (sa.exc.SQLAlchemyError, ImportError, RuntimeError) as err:
            first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            if attempt < SCHEMA_ATTEMPTS and lost_schema_race(first):
                time.sleep(0.2 * attempt)  # another process just created the schema
                attempt += 1
                continue
            raise UserError(
                f"cannot open storage {display}: {first}; check --storage or ${ENV_VAR}"
            ) from None


def lost_schema_race(message: str) -> bool:
    """Whether opening a database failed because another process was creating its tables and
    version rows at that moment. Opening writes nothing else, so such a conflict is that race."""
    return any(text in message for text in SCHEMA_RACE_MESSAGES)


def insert_ignore(db: Db, table: sa.Table) -> Any:
    """INSERT that skips rows whose unique key exists (SQLite and PostgreSQL)."""
    dialect = db.engine.dialect.name
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


def _create_results_view(engine: sa.Engine) -> None:
    """Creates the `rbo_results` view unless it exists (a concurrent creator is the schema race
    above: the retry finds it)."""
    if t.RESULTS_VIEW not in sa.inspect(engine).get_view_names():
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE VIEW {t.RESULTS_VIEW} AS {t.RESULTS_VIEW_SELECT}"))


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(
            f"invalid storage URL {url!r}; valid forms: sqlite:///PATH, "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; "
            f"fix --storage or ${ENV_VAR}"
        ) from None


def _sqlite_path(parsed: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for other backends and in-memory SQLite."""
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _check_sqlite_path(parsed: sa.URL, url: str, create: bool) -> None:
    path = _sqlite_path(parsed)
    if path is None or path.exists():
        return
    if not create:
        raise UserError(
            f"no results database at {path}; run a study first, or set the storage URL "
            f"(--storage, ${ENV_VAR}) to an existing database"
        )
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
