"""Inbound texts: read a webhook's form and store it, once per MessageSid, with its reply job.

`store_inbound` is the one way a text enters the database, whether it comes from a webhook,
the spool (a webhook kept while the database was away) or a sync with Twilio's message list.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from twilio_chat.db.engine import Database, upsert_into
from twilio_chat.db.models import Message, as_utc, utcnow
from twilio_chat.jobs import queue as jobs
from twilio_chat.messaging.shared import (
    MAX_MEDIA,
    MESSAGES,
    count_on_conversations,
    keyword_of,
    opt_out_senders,
    opted_out_among,
    reason_not_to_answer,
    set_opt_out,
    to_int,
)
from twilio_chat.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundResult:
    """What storing an inbound message did."""

    message_id: int
    created: bool
    keyword: str | None
    reply_enqueued: bool


@dataclass(frozen=True)
class InboundFields:
    """An inbound message as Twilio describes it (webhook or message list)."""

    sid: str
    sender: str
    our_number: str
    service_sid: str | None
    body: str
    media: list[dict[str, str]] = field(default_factory=list)
    num_segments: int = 1
    account_sid: str | None = None
    received_at: datetime | None = None
    opt_out_type: str | None = None

    @property
    def contact_number(self) -> str:
        """Return the sender's number (the conversation it belongs to)."""
        return self.sender

    @property
    def messaging_service_sid(self) -> str | None:
        """Return the Messaging Service it came through, if any."""
        return self.service_sid


def parse_media(form: Mapping[str, str]) -> list[dict[str, str]]:
    """Collect MediaUrlN / MediaContentTypeN pairs from a Twilio webhook form."""
    count = to_int(form.get("NumMedia"), 0)
    media = []
    for i in range(min(count, MAX_MEDIA)):
        url = form.get(f"MediaUrl{i}")
        if url:
            media.append({"url": url, "content_type": form.get(f"MediaContentType{i}") or ""})
    return media


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
    )


def record_inbound(
    db: Database,
    settings: Settings,
    form: Mapping[str, str],
    received_at: datetime | None = None,
) -> InboundResult:
    """Store an inbound webhook's message in a transaction of its own (see `store_inbound`).

    `received_at` is when the webhook arrived, if that was earlier (a spooled webhook). The
    text is on disk when this returns: the caller may then tell Twilio it has it.
    """
    with db.session(durable=True) as session:
        return store_inbound(session, settings, inbound_fields(form, received_at))


def store_inbound(
    session: Session, settings: Settings, fields: InboundFields, answer: bool = True
) -> InboundResult:
    """Store one inbound message in the caller's transaction (see `store_inbound_many`)."""
    return store_inbound_many(session, settings, [fields], answer)[0]


def store_inbound_many(
    session: Session, settings: Settings, texts: Sequence[InboundFields], answer: bool = True
) -> list[InboundResult]:
    """Store inbound messages once per sid, in the caller's transaction, with their reply jobs.

    In the same transaction, as if they arrived one after another in this order: each message
    (nothing if its sid is stored already: a webhook Twilio retried, a spool replay, a sync),
    its conversation's summary, the opt-out ledger when it is STOP or START, and a reply job
    when someone must answer it. `answer=False` stores them without reply jobs (synced texts
    that are not the newest of their conversation). Each step is one statement for all of the
    texts, so a batch costs about what one text does.
    """
    now = utcnow()
    firsts: dict[str, tuple[InboundFields, datetime]] = {}  # each sid's first text, in order
    for text in texts:
        at = now if text.received_at is None else as_utc(text.received_at)
        firsts.setdefault(text.sid, (text, at))
    conn = session.connection()  # Core statements: no ORM objects to track
    rows = [_message_row(text, at) for text, at in firsts.values()]
    inserted = conn.execute(_insert_message(conn.dialect.name), rows)
    ids: dict[str, int] = {sid: message_id for message_id, sid in inserted}
    new = [(text, at) for sid, (text, at) in firsts.items() if sid in ids]
    known = [sid for sid in firsts if sid not in ids]
    if known:  # stored before (a webhook Twilio retried, a replay): those rows stay as they are
        found = session.execute(select(Message.sid, Message.id).where(Message.sid.in_(known)))
        ids.update({str(sid): message_id for sid, message_id in found})
    summary = [(text.sender, ids[text.sid], at, True) for text, at in new]
    counted = count_on_conversations(session, summary) if summary else {}
    # The opt-outs as they stand, read only for numbers that have any (most have none).
    ledger = opted_out_among(session, {n for n, c in counted.items() if c.has_opt_outs})
    outcomes: dict[str, InboundResult] = {}
    replies: list[tuple[dict[str, Any], str | None]] = []
    for text, _ in new:
        log.info("inbound text %s from %s stored", text.sid, text.sender)
        keyword = keyword_of(text.body, text.opt_out_type)
        senders = opt_out_senders(text)
        if keyword in ("opt_out", "opt_in"):  # the ledger as it stands for the texts after this
            opted_out = keyword == "opt_out"
            for sender in senders:
                why = f"keyword {text.body.strip()}"
                set_opt_out(session, sender, text.sender, opted_out, why)
                (ledger.add if opted_out else ledger.discard)((sender, text.sender))
        opted = any((sender, text.sender) in ledger for sender in senders)
        reason = reason_not_to_answer(settings, text, keyword, opted, counted[text.sender].paused)
        if reason is not None:
            log.info("inbound text %s left unanswered: %s", text.sid, reason)
        enqueue = answer and reason is None
        if enqueue:
            replies.append(({"message_id": ids[text.sid]}, f"reply:{text.sid}"))
        outcomes[text.sid] = InboundResult(ids[text.sid], True, keyword, enqueue)
    jobs.enqueue_many(session, "reply", replies, max_attempts=settings.job_max_attempts)
    results = []
    for text in texts:  # the first text of a new sid created it; any other found it stored
        outcome = outcomes.pop(text.sid, None)
        keyword = keyword_of(text.body, text.opt_out_type)
        results.append(outcome or InboundResult(ids[text.sid], False, keyword, False))
    return results


@functools.cache
def _insert_message(dialect: str) -> Executable:
    """The insert of an inbound message that stores a sid once (built once per dialect)."""
    insert = upsert_into(dialect, MESSAGES).on_conflict_do_nothing(index_elements=["sid"])
    return insert.returning(MESSAGES.c.id, MESSAGES.c.sid)


def _message_row(fields: InboundFields, at: datetime) -> dict[str, Any]:
    """Return the messages row of an inbound message."""
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
