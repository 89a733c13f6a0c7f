"""The search index stays right through deletes and redactions: message ids are never reused."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import delete, select, text, update
from support import PHONE, Live

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message
from twilio_chat.inbox import search
from twilio_chat.inbox.conversations import list_messages


def _send(live: Live, body: str) -> dict[str, Any]:
    answer = live.api("POST", "/api/send-message", json={"to": PHONE, "body": body})
    assert answer.status_code == 201, answer.text
    message: dict[str, Any] = answer.json()["message"]
    return message


def _found(live: Live, words: str) -> list[str]:
    answer = live.api("GET", "/api/messages", params={"text": words})
    assert answer.status_code == 200, answer.text
    return [m["sid"] for m in answer.json()["messages"]]


def _add(db: Database, body: str) -> int:
    with db.session() as session:
        message = Message(
            direction="inbound", contact_number=PHONE, body=body, status="received", media=[]
        )
        session.add(message)
        session.flush()
        return message.id


def check_index(db: Database) -> None:
    """On SQLite, index what is new, then have FTS5 compare its index with the messages table."""
    if db.is_sqlite:
        search.index_new_messages(db)
        with db.session() as session:
            session.execute(
                text("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
            )


def test_the_newest_message_deleted_does_not_lend_its_id_to_the_next(live: Live) -> None:
    first = _send(live, "alpha parcel")
    search.index_new_messages(live.db)  # the worker indexes it
    assert live.api("DELETE", f"/api/messages/{first['sid']}").status_code == 200
    second = _send(live, "bravo parcel")
    assert second["id"] > first["id"]
    search.index_new_messages(live.db)

    assert _found(live, "bravo") == [second["sid"]]
    redacted = live.api("POST", f"/api/messages/{second['sid']}/redact")
    assert redacted.status_code == 200, redacted.text
    assert _found(live, "bravo") == []
    check_index(live.db)
    assert live.api("DELETE", f"/api/messages/{second['sid']}").status_code == 200
    check_index(live.db)


def test_ids_are_never_reused_after_deleting_the_newest_rows(db: Database) -> None:
    ids = [_add(db, f"row {i}") for i in range(3)]
    search.index_new_messages(db)
    with db.session() as session:
        session.execute(delete(Message).where(Message.id.in_(ids[1:])))
    assert _add(db, "after") > ids[-1]


def test_deletes_and_redactions_of_indexed_and_unindexed_rows_keep_the_index_right(
    db: Database,
) -> None:
    indexed = [_add(db, f"indexed harbour {i}") for i in range(4)]
    search.index_new_messages(db)
    fresh = [_add(db, f"fresh harbour {i}") for i in range(4)]
    with db.session() as session:  # each kind of change, on both sides of the indexed line
        for ids in (indexed, fresh):
            session.execute(update(Message).where(Message.id == ids[0]).values(body=""))
            session.execute(update(Message).where(Message.id == ids[1]).values(body="moved"))
            session.execute(delete(Message).where(Message.id == ids[2]))
    check_index(db)
    replacement = _add(db, "replacement harbour")
    check_index(db)
    found = [m.id for m in list_messages(db, 50, text="harbour").items]
    assert found == [replacement, fresh[3], indexed[3]]
    assert [m.id for m in list_messages(db, 50, text="moved").items] == [fresh[1], indexed[1]]
    with db.read() as session:
        assert session.scalar(select(Message.body).where(Message.id == indexed[0])) == ""


def test_random_sends_deletes_and_redactions_keep_search_right(db: Database) -> None:
    """A model of the inbox against the real one, through a seeded run of random changes."""
    rng = random.Random(20261207)
    words = ["apple", "banana", "cherry"]
    model: dict[int, str] = {}  # id -> body
    for step in range(120):
        action = rng.choice(["add", "add", "delete_newest", "delete", "redact", "index"])
        if action == "add" or not model:
            model[_add(db, f"{rng.choice(words)} {step}")] = "pending"
            with db.read() as session:
                newest = max(model)
                model[newest] = session.scalars(
                    select(Message.body).where(Message.id == newest)
                ).one()
            continue
        if action == "index":
            check_index(db)
            continue
        target = max(model) if action == "delete_newest" else rng.choice(sorted(model))
        with db.session() as session:
            if action == "redact":
                session.execute(update(Message).where(Message.id == target).values(body=""))
                model[target] = ""
            else:
                session.execute(delete(Message).where(Message.id == target))
                del model[target]
        word = rng.choice(words)
        expected = sorted((i for i, body in model.items() if word in body), reverse=True)
        assert [m.id for m in list_messages(db, 500, text=word).items] == expected, step
    check_index(db)
