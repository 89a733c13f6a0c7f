"""Record inbound and outbound messages, status transitions, the opt-out ledger, and send()."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, or_, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from . import jobs, replies
from .db import CountedStatement, Database, DriverStatement, per_driver, row_binds, upsert_into
from .errors import N_, InvalidInput, OptedOut, Upstream
from .metrics import SENDS
from .models import Contact, Message, OptOut, StatusEvent, as_utc, utcnow
from .segments import count_segments
from .settings import Settings, is_e164
from .twilio_errors import describe_error
from .twilio_gateway import RemoteMessage, TwilioError, TwilioGateway

# The tables, for the hot path's Core statements (no ORM unit of work per webhook).
MESSAGES = cast(Table, Message.__table__)
CONTACTS = cast(Table, Contact.__table__)
OPT_OUTS = cast(Table, OptOut.__table__)
STATUS_EVENTS = cast(Table, StatusEvent.__table__)
MAX_BODY = 1600
MAX_MEDIA = 10
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")

# Status order; a message's status never moves to a lower rank (callbacks arrive out of order).
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "receiving": 4,
    "received": 5,
    "delivered": 6,
    "undelivered": 6,
    "failed": 6,
    "canceled": 6,
    "partially_delivered": 6,
    "read": 7,
}


OPT_OUT_TYPES = {"STOP": "opt_out", "START": "opt_in", "HELP": "help"}


def keyword_of(body: str, opt_out_type: str | None = None) -> str | None:
    """Return 'opt_out', 'opt_in' or 'help' for a keyword text.

    Twilio's Advanced Opt-Out names the kind in `OptOutType` (custom keywords too); otherwise
    the body must be exactly one of the standard keywords.
    """
    if opt_out_type and opt_out_type.upper() in OPT_OUT_TYPES:
        return OPT_OUT_TYPES[opt_out_type.upper()]
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "opt_out"
    if word in OPT_IN_KEYWORDS:
        return "opt_in"
    if word in HELP_KEYWORDS:
        return "help"
    return None


def moves_forward(current: str | None, status: str) -> bool:
    """Tell whether going from `current` to `status` moves a message forward (STATUS_RANK)."""
    return STATUS_RANK.get(status, 0) > STATUS_RANK.get(current or "", 0)


def advance_status(message: Message, status: str, error_code: int | None = None) -> bool:
    """Move a message to `status` unless that would move it backwards; tell if it moved."""
    if not moves_forward(message.status, status):
        return False
    message.status = status
    if error_code is not None:
        message.error_code = error_code
        message.error_message = describe_error(error_code)
    return True


# Contacts ------------------------------------------------------------------------------


def get_or_create_contact(session: Session, number: str) -> Contact:
    """Return the contact for a number, creating it (safely under concurrency) if needed."""
    contact = session.scalar(select(Contact).where(Contact.number == number))
    if contact is not None:
        return contact
    try:
        with session.begin_nested():
            contact = Contact(number=number, unread_count=0)
            session.add(contact)
    except IntegrityError:
        contact = session.scalars(select(Contact).where(Contact.number == number)).one()
    return contact


def touch_contact(session: Session, message: Message, unread: bool) -> None:
    """Update the conversation summary for a newly stored message."""
    contact = get_or_create_contact(session, message.contact_number)
    if contact.last_message_at is None or message.created_at >= contact.last_message_at:
        contact.last_message_id = message.id
        contact.last_message_at = message.created_at
    if unread:
        contact.unread_count = (contact.unread_count or 0) + 1


# Opt-out ledger ------------------------------------------------------------------------


def set_opt_out(session: Session, sender: str, number: str, opted_out: bool, reason: str) -> None:
    """Record that `number` opted out of (or back in to) messages from `sender`."""
    row = session.scalar(select(OptOut).where(OptOut.sender == sender, OptOut.number == number))
    if row is None:
        try:
            with session.begin_nested():
                session.add(
                    OptOut(sender=sender, number=number, opted_out=opted_out, reason=reason)
                )
            return
        except IntegrityError:
            row = session.scalars(
                select(OptOut).where(OptOut.sender == sender, OptOut.number == number)
            ).one()
    row.opted_out = opted_out
    row.reason = reason
    row.changed_at = utcnow()


def is_opted_out(session: Session, senders: list[str], number: str) -> bool:
    """Tell whether `number` opted out of any of these senders."""
    if not senders:
        return False
    conn = session.connection()
    rows = _send_statements(conn.dialect).opted_out.run(
        conn, [{"number": number, "sender": s} for s in senders]
    )
    return any(opted for (opted,) in rows)


# Inbound --------------------------------------------------------------------------------


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
        num_segments=_int(form.get("NumSegments"), 1),
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
    statement per table for all its messages (`_store_together`); a keyword changes the ledger
    that the messages after it are checked against, so such a batch goes one message at a time
    (`_store_in_turn`). Both run their statements on the driver's cursor (`DriverStatement`).
    """
    keywords = [keyword_of(f.body, f.opt_out_type) for f in batch]
    if any(k in ("opt_out", "opt_in") for k in keywords):
        return _store_in_turn(session, settings, batch, keywords, answer)
    out: list[InboundResult] = []
    for start in range(0, len(batch), BATCH_ROWS):
        chunk = slice(start, start + BATCH_ROWS)
        out += _store_together(session, settings, batch[chunk], keywords[chunk], answer)
    return out


