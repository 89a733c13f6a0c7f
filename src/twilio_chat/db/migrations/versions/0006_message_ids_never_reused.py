"""message ids never reused: the messages table gets AUTOINCREMENT on SQLite

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00.000000

Without AUTOINCREMENT, SQLite gives a new row the largest rowid plus one, so deleting the newest
message handed its id to the next one. The full-text index (0004, 0005) takes every id up to
`search_index.indexed_through` as indexed: the new message was never indexed, and changing or
deleting it told FTS5 to remove an entry it never had, which corrupts the index ("database disk
image is malformed"). With AUTOINCREMENT an id is never handed out twice.

SQLite cannot add AUTOINCREMENT to a table, so the table is rebuilt (Alembic's batch "move and
copy", every row with its id, every index and constraint). The rebuild drops the table's
triggers: 0005's are created again. The full-text index is rebuilt from the messages, since one
that met the bug is damaged, and `sqlite_sequence` starts above every id the index was told
about, so no id it counts as indexed is handed out. The caller turns foreign keys off for the
rebuild (migrate.py): dropping the old table must not cascade to status_events.

PostgreSQL's sequences never hand out an id twice: nothing changes there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# 0005's triggers: a body change or a delete of an indexed message reaches the index.
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


def _rebuild(autoincrement: bool) -> None:
    """Rebuild the messages table with or without AUTOINCREMENT, then its triggers and index."""
    for name in ("delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{name}")
    with op.batch_alter_table(
        "messages", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    for trigger in _TRIGGERS:
        op.execute(trigger)
    broken = op.get_bind().execute(sa.text("PRAGMA foreign_key_check")).fetchall()
    if broken:  # the copy must keep every reference; nothing is committed if it did not
        raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")
    # Everything stored is in the index again, built afresh from the messages.
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # Ids up to indexed_through may have been handed out and deleted since: start above them.
    through = bind.scalar(sa.text("SELECT indexed_through FROM search_index WHERE id = 1")) or 0
    _rebuild(autoincrement=True)
    newest = bind.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM messages")) or 0
    op.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'messages'"))
    op.execute(
        sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', :seq)").bindparams(
            seq=max(through, newest)
        )
    )
    op.execute(sa.text("UPDATE search_index SET indexed_through = :id").bindparams(id=newest))


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(autoincrement=False)
    op.execute(
        "UPDATE search_index SET indexed_through = (SELECT COALESCE(MAX(id), 0) FROM messages)"
    )
