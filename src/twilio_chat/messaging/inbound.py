"""Inbound texts: read a webhook's form and store it, once per MessageSid, with its reply job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from twilio_chat.db.engine import (
    CountedStatement,
    Database,
    DriverStatement,
    per_driver,
    row_binds,
    upsert_into,
)
from twilio_chat.db.models import as_utc, utcnow
from twilio_chat.jobs import queue as jobs
from twilio_chat.messaging.shared import (
    CONTACT_KEYS,
    CONTACTS,
    MAX_MEDIA,
    MESSAGES,
    OPT_OUTS,
    contact_upsert,
    keyword_of,
    set_opt_out,
    summary_statement,
    to_int,
)
from twilio_chat.replies import policy as replies
from twilio_chat.settings import Settings, is_e164


@dataclass(frozen=True)
class InboundResult:
    """What recording an inbound message did."""

    message_id: int
    created: bool
    keyword: str | None
    reply_enqueued: bool


def parse_media(form: Mapping[str, str]) -> list[dict[str, str]]:
    """Collect MediaUrlN / MediaContentTypeN pairs from a Twilio webhook form."""
    try:
        count = int(form.get("NumMedia") or 0)
    except ValueError:
        count = 0
    media = []
    for i in range(min(count, MAX_MEDIA)):
        url = form.get(f"MediaUrl{i}")
        if url:
            media.append({"url": url, "content_type": form.get(f"MediaContentType{i}") or ""})
    return media


def record_inbound(
    db: Database,
    settings: Settings,
    form: Mapping[str, str],
    received_at: datetime | None = None,
) -> InboundResult:
    """Store an inbound webhook's message once per sid, update the ledger, enqueue its reply.

    The message, the contact summary, the ledger and the job are written in one transaction.
    `received_at` is when the webhook arrived, if that was earlier (a spooled webhook).
    """
    with db.session(durable=True) as session:
        return store_inbound(session, settings, inbound_fields(form, received_at))


def inbound_fields(form: Mapping[str, str], received_at: datetime | None = None) -> InboundFields:
    """Read an inbound webhook's form (MessageSid and From present) into InboundFields."""
    return InboundFields(
        sid=form["MessageSid"],
        sender=form["From"],
        our_number=form.get("To") or "",
        service_sid=form.get("MessagingServiceSid") or None,
        body=form.get("Body") or "",
        media=parse_media(form),
        num_segments=to_int(form.get("NumSegments"), 1),
        account_sid=form.get("AccountSid"),
        opt_out_type=form.get("OptOutType") or None,
        received_at=received_at,
        # Asked here, in the web process: the answer travels with the text, so the writer
        # process (ingest_process.py), which every text passes through, need not parse it again.
        sender_is_phone=is_e164(form["From"]),
    )


@dataclass(frozen=True)
class InboundFields:
    """An inbound message as Twilio describes it (webhook or message list)."""

    sid: str
    sender: str
    our_number: str
    service_sid: str | None
    body: str
    media: list[dict[str, str]]
    num_segments: int
    account_sid: str | None
    received_at: datetime | None = None
    opt_out_type: str | None = None
    sender_is_phone: bool | None = None  # is_e164(sender), when already known

    @property
    def contact_number(self) -> str:
        """Return the sender's number (the conversation it belongs to)."""
        return self.sender

    @property
    def messaging_service_sid(self) -> str | None:
        """Return the Messaging Service it came through, if any."""
        return self.service_sid


def store_inbound(
    session: Session, settings: Settings, fields: InboundFields, answer: bool = True
) -> InboundResult:
    """Store an inbound message in the caller's transaction (once per sid) and its reply job.

    `answer=False` stores it without a reply job (sync of a message older than the reply mode).
    """
    return store_inbound_batch(session, settings, [fields], answer)[0]


def store_inbound_batch(
    session: Session, settings: Settings, batch: Sequence[InboundFields], answer: bool = True
) -> list[InboundResult]:
    """Store inbound messages in the caller's transaction, exactly as one after another.

    Each message is stored once per sid (a sid already stored, or earlier in the batch, is a
    duplicate), counted on its conversation, recorded in the opt-out ledger when it is a
    keyword, and given a reply job when someone must answer it. This is the path every webhook
    takes (see ingest.py). A batch without an opt-out or opt-in keyword is stored with one
    statement per table for all its messages (`store_plain_batch`); a keyword changes the ledger
    that the messages after it are checked against, so such a batch goes one message at a time
    (`_store_in_turn`). Both run their statements on the driver's cursor (`DriverStatement`).
    """
    keywords = _keywords(batch)
    if _changes_opt_outs(keywords):
        return _store_in_turn(session, settings, batch, keywords, answer)
    results = _store_plain(session.connection(), settings, batch, keywords, answer)
    if any(r.reply_enqueued for r in results):
        jobs.wake_after_commit(session)
    return results


def changes_opt_outs(batch: Sequence[InboundFields]) -> bool:
    """Tell whether a batch holds an opt-out or opt-in keyword (it then needs a session)."""
    return _changes_opt_outs(_keywords(batch))


