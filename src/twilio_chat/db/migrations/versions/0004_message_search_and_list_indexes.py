"""message search and list indexes: text search by trigrams, threads and lists in id order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:00:00.000000

Why, at a million messages:

- Text search was `body LIKE '%word%'`, which no b-tree index can serve: a word that is rare
  or absent read the whole table. SQLite gets an FTS5 table with the trigram
  tokenizer over the bodies (external content: it stores only the index, and triggers keep it
  in step with every insert, body update and delete); PostgreSQL gets a pg_trgm GIN index,
  which serves `ILIKE '%word%'` itself. Both keep the search's meaning: a case-insensitive
  substring of the body.
- Threads and filtered lists are ordered by id: (contact_number, id) and (direction, id) give
  that order straight from an index instead of sorting or walking the table.
- The dashboard counts by direction, time and status: with status in the index those counts
  read the index alone.

On SQLite, a migration that rebuilds the messages table (batch "move and copy") drops the
triggers: it must recreate them, as 0006 does.
"""

from __future__ import annotations

import logging
import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "body, content='messages', content_rowid='id', tokenize='trigram')"
)
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END""",
]


def _sqlite_upgrade() -> None:
    try:
        op.execute(_SQLITE_FTS)
    except sa.exc.OperationalError as exc:  # no FTS5, or SQLite older than 3.34 (no trigram)
        raise RuntimeError(
            f"text search needs SQLite 3.34 or newer with FTS5 (this is {sqlite3.sqlite_version}):"
            f" {exc.orig}"
        ) from exc
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    for trigger in _SQLITE_TRIGGERS:
        op.execute(trigger)


def _postgresql_upgrade() -> None:
    bind = op.get_bind()
    available = bind.scalar(
        sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
    )
    if not available:
        log.warning("pg_trgm is not installed on this server: text search will read the table")
        return
    try:
        with bind.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:  # e.g. no CREATE privilege on the database
        log.warning("cannot create extension pg_trgm (%s): text search will read the table", exc)
        return
    op.execute("CREATE INDEX ix_messages_body_trgm ON messages USING gin (body gin_trgm_ops)")


def upgrade() -> None:
    """Apply this revision."""
    # Plain index operations: a batch on SQLite could rebuild the table and drop the triggers.
    op.drop_index("ix_messages_direction_created", table_name="messages")
    op.create_index(
        "ix_messages_direction_created_status", "messages", ["direction", "created_at", "status"]
    )
    op.create_index("ix_messages_direction_id", "messages", ["direction", "id"])
    op.create_index("ix_messages_contact_id", "messages", ["contact_number", "id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_upgrade()
    elif dialect == "postgresql":
        _postgresql_upgrade()


def downgrade() -> None:
    """Revert this revision."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{name}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_body_trgm")
    op.drop_index("ix_messages_contact_id", table_name="messages")
    op.drop_index("ix_messages_direction_id", table_name="messages")
    op.drop_index("ix_messages_direction_created_status", table_name="messages")
    op.create_index("ix_messages_direction_created", "messages", ["direction", "created_at"])
