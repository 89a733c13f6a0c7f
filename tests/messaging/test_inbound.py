"""Inbound messages stored a batch at a time: the same outcome as one after another, in order.

The webhook path hands each message to a writer thread that stores whatever has queued up in one
transaction (ingest.py, messaging.store_inbound_batch). These tests pin down that a batch means
exactly what the same messages stored one by one would: duplicates, conversation summaries,
the opt-out ledger and reply jobs. They run on SQLite and, with TEST_DATABASE_URL, PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import OperationalError
from support import OURS, numbered_text, reply_keys

from twilio_chat import messaging
from twilio_chat.db.engine import CountedStatement, Database
from twilio_chat.db.models import Contact, Message, OptOut, utcnow
from twilio_chat.messaging import InboundFields, ingest, store_inbound_batch
from twilio_chat.settings import Settings


def store(db: Database, settings: Settings, batch: list[InboundFields]) -> list[Any]:
    """Store a batch in one transaction."""
    with db.session() as session:
        return store_inbound_batch(session, settings, batch)


def contact(db: Database, number: str) -> Contact:
    """The conversation of a number."""
    with db.read() as session:
        return session.scalars(select(Contact).where(Contact.number == number)).one()


def test_a_sid_repeated_in_a_batch_or_stored_before_is_stored_once(
    db: Database, settings: Settings
) -> None:
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


def test_a_batch_counts_unread_and_keeps_the_newest_as_the_last_message(
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


def test_each_message_of_a_batch_keeps_its_own_time(db: Database, settings: Settings) -> None:
    # Timestamps are converted once per object (db.DriverStatement): the same object again, a
    # different one, then the first again must each be stored as themselves.
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


def test_a_counted_statement_keeps_the_values_written_into_it(
    db: Database, settings: Settings
) -> None:
    # Besides each row's parameters, a statement may hold constants (a direction, a LIMIT):
    # they are parameters too, bound with their own value, as a DriverStatement binds them.
    results = store(db, settings, [numbered_text(n) for n in range(1, 5)])
    m = messaging.MESSAGES.c

    def build(n: int) -> Any:
        sids = [bindparam(f"sid_{i}", type_=m.sid.type) for i in range(n)]
        return select(m.id).where(m.sid.in_(sids), m.direction == "inbound").order_by(m.id).limit(2)

    with db.read() as session:
        conn = session.connection()
        rows = CountedStatement(conn.dialect, build).run(
            conn, [{"sid": numbered_text(n).sid} for n in (4, 2, 3)]
        )
    assert [r[0] for r in rows] == [results[1].message_id, results[2].message_id]


def test_a_batch_stored_together_ends_as_the_same_messages_stored_one_by_one(
    db: Database, settings: Settings
) -> None:
    # Two conversations' worth of the same traffic: one set of numbers stored as one batch
    # (one statement per table, in parts of BATCH_ROWS), the other one message at a time.
    rng = random.Random(7)
    now = utcnow()
    plan: list[tuple[int, int, timedelta | None]] = []  # (sid, sender, age)
    for n in range(1, 151):
        if n > 5 and rng.random() < 0.15:
            plan.append(rng.choice(plan))  # a retry, maybe in the same part, maybe not
        else:
            age = timedelta(minutes=rng.randrange(60)) if rng.random() < 0.4 else None
            plan.append((n, rng.randrange(6), age))

    def messages(offset: int) -> list[InboundFields]:
        return [
            numbered_text(
                offset + sid,
                sender=f"+1555{offset + sender:07d}",
                received_at=None if age is None else now - age,
            )
            for sid, sender, age in plan
        ]

    for offset in (0, 1000):  # one opted-out and one paused conversation in each set
        store(
            db,
            settings,
            [numbered_text(offset + 999, sender=f"+1555{offset + 1:07d}", body="stop")],
        )
        store(db, settings, [numbered_text(offset + 998, sender=f"+1555{offset + 2:07d}")])
        with db.session() as session:
            session.execute(
                update(Contact)
                .where(Contact.number == f"+1555{offset + 2:07d}")
                .values(replies_paused_until=utcnow() + timedelta(minutes=30))
            )
    together = store(db, settings, messages(0))
    with db.session() as session:
        in_turn = messaging.inbound._store_in_turn(
            session, settings, messages(1000), [None] * len(plan), True
        )

    def outcome(results: list[Any]) -> list[tuple[Any, ...]]:
        order = sorted({r.message_id for r in results})
        return [(order.index(r.message_id), r.created, r.reply_enqueued) for r in results]

    assert outcome(together) == outcome(in_turn)
    assert sum(r.created for r in together) == len({sid for sid, _, _ in plan})
    for sender in range(6):
        a, b = contact(db, f"+1555{sender:07d}"), contact(db, f"+1555{1000 + sender:07d}")
        assert a.unread_count == b.unread_count
        ids_a = sorted({r.message_id for r in together})
        ids_b = sorted({r.message_id for r in in_turn})
        if sender in (1, 2):  # their earlier message came before the batch
            assert (a.last_message_id in ids_a) == (b.last_message_id in ids_b)
        if a.last_message_id in ids_a:
            assert ids_a.index(a.last_message_id) == ids_b.index(b.last_message_id)
    keys = reply_keys(db)
    assert len([k for k in keys if int(k[-5:], 16) < 998]) == len(
        [k for k in keys if 1000 <= int(k[-5:], 16) < 1998]
    )


def test_stop_in_a_batch_silences_what_follows_it_and_start_answers_again(
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


def test_a_number_opted_out_before_the_batch_gets_no_reply_job(
    db: Database, settings: Settings
) -> None:
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


def test_the_writer_stores_what_many_threads_hand_it_each_answered_with_its_own_result(
    db: Database, settings: Settings
) -> None:
    writer = ingest.InboundWriter(db, settings)
    results: dict[int, Any] = {}

    def post(n: int) -> None:
        results[n] = writer.store(numbered_text(n % 30, sender=f"+1555000{n % 7:04d}"))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 60
    assert sum(r.created for r in results.values()) == 30  # each of the 30 sids once
    with db.read() as session:
        stored = {sid: id_ for sid, id_ in session.execute(select(Message.sid, Message.id))}
    assert len(stored) == 30
    for n, result in results.items():
        assert result.message_id == stored[numbered_text(n % 30).sid]
    assert len(reply_keys(db)) == 30


def test_a_message_that_fails_fails_alone(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = messaging.store_inbound_batch

    def picky(session: Any, settings: Settings, batch: Any, answer: bool = True) -> Any:
        if any(f.body == "poison" for f in batch):
            raise ValueError("this message cannot be stored")
        return real(session, settings, batch, answer)

    monkeypatch.setattr(ingest, "store_inbound_batch", picky)
    monkeypatch.setattr(messaging.inbound, "store_inbound_batch", picky)
    writer = ingest.InboundWriter(db, settings)
    batch = [
        ingest._Pending(numbered_text(1)),
        ingest._Pending(numbered_text(2, body="poison")),
        ingest._Pending(numbered_text(3)),
    ]
    writer._write(batch)
    assert [item.done.is_set() for item in batch] == [True, True, True]
    assert isinstance(batch[1].error, ValueError)
    assert batch[0].result is not None and batch[0].result.created
    assert batch[2].result is not None and batch[2].result.created
    with db.read() as session:
        assert set(session.scalars(select(Message.sid))) == {
            numbered_text(1).sid,
            numbered_text(3).sid,
        }


def test_inbound_commits_are_fsynced_after_the_write_lock_and_other_writes_are_not(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.is_sqlite:
        pytest.skip("the WAL is SQLite's; PostgreSQL commits are always durable")
    import fcntl
    import os

    from sqlalchemy import text as sql

    from twilio_chat.db import engine as db_module

    lock_path = f"{db.url.database}-writers.lock"
    synced: list[tuple[str, bool, int]] = []  # (file, write lock free, messages committed)
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        probe = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free, or raises
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        with db.read() as session:
            committed = session.scalar(select(func.count(Message.id))) or 0
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), free, committed))
        real(fd)

    monkeypatch.setattr(db_module.os, "fdatasync", fdatasync)
    with db.session() as session:
        assert session.scalar(sql("PRAGMA synchronous")) == 1  # NORMAL: no fsync in the commit
    assert synced == []  # an ordinary write is not fsynced

    writer = ingest.InboundWriter(db, settings)
    result = writer.store(numbered_text(1))  # answered only once the fsync is done
    assert result.created
    assert synced == [(f"{db.url.database}-wal", True, 1)]  # after the commit, lock released


def test_a_batch_writes_no_temporary_file(db: Database, settings: Settings) -> None:
    """A batch's statement journal stays in memory (PRAGMA temp_store=MEMORY).

    SQLite journals the pages a many-row statement changes inside a transaction, and past 64 KiB
    it spills that journal to a file it creates, unlinks and writes in /var/tmp. In a database
    of some size, where a batch's rows land on many index pages, that was a file for almost
    every batch under load (bench/README.md, ingest).
    """
    if not db.is_sqlite:
        pytest.skip("SQLite's statement journal; PostgreSQL has none")
    import os

    def temporary_files() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed meanwhile (the listing's own descriptor)
                continue
            if "etilqs_" in target:  # the name SQLite gives its temporary files
                found.append(target)
        return found

    def sender(n: int) -> str:
        return f"+1555{n * 7919 % 9_000_000:07d}"  # spread over the indexes' pages

    for start in range(0, 4000, 50):  # pages enough for a batch's rows to land apart
        store(db, settings, [numbered_text(n, sender=sender(n)) for n in range(start, start + 50)])
    with db.session() as session:
        batch = [numbered_text(n, sender=sender(n)) for n in range(10_000, 10_033)]
        results = store_inbound_batch(session, settings, batch)
        assert temporary_files() == []  # still in the transaction: a spilled journal is open
    assert all(r.created for r in results)


def test_a_batch_on_a_kept_connection_ends_as_the_same_batch_through_a_session(
    db: Database, settings: Settings
) -> None:
    # The writer process stores a batch without ledger keywords on a Core connection it keeps
    # (no ORM session): the same traffic, written both ways in two sets of numbers, must leave
    # the same messages, conversations, reply jobs and results.
    def traffic(offset: int) -> list[list[InboundFields]]:
        number = lambda n: f"+1555{offset + n:07d}"  # noqa: E731
        return [
            [
                numbered_text(offset + 1, sender=number(1), body="stop")
            ],  # the ledger: a session's work
            [numbered_text(offset + 2, sender=number(2))],
            [
                numbered_text(offset + 3, sender=number(1)),  # opted out: stored, not answered
                numbered_text(offset + 4, sender=number(3)),
                numbered_text(offset + 2, sender=number(2)),  # stored before: a duplicate
                numbered_text(offset + 4, sender=number(3)),  # earlier in the batch: a duplicate
                numbered_text(
                    offset + 5, sender=number(2), received_at=utcnow() - timedelta(hours=1)
                ),
                numbered_text(offset + 6, sender="CarrierInfo"),  # not a phone: not answered
            ],
        ]

    outcomes = []
    with db.engine.connect() as kept:
        for offset, conn in ((0, None), (1000, kept)):
            results = []
            for texts in traffic(offset):
                batch = [ingest._Pending(f) for f in texts]
                ingest.write_batch(db, settings, batch, conn=conn)
                results += [item.result for item in batch]
            ids = sorted({r.message_id for r in results})
            outcomes.append(
                [(ids.index(r.message_id), r.created, r.keyword, r.reply_enqueued) for r in results]
            )
    assert outcomes[0] == outcomes[1]
    assert [created for _, created, _, _ in outcomes[1]] == [1, 1, 1, 1, 0, 0, 1, 1]
    with db.read() as session:
        order = session.scalars(select(Message.id).order_by(Message.id)).all()
    for n in (1, 2, 3):
        a, b = contact(db, f"+1555{n:07d}"), contact(db, f"+1555{1000 + n:07d}")
        assert a.unread_count == b.unread_count
        assert order.index(b.last_message_id) - order.index(a.last_message_id) == 6
    keys = reply_keys(db)
    assert [k for k in keys if int(k[-4:], 16) < 1000] == [
        f"reply:{numbered_text(n).sid}" for n in (2, 4, 5)
    ]
    assert [k for k in keys if int(k[-4:], 16) >= 1000] == [
        f"reply:{numbered_text(1000 + n).sid}" for n in (2, 4, 5)
    ]


def test_a_keyword_batch_on_a_kept_connection_goes_through_a_session_in_order(
    db: Database, settings: Settings
) -> None:
    batch = [
        ingest._Pending(numbered_text(n, body=b)) for n, b in ((1, "hi"), (2, "STOP"), (3, "hello"))
    ]
    with db.engine.connect() as kept:
        ingest.write_batch(db, settings, batch, conn=kept)
    assert [item.result and item.result.reply_enqueued for item in batch] == [True, False, False]
    assert reply_keys(db) == [f"reply:{numbered_text(1).sid}"]
    with db.read() as session:
        assert session.scalars(select(OptOut.opted_out)).all() == [True]


def test_the_plain_batch_store_refuses_a_keyword_and_writes_nothing(
    db: Database, settings: Settings
) -> None:
    assert not messaging.changes_opt_outs([numbered_text(1), numbered_text(2, body="help")])
    assert messaging.changes_opt_outs([numbered_text(1), numbered_text(2, body=" Start ")])
    keyword = [numbered_text(1), numbered_text(2, body="unsubscribe")]
    with db.engine.connect() as conn, conn.begin(), pytest.raises(ValueError, match="opt-"):
        messaging.store_plain_batch(conn, settings, keyword)
    with db.read() as session:
        assert session.scalar(select(func.count(Message.id))) == 0


def test_a_batch_that_fails_on_a_kept_connection_leaves_it_to_a_fresh_driver_connection(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest.store_plain_batch
    failed: list[int] = []

    def fails_once(conn: Any, settings: Settings, batch: Any, answer: bool = True) -> Any:
        if not failed:
            failed.append(len(batch))
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real(conn, settings, batch, answer)

    monkeypatch.setattr(ingest, "store_plain_batch", fails_once)
    with db.engine.connect() as kept:
        before = kept.connection.dbapi_connection
        batch = [ingest._Pending(numbered_text(1)), ingest._Pending(numbered_text(2))]
        ingest.write_batch(db, settings, batch, conn=kept)  # fails, then each on its own
        assert failed == [2]
        assert [item.result and item.result.created for item in batch] == [True, True]
        after = [ingest._Pending(numbered_text(3)), ingest._Pending(numbered_text(4))]
        ingest.write_batch(db, settings, after, conn=kept)
        assert kept.connection.dbapi_connection is not before
    assert [item.result and item.result.created for item in after] == [True, True]
    assert reply_keys(db) == [f"reply:{numbered_text(n).sid}" for n in (1, 2, 3, 4)]
