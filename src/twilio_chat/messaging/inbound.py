"""Inbound texts: read a webhook's form and store it, once per MessageSid, with its reply job.

`store_inbound` is the one way a text enters the database, whether it comes from a webhook,
the spool (a webhook kept while the database was away) or a sync with Twilio's message list.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
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
    count_on_conversation,
    is_opted_out,
    keyword_of,
    opt_out_senders,
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
    """Store an inbound message once per sid, in the caller's transaction, with its reply job.

    In the same transaction: the message (nothing if its sid is stored already: a webhook
    Twilio retried, a spool replay, a sync), its conversation's summary, the opt-out ledger
    when it is STOP or START, and a reply job when someone must answer it. `answer=False`
    stores it without a reply job (a synced text that is not the newest of its conversation).
    """
    keyword = keyword_of(fields.body, fields.opt_out_type)
    now = utcnow()
    at = now if fields.received_at is None else as_utc(fields.received_at)
    conn = session.connection()  # Core statements: one row each, no ORM objects to track
    row = _message_row(fields, at)
    message_id: int | None = conn.execute(_insert_message(conn.dialect.name), row).scalar()
    if message_id is None:
        stored = session.scalar(select(Message.id).where(Message.sid == fields.sid))
        assert stored is not None  # the conflict was on this sid
        return InboundResult(stored, False, keyword, False)
    log.info("inbound text %s from %s stored", fields.sid, fields.sender)
    paused = count_on_conversation(session, fields.sender, message_id, at, unread=True)
    senders = opt_out_senders(fields)
    if keyword in ("opt_out", "opt_in"):
        for sender in senders:
            opted_out = keyword == "opt_out"
            set_opt_out(session, sender, fields.sender, opted_out, f"keyword {fields.body.strip()}")
        session.flush()  # the ledger as it now stands, for the read below
    opted = is_opted_out(session, senders, fields.sender)
    reason = reason_not_to_answer(settings, fields, keyword, opted, paused)
    if reason is not None:
        log.info("inbound text %s left unanswered: %s", fields.sid, reason)
    enqueue = answer and reason is None
    if enqueue:
        jobs.enqueue(
            session,
            "reply",
            {"message_id": message_id},
            unique_key=f"reply:{fields.sid}",
            max_attempts=settings.job_max_attempts,
        )
    return InboundResult(message_id, True, keyword, enqueue)


@functools.cache
def _insert_message(dialect: str) -> Executable:
    """The insert of an inbound message that stores a sid once (built once per dialect)."""
    insert = upsert_into(dialect, MESSAGES).on_conflict_do_nothing(index_elements=["sid"])
    return insert.returning(MESSAGES.c.id)


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