def _store_together(
    session: Session,
    settings: Settings,
    batch: Sequence[InboundFields],
    keywords: Sequence[str | None],
    answer: bool,
) -> list[InboundResult]:
    """Store messages (no opt-out or opt-in among them) with one statement per table."""
    conn = session.connection()
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
            jobs.enqueue_many(session, "reply", reply_jobs, max_attempts=settings.job_max_attempts)
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
        ((paused,),) = st.contact.run(
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
    contact: DriverStatement
    opted_out: DriverStatement


CONTACT_KEYS = ["number", "unread_count", "last_message_id", "last_message_at", "created_at"]


def _contact_upsert(dialect: Dialect, rows: list[dict[str, Any]] | None = None) -> ClauseElement:
    """The upsert of conversations, each row counting new messages as unread and, unless they
    are older than its last one (a spooled webhook stored late), setting its last message."""
    c = CONTACTS
    contact = upsert_into(dialect.name, c)
    if rows is not None:
        contact = contact.values(rows)
    newer = or_(
        c.c.last_message_at.is_(None), contact.excluded.last_message_at >= c.c.last_message_at
    )
    return contact.on_conflict_do_update(
        index_elements=[c.c.number],
        set_={
            "unread_count": c.c.unread_count + contact.excluded.unread_count,
            "last_message_id": case(
                (newer, contact.excluded.last_message_id), else_=c.c.last_message_id
            ),
            "last_message_at": case(
                (newer, contact.excluded.last_message_at), else_=c.c.last_message_at
            ),
        },
    )


@per_driver
def _inbound_statements(dialect: Dialect) -> _InboundStatements:
    """Build and compile the inbound path's statements (once per database driver)."""
    m, c, o = MESSAGES, CONTACTS, OPT_OUTS.c
    message = (
        upsert_into(dialect.name, m)
        .on_conflict_do_nothing(index_elements=[m.c.sid])
        .returning(m.c.id)
    )
    contact = cast(Any, _contact_upsert(dialect)).returning(c.c.replies_paused_until)
    return _InboundStatements(
        message=DriverStatement(message, dialect, list(_message_row_keys())),
        id_by_sid=DriverStatement(select(m.c.id).where(m.c.sid == bindparam("sid")), dialect, []),
        contact=DriverStatement(contact, dialect, CONTACT_KEYS),
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
        upsert = cast(Any, _contact_upsert(dialect, rows))
        return cast(ClauseElement, upsert.returning(c.c.number, c.c.replies_paused_until))

    def opted_out(n: int) -> ClauseElement:
        numbers = [bindparam(f"number_{i}", type_=o.number.type) for i in range(n)]
        return select(o.number, o.sender).where(o.number.in_(numbers), o.opted_out.is_(True))

    return _BatchStatements(
        messages=CountedStatement(dialect, messages),
        contacts=CountedStatement(dialect, contacts),
        opted_out=CountedStatement(dialect, opted_out),
    )


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# Status callbacks ----------------------------------------------------------------------


@dataclass(frozen=True)
class _StatusStatements:
    by_sid: DriverStatement
    by_id: DriverStatement
    set_sid: DriverStatement
    advance: DriverStatement
    advance_with_error: DriverStatement
    event: DriverStatement


@per_driver
def _status_statements(dialect: Dialect) -> _StatusStatements:
    """Build and compile the status callback's statements (once per database driver)."""
    m, e = MESSAGES.c, STATUS_EVENTS
    found = select(m.id, m.sid, m.status)
    # Compare and set: a status moves on only from the one this callback read, so two
    # callbacks racing on another database never move a message backwards.
    moved = m.id == bindparam("id")
    advance = (
        update(MESSAGES)
        .where(moved, m.status == bindparam("current"))
        .values(status=bindparam("status"), updated_at=bindparam("now"))
        .returning(m.id)
    )
    advance_with_error = advance.values(
        error_code=bindparam("error_code"), error_message=bindparam("error_message")
    )
    set_sid = (
        update(MESSAGES)
        .where(moved, m.sid.is_(None))
        .values(sid=bindparam("sid"), updated_at=bindparam("now"))
    )
    event_keys = ["message_id", "message_sid", "status", "error_code", "payload", "received_at"]
    return _StatusStatements(
        by_sid=DriverStatement(found.where(m.sid == bindparam("sid")), dialect, []),
        by_id=DriverStatement(found.where(moved), dialect, []),
        set_sid=DriverStatement(set_sid, dialect, []),
        advance=DriverStatement(advance, dialect, []),
        advance_with_error=DriverStatement(advance_with_error, dialect, []),
        event=DriverStatement(e.insert().returning(e.c.id), dialect, event_keys),
    )


def record_status(
    db: Database, form: Mapping[str, str], message_id_hint: int | None = None
) -> bool:
    """Keep a status callback as an event and advance its message; tell if the message is known.

    Two callbacks per text, each a write transaction: Core statements on the driver's cursor
    (`DriverStatement`) instead of the ORM's unit of work.
    """
    sid = form["MessageSid"]
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    error_code = _int(form.get("ErrorCode"), 0) or None
    now = utcnow()
    with db.session() as session:
        conn = session.connection()
        st = _status_statements(conn.dialect)
        found = st.by_sid.run(conn, {"sid": sid})
        if not found and message_id_hint is not None:
            found = st.by_id.run(conn, {"id": message_id_hint})
            if found and found[0][1] not in (None, sid):
                found = []  # the hint names another message
            elif found and found[0][1] is None:
                st.set_sid.run(conn, {"sid": sid, "id": message_id_hint, "now": now})
        message_id = found[0][0] if found else None
        st.event.run(
            conn,
            {
                "message_id": message_id,
                "message_sid": sid,
                "status": status,
                "error_code": error_code,
                "payload": dict(form),
                "received_at": now,
            },
        )
        if found:
            _advance_row(conn, st, found[0][0], found[0][2], status, error_code, now)
        return message_id is not None


def _advance_row(
    conn: Connection,
    st: _StatusStatements,
    message_id: int,
    current: str | None,
    status: str,
    error_code: int | None,
    now: datetime,
) -> None:
    """Move a stored message to `status` unless that would move it backwards (advance_status)."""
    values: dict[str, Any] = {"id": message_id, "status": status, "now": now}
    statement = st.advance
    if error_code is not None:
        statement = st.advance_with_error
        values.update(error_code=error_code, error_message=describe_error(error_code))
    while current is not None and moves_forward(current, status):
        if statement.run(conn, {**values, "current": current}):
            return
        # Another transaction moved it meanwhile (not on SQLite, whose writers take turns).
        found = st.by_id.run(conn, {"id": message_id})
        current = found[0][2] if found else None


def _attach_pending_events(session: Session, message: Message) -> None:
    """Match status callbacks that arrived before we knew the message's sid."""
    conn = session.connection()
    st = _send_statements(conn.dialect)
    events = st.pending_events.run(conn, {"sid": message.sid})
    if not events:
        return
    st.attach_events.run(conn, {"sid": message.sid, "id": message.id})
    for status, error_code in events:
        advance_status(message, status, error_code)


# Sending -------------------------------------------------------------------------------


@dataclass
class SendRequest:
    """What a caller (API, panel, CLI, a reply job) asks to send."""

    to: str
    body: str = ""
    media_urls: list[str] = field(default_factory=list)
    content_sid: str | None = None
    messaging_service_sid: str | None = None
    use_messaging_service: bool = False
    source: str = "api"
    reply_to_sid: str | None = None
    # A reply job's last try: a retryable failure then fails the message instead of leaving
    # it pending for the next try.
    final_try: bool = True


@dataclass(frozen=True)
class Sender:
    """Who a message goes out from: a number, or a Messaging Service."""

    from_: str | None
    service_sid: str | None

    @property
    def key(self) -> str:
        """Return the opt-out ledger's key for this sender."""
        return self.service_sid or self.from_ or ""


def validate_send(req: SendRequest, settings: Settings) -> Sender:
    """Check a send request before anything is written; raise InvalidInput naming the field."""
    if not req.to:
        raise InvalidInput(N_("Enter the recipient's number."), field="to")
    if not is_e164(req.to):
        raise InvalidInput(
            N_("%(number)s is not a possible phone number in E.164 form like +15551234567."),
            field="to",
            number=repr(req.to),
        )
    if not req.body and not req.media_urls and not req.content_sid:
        raise InvalidInput(N_("Write a message, or add media or a content template."), "body")
    if len(req.body) > MAX_BODY:
        raise InvalidInput(
            N_("The message is %(length)d characters; the limit is %(limit)d."),
            field="body",
            length=len(req.body),
            limit=MAX_BODY,
        )
    if len(req.media_urls) > MAX_MEDIA:
        raise InvalidInput(N_("At most %(limit)d media URLs."), field="media_urls", limit=MAX_MEDIA)
    for url in req.media_urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInput(
                N_("Each media URL must start with http:// or https:// (got %(url)s)."),
                field="media_urls",
                url=repr(url),
            )
    if req.content_sid and not (req.content_sid.startswith("HX") and _SID.match(req.content_sid)):
        raise InvalidInput(
            N_("A content SID looks like HX followed by 32 hex digits."), "content_sid"
        )
    if req.messaging_service_sid or req.use_messaging_service:
        service = req.messaging_service_sid or settings.twilio_messaging_service_sid
        if not service:
            raise InvalidInput(
                N_(
                    "No Messaging Service: pass 'messaging_service_sid' or set "
                    "TWILIO_MESSAGING_SERVICE_SID."
                ),
                field="messaging_service_sid",
            )
        if not (service.startswith("MG") and _SID.match(service)):
            raise InvalidInput(
                N_("A Messaging Service SID looks like MG followed by 32 hex digits."),
                field="messaging_service_sid",
            )
        return Sender(None, service)
    if not settings.default_from:
        raise InvalidInput(
            N_("No sender: set TWILIO_DEFAULT_FROM or use a Messaging Service."),
            field="use_messaging_service",
        )
    return Sender(settings.default_from, None)


HUMAN_SOURCES = frozenset({"api", "panel", "cli"})


def _outbound_row(req: SendRequest, sender: Sender, now: datetime) -> dict[str, Any]:
    """Return the messages row of an outbound message about to be sent."""
    return {
        "direction": "outbound",
        "our_number": sender.from_,
        "messaging_service_sid": sender.service_sid,
        "contact_number": req.to,
        "body": req.body,
        "media": [{"url": u, "content_type": ""} for u in req.media_urls],
        "status": "pending",
        "num_segments": max(count_segments(req.body).segments, 1),
        "source": req.source,
        "reply_to_sid": req.reply_to_sid,
        "redacted": False,
        "created_at": now,
        "updated_at": now,
    }


def _create_outbound(
    session: Session, settings: Settings, req: SendRequest, sender: Sender
) -> tuple[Message, bool]:
    """Write the outbound row; or return the reply row a previous try wrote (created False)."""
    if req.reply_to_sid is not None:
        conn = session.connection()
        found = _send_statements(conn.dialect).reply_to.run(conn, {"sid": req.reply_to_sid})
        if found:
            return session.get_one(Message, found[0][0]), False
    now = utcnow()
    row = _outbound_row(req, sender, now)
    # On the driver's cursor, as an inbound text is stored (a reply job writes one per text):
    # the row, then its conversation's summary (the inbound path's upsert, nothing unread).
    conn = session.connection()
    ((message_id,),) = _send_statements(conn.dialect).outbound.run(conn, row)
    _inbound_statements(conn.dialect).contact.run(
        conn,
        {
            "number": req.to,
            "unread_count": 0,
            "last_message_id": message_id,
            "last_message_at": now,
            "created_at": now,
        },
    )
    # What send() reads of it; the caller gets the stored row back (_record_sent).
    message = Message(id=message_id, **row)  # sid, error_code and the rest: None
    if req.source in HUMAN_SOURCES and settings.ai_human_pause_minutes:
        # A person took over: automatic replies pause in this conversation.
        contact = get_or_create_contact(session, req.to)
        contact.replies_paused_until = utcnow() + timedelta(minutes=settings.ai_human_pause_minutes)
    return message, True


@dataclass(frozen=True)
class _SendStatements:
    opted_out: CountedStatement  # shaped by how many ledger keys the sender has
    reply_to: DriverStatement
    outbound: DriverStatement
    pending_events: DriverStatement
    attach_events: DriverStatement


@per_driver
def _send_statements(dialect: Dialect) -> _SendStatements:
    """Build and compile a send's statements (once per database driver): every reply job
    runs them, and on the driver's cursor they cost a fraction of the ORM's per-statement
    work."""
    m, o, e = MESSAGES.c, OPT_OUTS.c, STATUS_EVENTS.c

    def opted_out(n: int) -> ClauseElement:
        senders = [bindparam(f"sender_{i}", type_=o.sender.type) for i in range(n)]
        number = bindparam("number_0", type_=o.number.type)
        return select(o.opted_out).where(o.sender.in_(senders), o.number == number)

    unattached = (e.message_sid == bindparam("sid"), e.message_id.is_(None))
    return _SendStatements(
        opted_out=CountedStatement(dialect, opted_out),
        reply_to=DriverStatement(
            select(m.id).where(m.reply_to_sid == bindparam("sid")), dialect, []
        ),
        outbound=DriverStatement(
            MESSAGES.insert().returning(m.id),
            dialect,
            list(_outbound_row(SendRequest(to=""), Sender(None, None), utcnow())),
        ),
        pending_events=DriverStatement(
            select(e.status, e.error_code).where(*unattached).order_by(e.id), dialect, []
        ),
        attach_events=DriverStatement(
            update(STATUS_EVENTS).where(*unattached).values(message_id=bindparam("id")),
            dialect,
            [],
        ),
    )


def send(db: Database, gateway: TwilioGateway, settings: Settings, req: SendRequest) -> Message:
    """Send one SMS/MMS: check the ledger, write the row, call Twilio, record the answer.

    Raises InvalidInput (400), OptedOut (409) before anything is written, or Upstream (502)
    when Twilio refuses, after recording the failure on the message. A retryable failure
    (429, 5xx, no connection) leaves a reply's row pending so a retried job resumes it.
    """
    sender = validate_send(req, settings)
    with db.session() as session:
        senders = [s for s in (sender.key, sender.from_) if s]
        if is_opted_out(session, senders, req.to):
            raise OptedOut(
                N_(
                    "%(number)s opted out of messages from %(sender)s (texted STOP); "
                    "they must text START first."
                ),
                field="to",
                number=req.to,
                sender=sender.key,
            )
        message, created = _create_outbound(session, settings, req, sender)
        if message.sid is not None or message.status != "pending":
            return message  # this reply was already sent by an earlier try
        message_id = message.id
        # An earlier try that ended without a known outcome (no sid, no error) may have
        # reached Twilio before its worker died: look before sending again.
        unknown_outcome = not created and message.error_code is None
        created_at = message.created_at
    if unknown_outcome:
        earlier = _find_earlier_send(gateway, req, created_at)
        if earlier is not None:
            return _record_sent(db, message_id, earlier)
    callback = f"{settings.base_url}/twilio/status?mid={message_id}"
    try:
        remote = gateway.send(
            to=req.to,
            status_callback=callback,
            from_=sender.from_,
            messaging_service_sid=sender.service_sid,
            body=req.body or None,
            media_urls=req.media_urls or None,
            content_sid=req.content_sid,
        )
    except TwilioError as exc:
        SENDS.labels("refused", str(exc.code or "")).inc()
        _record_failure(db, message_id, sender, req.to, exc, keep_pending=not req.final_try)
        raise Upstream(
            N_("Twilio refused the message: %(reason)s"), exc.code, exc.status, reason=exc.message
        ) from None
    SENDS.labels(remote.status, "").inc()
    return _record_sent(db, message_id, remote)


def _find_earlier_send(
    gateway: TwilioGateway, req: SendRequest, since: datetime
) -> RemoteMessage | None:
    """Find a message an earlier try created at Twilio: same recipient and body, not older."""
    try:
        for remote in gateway.iter_messages(to=req.to, limit=20, page_size=20):
            created = remote.date_created
            if created is not None and created < since - timedelta(seconds=5):
                break  # newest first: nothing older can be ours
            if remote.direction.startswith("outbound") and remote.body == req.body:
                return remote
    except TwilioError:
        return None  # cannot tell: sending again is the lesser harm than never answering
    return None


def _record_sent(db: Database, message_id: int, remote: RemoteMessage) -> Message:
    """Record what Twilio answered to a create call."""
    with db.session() as session:
        message = session.get_one(Message, message_id)
        if message.sid is None:
            message.sid = remote.sid
        message.account_sid = remote.account_sid
        if remote.from_:
            message.our_number = remote.from_
        message.num_segments = remote.num_segments or message.num_segments
        message.sent_at = datetime.now(UTC)
        message.error_code = None
        message.error_message = None
        advance_status(message, remote.status)
        _attach_pending_events(session, message)
        return message


def _record_failure(
    db: Database, message_id: int, sender: Sender, to: str, exc: TwilioError, keep_pending: bool
) -> None:
    with db.session() as session:
        message = session.get_one(Message, message_id)
        message.error_code = exc.code
        message.error_message = exc.message
        if exc.code == 21610:
            set_opt_out(session, sender.key, to, True, "twilio 21610")
        if not (keep_pending and exc.retryable):
            message.status = "failed"


def mark_read(db: Database, number: str) -> None:
    """Mark a conversation as read."""
    with db.session() as session:
        session.execute(
            update(Contact)
            .where(Contact.number == number)
            .values(unread_count=0, last_read_at=utcnow())
        )
