"""Storing inbound texts: once per sid, counted on the conversation, STOP kept, a reply job."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from support import OURS, numbered_text, reply_keys

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Contact, Job, Message, OptOut, utcnow
from twilio_chat.messaging import (
    InboundFields,
    InboundResult,
    record_inbound,
    store_inbound,
    store_inbound_many,
)
from twilio_chat.settings import Settings


def store(db: Database, settings: Settings, texts: list[InboundFields]) -> list[InboundResult]:
    """Store texts as one batch, in one transaction."""
    with db.session() as session:
        return store_inbound_many(session, settings, texts)


def contact(db: Database, number: str) -> Contact:
    """The conversation of a number."""
    with db.read() as session:
        return session.scalars(select(Contact).where(Contact.number == number)).one()


def test_a_sid_repeated_or_stored_before_is_stored_once(db: Database, settings: Settings) -> None:
    first = store(db, settings, [numbered_text(1)])
    results = store(
        db, settings, [numbered_text(2), numbered_text(1), numbered_text(2), numbered_text(3)]
    )
    assert [r.created for r in results] == [True, False, False, True]
    assert results[1].message_id == first[0].message_id  # the earlier row, not a new one
    assert results[2].message_id == results[0].message_id
    with db.read() as session:
        sids = session.scalars(select(Message.sid).order_by(Message.id)).all()
    assert sids == [numbered_text(1).sid, numbered_text(2).sid, numbered_text(3).sid]
    assert reply_keys(db) == [f"reply:{numbered_text(n).sid}" for n in (1, 2, 3)]


def test_a_conversation_counts_unread_and_keeps_the_newest_as_the_last_message(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    results = store(
        db,
        settings,
        [
            numbered_text(1, received_at=now - timedelta(minutes=1)),
            numbered_text(2, received_at=now),
            numbered_text(
                3, received_at=now - timedelta(minutes=5)
            ),  # a spooled webhook, stored late
            numbered_text(4, sender="+15550001111"),
        ],
    )
    mine = contact(db, "+15557654321")
    assert mine.unread_count == 3
    assert mine.last_message_id == results[1].message_id
    late = store(db, settings, [numbered_text(5, received_at=now - timedelta(hours=1))])
    mine = contact(db, "+15557654321")
    assert mine.unread_count == 4
    assert mine.last_message_id == results[1].message_id  # still the newest, not the late one
    assert late[0].created
    assert contact(db, "+15550001111").unread_count == 1


def test_each_message_keeps_its_own_time(db: Database, settings: Settings) -> None:
    early, late = utcnow() - timedelta(hours=2), utcnow() - timedelta(minutes=3)
    batch = [
        numbered_text(1, received_at=early),
        numbered_text(2, received_at=late),
        numbered_text(3, received_at=early),
    ]
    before = utcnow()
    results = store(db, settings, [*batch, numbered_text(4)])
    with db.read() as session:
        stored = {m.id: m.created_at for m in session.scalars(select(Message))}
    times = [stored[r.message_id] for r in results]
    assert times[:3] == [early, late, early]
    assert times[3] >= before  # no time given: when it was stored
    assert contact(db, "+15557654321").last_message_at == times[3]


def test_stop_silences_what_follows_it_and_start_answers_again(
    db: Database, settings: Settings
) -> None:
    results = store(
        db,
        settings,
        [
            numbered_text(1, body="before"),
            numbered_text(2, body="STOP"),
            numbered_text(3, body="after stop"),
            numbered_text(4, body="START"),
            numbered_text(5, body="after start"),
        ],
    )
    assert [r.keyword for r in results] == [None, "opt_out", None, "opt_in", None]
    assert [r.reply_enqueued for r in results] == [True, False, False, False, True]
    assert reply_keys(db) == [f"reply:{numbered_text(1).sid}", f"reply:{numbered_text(5).sid}"]
    with db.read() as session:
        row = session.scalars(select(OptOut)).one()
    assert (row.sender, row.number, row.opted_out) == (OURS, "+15557654321", False)


def test_a_number_opted_out_before_gets_no_reply_job(db: Database, settings: Settings) -> None:
    store(db, settings, [numbered_text(1, body="stop")])
    results = store(
        db, settings, [numbered_text(2, body="hi"), numbered_text(3, sender="+15550001111")]
    )
    assert [r.reply_enqueued for r in results] == [False, True]


def test_a_paused_conversation_gets_no_reply_job(db: Database, settings: Settings) -> None:
    store(db, settings, [numbered_text(1)])
    with db.session() as session:
        session.execute(
            update(Contact).values(replies_paused_until=utcnow() + timedelta(minutes=30))
        )
    assert [r.reply_enqueued for r in store(db, settings, [numbered_text(2)])] == [False]


def test_texts_stored_at_once_from_many_threads_are_each_stored_once(
    db: Database, settings: Settings
) -> None:
    # Twilio may deliver a webhook twice at the same moment (a retry racing the original),
    # and many texts arrive together: each sid is stored once, with one reply job.
    errors: list[BaseException] = []
    results: list[InboundResult] = []

    def deliver(n: int) -> None:
        text = numbered_text(n % 20, sender=f"+1555000{n % 5:04d}")
        try:
            with db.session() as session:
                results.append(store_inbound(session, settings, text))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.created for r in results) == 20
    with db.read() as session:
        assert session.scalar(select(func.count(Message.id))) == 20
        assert session.scalar(select(func.count(Job.id))) == 20
        unread = session.scalar(select(func.sum(Contact.unread_count)))
    assert unread == 20


def test_a_webhook_form_is_stored_with_its_media_and_segments(
    db: Database, settings: Settings
) -> None:
    form = {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15557654321",
        "To": OURS,
        "Body": "a picture",
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/media/0",
        "MediaContentType0": "image/png",
        "MediaUrl1": "https://api.twilio.com/media/1",
        "MediaContentType1": "image/jpeg",
        "NumSegments": "2",
    }
    result = record_inbound(db, settings, form)
    assert result.created and result.reply_enqueued
    with db.read() as session:
        message = session.get_one(Message, result.message_id)
    assert (message.body, message.num_segments, message.status) == ("a picture", 2, "received")
    assert [m["content_type"] for m in message.media] == ["image/png", "image/jpeg"]
    assert record_inbound(db, settings, form).created is False  # Twilio retried it


def test_the_writer_answers_many_threads_each_with_its_own_text(
    db: Database, settings: Settings
) -> None:
    from twilio_chat.messaging.writer import InboundWriter

    writer = InboundWriter(db, settings)
    results: dict[int, InboundResult] = {}

    def hand(n: int) -> None:
        results[n] = writer.store(numbered_text(n, sender=f"+1555000{n % 3:04d}"))

    threads = [threading.Thread(target=hand, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == list(range(40)) and all(r.created for r in results.values())
    with db.read() as session:
        sids = {m.id: m.sid for m in session.scalars(select(Message))}
    assert {n: sids[r.message_id] for n, r in results.items()} == {
        n: numbered_text(n).sid for n in range(40)
    }
    assert writer.store(numbered_text(7)).created is False  # Twilio retried it


def test_a_text_the_writer_cannot_store_fails_alone(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twilio_chat.messaging import writer as writer_module

    real = writer_module.store_inbound_many

    def refuse_two(session: Any, settings: Settings, texts: list[InboundFields]) -> Any:
        if numbered_text(2).sid in {text.sid for text in texts}:
            raise ValueError("this one cannot be stored")
        return real(session, settings, texts)

    monkeypatch.setattr(writer_module, "store_inbound_many", refuse_two)
    writer = writer_module.InboundWriter(db, settings)
    batch = [writer_module._Pending(numbered_text(n)) for n in (1, 2, 3)]
    writer._write(batch)
    assert all(item.done.is_set() for item in batch)
    assert isinstance(batch[1].error, ValueError) and batch[1].result is None
    assert batch[0].result is not None and batch[2].result is not None
    with db.read() as session:
        stored = set(session.scalars(select(Message.sid)))
    assert stored == {numbered_text(1).sid, numbered_text(3).sid}


def test_the_writer_stores_on_after_its_connection_is_closed_under_it(
    db: Database, settings: Settings
) -> None:
    # The database may close an idle connection (a restart, an idle timeout): the text that
    # meets it is stored all the same, and the writer carries on with a new connection.
    from twilio_chat.messaging.writer import InboundWriter

    writer = InboundWriter(db, settings)
    assert writer.store(numbered_text(1)).created
    held = writer._connection
    assert held is not None
    held.connection.dbapi_connection.close()  # type: ignore[union-attr]
    assert writer.store(numbered_text(2)).created
    assert writer.store(numbered_text(3)).created
    assert writer._connection is not None and writer._connection is not held
    assert reply_keys(db) == [f"reply:{numbered_text(n).sid}" for n in (1, 2, 3)]