def store_plain_batch(
    conn: Connection, settings: Settings, batch: Sequence[InboundFields], answer: bool = True
) -> list[InboundResult]:
    """Store a batch with no opt-out or opt-in keyword in the transaction of a Core connection.

    The same rows and results as `store_inbound_batch`, without an ORM session: the inbound
    writer process stores its batches on a connection it keeps (ingest_process.py), and a
    session's own work cost it more than the batch's statements. Nobody is woken: the caller
    tells the reply workers after its commit (`jobs.notify_enqueued`). A batch that changes the
    opt-out ledger raises ValueError: it goes through `store_inbound_batch`.
    """
    keywords = _keywords(batch)
    if _changes_opt_outs(keywords):
        raise ValueError("a batch with an opt-out or opt-in keyword needs store_inbound_batch")
    return _store_plain(conn, settings, batch, keywords, answer)


def _keywords(batch: Sequence[InboundFields]) -> list[str | None]:
    return [keyword_of(f.body, f.opt_out_type) for f in batch]


def _changes_opt_outs(keywords: Sequence[str | None]) -> bool:
    return any(k in ("opt_out", "opt_in") for k in keywords)


def _store_plain(
    conn: Connection,
    settings: Settings,
    batch: Sequence[InboundFields],
    keywords: Sequence[str | None],
    answer: bool,
) -> list[InboundResult]:
    """Store a batch without ledger keywords, in parts of BATCH_ROWS messages."""
    out: list[InboundResult] = []
    for start in range(0, len(batch), BATCH_ROWS):
        chunk = slice(start, start + BATCH_ROWS)
        out += _store_together(conn, settings, batch[chunk], keywords[chunk], answer)
    return out


def _store_together(
    conn: Connection,
    settings: Settings,
    batch: Sequence[InboundFields],
    keywords: Sequence[str | None],
    answer: bool,
) -> list[InboundResult]:
    """Store messages (no opt-out or opt-in among them) with one statement per table."""
    st = _batch_statements(conn.dialect)
    now = utcnow()
    new_ids = {
        sid: message_id
        for message_id, sid in st.messages.run(conn, [_message_row(f, now) for f in batch])
    }
    ids: dict[str, int] = {}  # each sid's message, for a repeat later in the batch
    created: list[tuple[int, InboundFields, str | None]] = []  # (position, message, keyword)
    results: list[InboundResult | None] = []
    summaries: dict[str, dict[str, Any]] = {}  # each conversation's change, as upserted
    for f, keyword in zip(batch, keywords, strict=True):
        message_id = new_ids.pop(f.sid, None)
        if message_id is None:  # stored earlier: a webhook Twilio retried, a spool replay, a sync
            known = ids.get(f.sid)
            if known is None:
                ((known,),) = _inbound_statements(conn.dialect).id_by_sid.run(conn, {"sid": f.sid})
                ids[f.sid] = known
            results.append(InboundResult(known, False, keyword, False))
            continue
        ids[f.sid] = message_id
        created.append((len(results), f, keyword))
        results.append(None)
        # As the conversation's upsert would leave it after each message in turn: one more
        # unread, and the last message the newest so far (the later one of equal times).
        at = now if f.received_at is None else as_utc(f.received_at)
        summary = summaries.get(f.sender)
        if summary is None:
            summaries[f.sender] = {
                "number": f.sender,
                "unread_count": 1,
                "last_message_id": message_id,
                "last_message_at": at,
                "created_at": now,
            }
        else:
            summary["unread_count"] += 1
            if at >= summary["last_message_at"]:
                summary["last_message_id"], summary["last_message_at"] = message_id, at
    if created:
        paused = dict(st.contacts.run(conn, list(summaries.values())))
        ledger: dict[str, set[str]] = {}
        for number, sender in st.opted_out.run(conn, [{"number": n} for n in summaries]):
            ledger.setdefault(number, set()).add(sender)
        reply_jobs: list[tuple[dict[str, Any], str]] = []
        for position, f, keyword in created:
            message_id = ids[f.sid]
            opted = any(s in ledger.get(f.sender, ()) for s in replies.opt_out_senders(f))
            reason = replies.reason_not_to_answer(
                settings, f, keyword, opted, paused[f.sender], f.sender_is_phone
            )
            enqueue = answer and reason is None
            if enqueue:
                reply_jobs.append(({"message_id": message_id}, f"reply:{f.sid}"))
            results[position] = InboundResult(message_id, True, keyword, enqueue)
        if reply_jobs:
            jobs.insert_jobs(conn, "reply", reply_jobs, max_attempts=settings.job_max_attempts)
    return [r for r in results if r is not None]


