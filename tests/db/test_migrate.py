"""Migrations: 0006 rebuilds the messages table on SQLite so ids are never handed out twice."""

from __future__ import annotations

from alembic import command
from sqlalchemy import delete, func, inspect, select, text, update
from support import PHONE

from twilio_chat.db.engine import Database
from twilio_chat.db.migrate import alembic_config, is_current
from twilio_chat.db.models import Message, StatusEvent
from twilio_chat.inbox import search
from twilio_chat.inbox.conversations import list_messages


def _migrate(db: Database, action: str, revision: str) -> None:
    cfg = alembic_config(db)
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)
        conn.commit()


def _add(db: Database, body: str) -> int:
    with db.session() as session:
        row = {"direction": "inbound", "contact_number": PHONE, "body": body}
        result = session.execute(
            Message.__table__.insert().values(
                **row, status="received", media=[], num_segments=1, redacted=False
            )
        )
        (key,) = result.inserted_primary_key or (0,)
        session.execute(
            StatusEvent.__table__.insert().values(
                message_id=key, message_sid=f"SM{key:032d}", status="received", payload={}
            )
        )
        return int(key)


def _search(db: Database, words: str) -> list[int]:
    return [m.id for m in list_messages(db, 50, text=words).items]


def _integrity_check(db: Database) -> None:
    with db.session() as session:
        session.execute(
            text("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
        )


def _events(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(StatusEvent)) or 0)


def test_0006_keeps_every_row_and_index_and_repairs_what_reused_ids_broke(db: Database) -> None:
    _migrate(db, "downgrade", "0005")
    kept = [_add(db, f"lighthouse {i}") for i in range(4)]
    newest = _add(db, "newest lighthouse")
    search.index_new_messages(db)
    with db.session() as session:  # the newest indexed message is deleted...
        session.execute(delete(Message).where(Message.id == newest))
    reused = _add(db, "reused lighthouse")  # ...and on SQLite before 0006 its id came back
    assert reused == newest if db.is_sqlite else reused > newest
    with db.session() as session:  # what broke the index: a change to the unindexed row
        session.execute(update(Message).where(Message.id == reused).values(body="beacon"))
    events = _events(db)

    _migrate(db, "upgrade", "head")

    assert is_current(db)
    assert _events(db) == events  # the rebuild cascaded to no status event
    assert _search(db, "lighthouse") == sorted(kept, reverse=True)
    assert _search(db, "beacon") == [reused]
    later = _add(db, "later lighthouse")
    assert later > max(newest, reused)
    if db.is_sqlite:
        search.index_new_messages(db)
        _integrity_check(db)
    indexes = {
        ix["name"]
        for ix in inspect(db.engine).get_indexes("messages")
        if not ix.get("duplicates_constraint")  # PostgreSQL's index behind a unique constraint
    }
    expected = {ix.name for ix in Message.__table__.indexes}
    if db.is_sqlite:
        expected.discard("ix_messages_body_trgm")  # SQLite has messages_fts instead
    assert indexes == expected
    uniques = {
        tuple(u["column_names"]) for u in inspect(db.engine).get_unique_constraints("messages")
    }
    assert uniques == {("sid",), ("reply_to_sid",)}


def test_foreign_keys_are_enforced_again_after_migrating(db: Database) -> None:
    _migrate(db, "downgrade", "0005")
    _migrate(db, "upgrade", "head")
    _add(db, "hello")
    with db.session() as session:  # deleting a message still takes its events with it
        session.execute(delete(Message))
    assert _events(db) == 0
    if db.is_sqlite:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_0006_downgrades_and_upgrades_again(db: Database) -> None:
    ids = [_add(db, f"harbour {i}") for i in range(3)]
    search.index_new_messages(db)
    _migrate(db, "downgrade", "0005")
    assert _search(db, "harbour") == sorted(ids, reverse=True)
    _migrate(db, "upgrade", "head")
    assert _search(db, "harbour") == sorted(ids, reverse=True)
    if db.is_sqlite:
        with db.read() as session:
            ddl = session.scalar(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
            )
        assert "AUTOINCREMENT" in (ddl or "")
        _integrity_check(db)


def test_a_freshly_migrated_database_has_no_sandbox_tables(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())  # a copy of the run's migrated template
    assert {"messages", "jobs", "users"} <= tables
    assert {t for t in tables if t.startswith("sandbox")} == set()
