"""Alembic environment: runs migrations on the connection or URL the app hands over."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from twilio_chat.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without a connection."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """On SQLite, enforce no foreign keys while migrations run, and enforce them again after.

    A migration that rebuilds a table (batch "move and copy") drops the old one; with foreign
    keys on, that drop deletes every row first and cascades to the tables referring to it. The
    pragma is a no-op inside a transaction, so it is set before the migrations begin one.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = cast(sqlite3.Connection, connection.connection.driver_connection)
    raw.execute("PRAGMA foreign_keys=OFF")
    if raw.execute("PRAGMA foreign_keys").fetchall() != [(0,)]:
        raise RuntimeError("migrations must start outside a transaction on SQLite")
    try:
        yield
        if connection.in_transaction():
            connection.commit()  # the migrations' work: the pragma below is a no-op inside one
    finally:
        if connection.in_transaction():
            connection.rollback()
        raw.execute("PRAGMA foreign_keys=ON")


def run_migrations_online() -> None:
    """Run migrations on the given connection (or a new one to the configured URL)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        with sqlite_foreign_keys_off(connection):
            context.configure(
                connection=connection, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn, sqlite_foreign_keys_off(conn):
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
