"""Connecting to the prediction store and bringing its schema up to date with the packaged migrations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from sqlite3 import Connection as SQLiteConnection
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url

from churn_monitoring.settings import DetectorSettings
from churn_monitoring.store.schema import predictions

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_DATABASE = "monitoring.db"


def database_url(settings: DetectorSettings) -> str:
    """CHURNOPS_DETECTOR_DATABASE_URL, else SQLite under CHURNOPS_DETECTOR_HOME."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.home / DEFAULT_DATABASE).resolve()}"


def create_store_engine(url: str) -> Engine:
    """An engine that fails fast when the database is unreachable, instead of hanging the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: SQLiteConnection, _: object) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # connect_timeout bounds a connect to a dead host; statement_timeout a write to a hung one.
        connect_args = {"connect_timeout": 5, "options": "-c statement_timeout=15000"}
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, connect_args=connect_args)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the packaged Alembic migrations (on PostgreSQL under an advisory lock: replicas start together)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(4711004)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def insert_predictions(connection: Connection, records: Iterable[Mapping[str, Any]]) -> int:
    """Insert prediction rows, skipping any (event_id, row_index) already stored; returns rows inserted."""
    rows = [_row(record) for record in records]
    if not rows:
        return 0
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        result = connection.execute(
            pg_insert(predictions)
            .on_conflict_do_nothing(index_elements=["event_id", "row_index"])
            .returning(predictions.c.row_index),
            rows,
        )
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        result = connection.execute(
            sqlite_insert(predictions)
            .on_conflict_do_nothing(index_elements=["event_id", "row_index"])
            .returning(predictions.c.row_index),
            rows,
        )
    else:
        raise RuntimeError(f"prediction store supports PostgreSQL and SQLite, not {dialect}")
    # RETURNING yields only the rows actually inserted; rowcount is unreliable for executemany.
    return len(result.all())


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(record)
    predicted_at = row["predicted_at"]
    if isinstance(predicted_at, str):
        predicted_at = datetime.fromisoformat(predicted_at)
    row["predicted_at"] = as_utc(predicted_at)
    return row


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: everything the store writes is UTC, so naive means UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