def _store_in_turn(
    session: Session,
    settings: Settings,
    batch: Sequence[InboundFields],
    keywords: Sequence[str | None],
    answer: bool,
) -> list[InboundResult]:
    """Store messages one after another: per message, its statements, then the next's."""
    conn = session.connection()
    st = _inbound_statements(conn.dialect)
    summary = summary_statement(conn.dialect)
    now = utcnow()
    out: list[InboundResult] = []
    reply_jobs: list[tuple[dict[str, Any], str]] = []
    for f, keyword in zip(batch, keywords, strict=True):
        inserted = st.message.run(conn, _message_row(f, now))
        if not inserted:  # stored earlier: a webhook Twilio retried, a spool replay, a sync
            (stored,) = st.id_by_sid.run(conn, {"sid": f.sid})
            out.append(InboundResult(stored[0], False, keyword, False))
            continue
        message_id = inserted[0][0]
        ((paused,),) = summary.run(
            conn,
            {
                "number": f.sender,
                "unread_count": 1,
                "last_message_id": message_id,
                "last_message_at": f.received_at or now,
                "created_at": now,
            },
        )
        senders = replies.opt_out_senders(f)
        if keyword in ("opt_out", "opt_in"):
            for ledger_sender in set(senders):
                set_opt_out(
                    session,
                    ledger_sender,
                    f.sender,
                    keyword == "opt_out",
                    f"keyword {f.body.strip()}",
                )
            session.flush()  # the ledger as it now stands, for the next statements
        ledger = {sender for (sender,) in st.opted_out.run(conn, {"number": f.sender})}
        opted = any(s in ledger for s in senders)
        reason = replies.reason_not_to_answer(
            settings, f, keyword, opted, paused, f.sender_is_phone
        )
        enqueue = answer and reason is None
        if enqueue:
            reply_jobs.append(({"message_id": message_id}, f"reply:{f.sid}"))
        out.append(InboundResult(message_id, True, keyword, enqueue))
    if reply_jobs:
        jobs.enqueue_many(session, "reply", reply_jobs, max_attempts=settings.job_max_attempts)
    return out


def _message_row_keys() -> tuple[str, ...]:
    """Return the columns an inbound message's row sets (the keys of `_message_row`)."""
    return tuple(_message_row(InboundFields("", "", "", None, "", [], 1, None), utcnow()))


def _message_row(fields: InboundFields, now: datetime) -> dict[str, Any]:
    """Return the messages row of an inbound message."""
    at = fields.received_at or now
    return {
        "sid": fields.sid,
        "account_sid": fields.account_sid,
        "direction": "inbound",
        "our_number": fields.our_number,
        "messaging_service_sid": fields.service_sid,
        "contact_number": fields.sender,
        "body": fields.body,
        "media": fields.media,
        "status": "received",
        "num_segments": fields.num_segments,
        "redacted": False,
        "created_at": at,
        "updated_at": at,
    }


@dataclass(frozen=True)
class _InboundStatements:
    message: DriverStatement
    id_by_sid: DriverStatement
    opted_out: DriverStatement


@per_driver
def _inbound_statements(dialect: Dialect) -> _InboundStatements:
    """Build and compile the inbound path's statements (once per database driver)."""
    m, o = MESSAGES, OPT_OUTS.c
    message = (
        upsert_into(dialect.name, m)
        .on_conflict_do_nothing(index_elements=[m.c.sid])
        .returning(m.c.id)
    )
    return _InboundStatements(
        message=DriverStatement(message, dialect, list(_message_row_keys())),
        id_by_sid=DriverStatement(select(m.c.id).where(m.c.sid == bindparam("sid")), dialect, []),
        opted_out=DriverStatement(
            select(o.sender).where(o.number == bindparam("number"), o.opted_out.is_(True)),
            dialect,
            [],
        ),
    )


@dataclass(frozen=True)
class _BatchStatements:
    messages: CountedStatement
    contacts: CountedStatement
    opted_out: CountedStatement


BATCH_ROWS = 64  # the most messages one statement stores (a larger batch goes in parts)


@per_driver
def _batch_statements(dialect: Dialect) -> _BatchStatements:
    """Build the statements that store a batch's messages together (compiled per row count)."""
    m, c, o = MESSAGES, CONTACTS, OPT_OUTS.c
    keys = _message_row_keys()

    def messages(n: int) -> ClauseElement:
        rows = [row_binds(m, keys, i) for i in range(n)]
        insert = upsert_into(dialect.name, m).values(rows)
        return insert.on_conflict_do_nothing(index_elements=[m.c.sid]).returning(m.c.id, m.c.sid)

    def contacts(n: int) -> ClauseElement:
        rows = [row_binds(c, CONTACT_KEYS, i) for i in range(n)]
        upsert = cast(Any, contact_upsert(dialect, rows))
        return cast(ClauseElement, upsert.returning(c.c.number, c.c.replies_paused_until))

    def opted_out(n: int) -> ClauseElement:
        numbers = [bindparam(f"number_{i}", type_=o.number.type) for i in range(n)]
        return select(o.number, o.sender).where(o.number.in_(numbers), o.opted_out.is_(True))

    return _BatchStatements(
        messages=CountedStatement(dialect, messages),
        contacts=CountedStatement(dialect, contacts),
        opted_out=CountedStatement(dialect, opted_out),
    )
