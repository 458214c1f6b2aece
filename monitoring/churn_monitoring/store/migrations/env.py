"""Alembic environment of the prediction store: runs on the connection `database.upgrade` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from churn_monitoring.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations through `churnops monitor db upgrade` (it passes the connection)")
    with create_engine(url).begin() as own_connection:
        context.configure(connection=own_connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
