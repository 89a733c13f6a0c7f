"""search index off the webhook path: new messages are indexed a batch at a time by the worker

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 19:45:00.000000

The FTS5 insert trigger of 0004 made every inbound webhook's transaction write the trigram
index too (a new FTS segment per commit), which held SQLite's single write lock much longer.
The insert trigger goes; `search_index.indexed_through` records how far the index has got,
the worker indexes newer messages in batches (search.py), and a search reads the few newer
messages directly. The update and delete triggers stay, for rows the index already holds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TRIGGERS_0004 = [
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
_TRIGGERS = [
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT indexed_through FROM search_index WHERE id = 1) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages
    WHEN old.id <= (SELECT indexed_through FROM search_index WHERE id = 1) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END""",
]


def _drop_triggers() -> None:
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{name}")


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "search_index",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "indexed_through",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_index")),
    )
    # Everything stored so far is in the index (0004's trigger put it there).
    op.execute(
        "INSERT INTO search_index (id, indexed_through) "
        "SELECT 1, COALESCE(MAX(id), 0) FROM messages"
    )
    if op.get_bind().dialect.name == "sqlite":
        _drop_triggers()
        for trigger in _TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "sqlite":
        # Index what the worker had not got to yet, then put 0004's triggers back.
        op.execute(
            "INSERT INTO messages_fts(rowid, body) SELECT id, body FROM messages "
            "WHERE id > (SELECT indexed_through FROM search_index WHERE id = 1)"
        )
        _drop_triggers()
        for trigger in _TRIGGERS_0004:
            op.execute(trigger)
    op.drop_table("search_index")
