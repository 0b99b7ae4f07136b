"""Alembic environment: runs on the connection wanserve hands it (see jobs.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from wanserve.jobs.db import Base
from wanserve.settings import Settings

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # `alembic` run by hand: use the configured database.
    with create_engine(Settings().resolved_database_url).begin() as own_connection:
        _run(own_connection)
