"""SQLite's full-text index of message bodies, kept up to date off the webhook's path.

Migration 0004 gave SQLite an FTS5 table with the trigram tokenizer over the message bodies;
0005 took its maintenance out of the transaction that stores a webhook. Messages with an id up
to `search_index.indexed_through` are in the index; the worker indexes newer ones in batches
(`index_new_messages`), and a search reads the messages newer than that directly (ids only grow:
SQLite has one writer at a time). Body changes and deletes of indexed rows still reach the index
through triggers, which hand FTS5 the old body to remove (an external content table keeps no copy
of it). That holds only while an id is never handed out twice: a reused id at or below the line
would be taken as indexed, and removing its entry would corrupt the index, so the messages table
has AUTOINCREMENT (migration 0006). PostgreSQL's trigram index (pg_trgm, GIN) needs none of this.
"""

from __future__ import annotations

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message, SearchIndex

BATCH = 5000  # messages indexed per transaction


def indexed_through(session: Session) -> int:
    """Return the highest message id the full-text index holds (0 when it holds none)."""
    return session.scalar(select(SearchIndex.indexed_through).where(SearchIndex.id == 1)) or 0


def index_new_messages(db: Database, limit: int = BATCH) -> int:
    """Add messages stored since the last call to the full-text index; return how many.

    Reads first and writes only when there is something to index, so an idle worker can call
    it every round.
    """
    if not db.is_sqlite:
        return 0
    with db.read() as session:
        newest = session.scalar(select(func.max(Message.id)))
        if newest is None or newest <= indexed_through(session):
            return 0
    with db.session() as session:
        through = session.scalar(select(SearchIndex.indexed_through).where(SearchIndex.id == 1))
        if through is None:  # no row (migration 0005 makes it): index nothing twice
            return 0
        last = session.scalar(
            select(func.max(Message.id)).where(
                Message.id.in_(
                    select(Message.id)
                    .where(Message.id > through)
                    .order_by(Message.id)
                    .limit(limit)
                    .scalar_subquery()
                )
            )
        )
        if last is None:
            return 0
        added = (
            session.connection()
            .execute(
                text(
                    "INSERT INTO messages_fts(rowid, body) "
                    "SELECT id, body FROM messages WHERE id > :after AND id <= :last"
                ),
                {"after": through, "last": last},
            )
            .rowcount
        )
        session.execute(update(SearchIndex).where(SearchIndex.id == 1).values(indexed_through=last))
        return int(added or 0)
