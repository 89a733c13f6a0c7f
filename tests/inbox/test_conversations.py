"""Reading the inbox: text search through the trigram index, kept in step with the messages."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, event, select, text, update
from support import PHONE, Live

from twilio_chat.db.engine import Database
from twilio_chat.db.migrate import alembic_config
from twilio_chat.db.models import Contact, Message
from twilio_chat.inbox import conversations, search
from twilio_chat.inbox.conversations import get_thread, list_messages


def _add(db: Database, body: str, number: str = PHONE, direction: str = "inbound") -> int:
    with db.session() as session:
        message = Message(
            direction=direction,
            contact_number=number,
            body=body,
            status="received" if direction == "inbound" else "delivered",
            media=[],
        )
        session.add(message)
        session.flush()
        return message.id


def _search(db: Database, words: str, limit: int = 50, **filters: Any) -> list[str]:
    return [m.body for m in list_messages(db, limit, text=words, **filters).items]


def _check_index(db: Database) -> None:
    """On SQLite, index what is new, then have FTS5 compare its index with the messages table."""
    if db.is_sqlite:
        search.index_new_messages(db)
        with db.session() as session:
            session.execute(
                text("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
            )


def test_search_finds_a_substring_in_any_case_newest_first(db: Database) -> None:
    for body in ("Where is my ORDER?", "nothing here", "a border collie", "Order #2 is ready"):
        _add(db, body)
    assert _search(db, "order") == ["Order #2 is ready", "a border collie", "Where is my ORDER?"]
    assert _search(db, "ORDER #2") == ["Order #2 is ready"]
    assert _search(db, "xylophone") == []
    assert _search(db, "is") == ["Order #2 is ready", "Where is my ORDER?"]  # shorter than 3


def test_search_takes_quotes_wildcards_and_fts_syntax_literally(db: Database) -> None:
    for body in ('she said "hi" twice', "100% sure", "a_b c", "abc", "NEAR(x y)", "x OR y"):
        _add(db, body)
    assert _search(db, '"hi"') == ['she said "hi" twice']
    assert _search(db, "0%") == ["100% sure"]
    assert _search(db, "a_b") == ["a_b c"]
    assert _search(db, "NEAR(") == ["NEAR(x y)"]
    assert _search(db, "x OR") == ["x OR y"]
    assert _search(db, "_") == ["a_b c"]


def test_search_pages_with_the_cursor_and_combines_with_filters(db: Database) -> None:
    ids = [
        _add(db, f"refund please ({i})", direction=("inbound", "outbound")[i % 2]) for i in range(7)
    ]
    _add(db, "refund for someone else", number="+15557770001")
    _add(db, "no match")
    seen: list[int] = []
    cursor = None
    while True:
        page = list_messages(db, 3, text="refund", before=cursor, number=PHONE)
        seen += [m.id for m in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids, reverse=True)
    # The same without the number filter, through the index on SQLite.
    first = list_messages(db, 3, text="refund")
    second = list_messages(db, 3, text="refund", before=first.next_cursor)
    assert first.items[0].body == "refund for someone else"
    assert [m.id for m in second.items] == sorted(ids, reverse=True)[2:5]
    assert _search(db, "refund", direction="outbound") == [
        f"refund please ({i})" for i in (5, 3, 1)
    ]
    assert _search(db, "refund", status="delivered", number=PHONE) == [
        f"refund please ({i})" for i in (5, 3, 1)
    ]


def test_search_reads_the_newest_ids_then_the_older_ones_through_the_index(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL the newest RECENT_IDS ids are read directly and older ones through the
    # trigram index: with a window of 4 ids, pages fall on both sides of it and across it.
    monkeypatch.setattr(conversations, "RECENT_IDS", 4)
    ids = []
    for i in range(12):
        ids.append(_add(db, f"invoice {i}" if i % 3 else f"hello {i}"))
    matching = [m for i, m in enumerate(ids) if i % 3][::-1]  # newest first
    assert [m.id for m in list_messages(db, 50, text="INVOICE").items] == matching
    seen: list[int] = []
    cursor = None
    while True:
        page = list_messages(db, 3, text="invoice", before=cursor)
        seen += [m.id for m in page.items]
        assert len(page.items) == 3 or page.next_cursor is None
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == matching
    assert [m.id for m in list_messages(db, 50, text="hello", before=ids[6]).items] == [
        ids[3],
        ids[0],
    ]  # only older than the window below the cursor
    assert list_messages(db, 5, text="invoice", before=ids[0]).items == []
    assert _search(db, "xylophone") == []


def test_search_in_an_empty_inbox_finds_nothing(db: Database) -> None:
    page = list_messages(db, 50, text="invoice")
    assert page.items == [] and page.next_cursor is None


def test_the_index_follows_inserts_body_changes_and_deletes(db: Database) -> None:
    kept = _add(db, "meet at the harbour")
    changed = _add(db, "my passport is lost")
    gone = _add(db, "passport found")
    assert _search(db, "passport") == ["passport found", "my passport is lost"]
    with db.session() as session:
        session.execute(update(Message).where(Message.id == changed).values(body=""))
        session.execute(update(Message).where(Message.id == kept).values(status="read"))
        session.execute(delete(Message).where(Message.id == gone))
    assert _search(db, "passport") == []
    assert _search(db, "harbour") == ["meet at the harbour"]
    with db.session() as session:
        session.execute(update(Message).where(Message.id == changed).values(body="new passport"))
    assert _search(db, "passport") == ["new passport"]
    _check_index(db)


def test_search_finds_messages_before_and_after_the_worker_indexes_them(db: Database) -> None:
    old = [_add(db, f"parcel {i} arrived") for i in range(3)]
    assert search.index_new_messages(db) == (3 if db.is_sqlite else 0)
    assert search.index_new_messages(db) == 0  # nothing new
    new = [_add(db, f"parcel {i} is late") for i in range(3, 6)]
    expected = [f"parcel {i} {'is late' if i >= 3 else 'arrived'}" for i in range(5, -1, -1)]
    assert _search(db, "parcel") == expected  # three read directly, three through the index
    first = list_messages(db, 4, text="PARCEL")  # a page that spans both
    assert [m.id for m in first.items] == [*reversed(new), old[2]]
    rest = list_messages(db, 4, text="parcel", before=first.next_cursor)
    assert [m.id for m in rest.items] == [old[1], old[0]] and rest.next_cursor is None
    with db.session() as session:  # a change to a message not indexed yet, then to an indexed one
        session.execute(update(Message).where(Message.id == new[0]).values(body="a letter"))
        session.execute(update(Message).where(Message.id == old[0]).values(body="a postcard"))
    assert _search(db, "parcel") == expected[:2] + expected[3:5]
    search.index_new_messages(db)
    assert _search(db, "parcel") == expected[:2] + expected[3:5]
    assert _search(db, "letter") == ["a letter"] and _search(db, "postcard") == ["a postcard"]
    _check_index(db)


def test_upgrading_to_0004_indexes_the_messages_already_stored(db: Database) -> None:
    cfg = alembic_config(db)
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
        conn.commit()
    with db.session() as session:  # written while no index or trigger exists
        session.execute(
            Message.__table__.insert(),
            [
                {"direction": "inbound", "contact_number": PHONE, "body": b, "status": "received"}
                for b in ("the invoice is wrong", "thanks")
            ],
        )
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
    assert _search(db, "invoice") == ["the invoice is wrong"]
    _add(db, "second invoice")
    assert _search(db, "invoice") == ["second invoice", "the invoice is wrong"]
    _check_index(db)


def test_the_lists_read_messages_through_indexes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.is_sqlite:
        _the_search_can_use_the_trigram_index(db, monkeypatch)
        return
    for i in range(20):
        _add(db, f"hello {i}", direction=("inbound", "outbound")[i % 2])
    with db.session() as session:
        session.add(Contact(number=PHONE, unread_count=0))
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if sql.lstrip().startswith("SELECT"):
            statements.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    list_messages(db, 5, direction="inbound")
    list_messages(db, 5, text="hello")
    list_messages(db, 5, text="hello", direction="outbound", before=10)
    get_thread(db, PHONE, 5)
    event.remove(db.engine, "before_cursor_execute", capture)
    with db.read() as session:
        for sql, params in statements:
            plan = session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            details = [row[3] for row in plan]
            scans = [d for d in details if d.startswith("SCAN messages ") or d == "SCAN messages"]
            assert not scans, (sql, details)
            assert not any("TEMP B-TREE" in d for d in details), (sql, details)


def test_a_redacted_or_deleted_text_is_no_longer_found(live: Live) -> None:
    for body in ("my secret passphrase", "another passphrase"):
        live.api("POST", "/api/sandbox/simulate", json={"from": PHONE, "body": body})

    def found() -> str:
        answer = live.api("GET", "/partials/dashboard", params={"text": "passphrase"})
        assert answer.status_code == 200
        return answer.text

    page = found()
    assert "my secret passphrase" in page and "another passphrase" in page
    with live.db.read() as session:
        first, second = session.scalars(
            select(Message.sid).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
    assert live.api("POST", f"/api/messages/{first}/redact").status_code == 200
    assert live.api("DELETE", f"/api/messages/{second}").status_code == 200
    page = found()
    assert "passphrase" not in page.replace('value="passphrase"', "")


def _the_search_can_use_the_trigram_index(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL, the newest ids are read along the primary key, and the older ones through
    the trigram index (the search's ILIKE, with its ESCAPE, is one that index serves)."""
    monkeypatch.setattr(conversations, "RECENT_IDS", 1)
    for body in ("hello there", "hello again", "hello once more"):
        _add(db, body)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if sql.lstrip().startswith("SELECT") and "ILIKE" in sql:
            statements.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    assert _search(db, "100%_x") == []
    event.remove(db.engine, "before_cursor_execute", capture)
    (recent, older) = statements
    with db.read() as session:
        conn = session.connection()
        # A handful of rows is read faster without an index: make the planner show it can.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + recent[0], recent[1]))
        assert "Index Scan Backward using pk_messages" in plan, plan
        conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + older[0], older[1]))
    assert "Bitmap Index Scan on ix_messages_body_trgm" in plan, plan
