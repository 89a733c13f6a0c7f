"""What inbound texts, status callbacks and sends share: the tables, the keywords, the status
order, the conversations' summaries and the opt-out ledger."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import Table, bindparam, case, literal_column, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from twilio_chat.db.engine import upsert_into
from twilio_chat.db.models import Contact, Message, OptOut, StatusEvent, as_utc, utcnow
from twilio_chat.settings import Settings, has_e164_form
from twilio_chat.twilio.errors import describe_error
from twilio_chat.twilio.keywords import HELP_KEYWORDS, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS

# The tables, for the Core statements that store a row once under concurrency (ON CONFLICT).
MESSAGES = cast(Table, Message.__table__)
CONTACTS = cast(Table, Contact.__table__)
OPT_OUTS = cast(Table, OptOut.__table__)
STATUS_EVENTS = cast(Table, StatusEvent.__table__)
MAX_BODY = 1600
MAX_MEDIA = 10

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


def count_on_conversation(
    session: Session, number: str, message_id: int, at: datetime, unread: bool
) -> datetime | None:
    """Count a newly stored message on its conversation's summary; return its reply pause."""
    return count_on_conversations(session, [(number, message_id, at, unread)])[number].paused


class Counted(NamedTuple):
    """A conversation as a message was counted on it: its reply pause, and any opt-outs."""

    paused: datetime | None
    has_opt_outs: bool  # the number stands opted out of at least one of our senders


def count_on_conversations(
    session: Session, messages: Sequence[tuple[str, int, datetime, bool]]
) -> dict[str, Counted]:
    """Count newly stored messages (number, id, time, unread) on their conversations' summaries.

    Returns what each conversation then is (`Counted`). One upsert per conversation, all in one
    statement, safe under concurrency: a conversation is created if new, counts its unread
    messages, and takes the newest as its last message unless that is older than the last one
    it has (a spooled or synced text stored late). Conversations are written in the order of
    their numbers, so two transactions never wait on each other's rows in a cycle.
    """
    rows: dict[str, dict[str, Any]] = {}
    for number, message_id, at, unread in messages:
        row = rows.get(number)
        if row is None:
            rows[number] = {
                "number": number,
                "unread_count": int(unread),
                "last_message_id": message_id,
                "last_message_at": at,
                "created_at": utcnow(),
            }
            continue
        row["unread_count"] += int(unread)
        if at >= row["last_message_at"]:  # the later of two at the same time wins, as in order
            row["last_message_id"], row["last_message_at"] = message_id, at
    conn = session.connection()
    upsert = _summary_upsert(conn.dialect.name)
    found = conn.execute(upsert, [rows[number] for number in sorted(rows)])
    return {number: Counted(paused, bool(opted)) for number, paused, opted in found}


@functools.cache
def _summary_upsert(dialect: str) -> Executable:
    """The upsert of a conversation's summary (built once per dialect)."""
    c = CONTACTS.c
    insert = upsert_into(dialect, CONTACTS)
    newer = or_(c.last_message_at.is_(None), insert.excluded.last_message_at >= c.last_message_at)
    upsert = insert.on_conflict_do_update(
        index_elements=[c.number],
        set_={
            "unread_count": c.unread_count + insert.excluded.unread_count,
            "last_message_id": case(
                (newer, insert.excluded.last_message_id), else_=c.last_message_id
            ),
            "last_message_at": case(
                (newer, insert.excluded.last_message_at), else_=c.last_message_at
            ),
        },
    )
    # Whether the number stands opted out of any sender. The outer row is named in SQL: the
    # subquery of a RETURNING clause is not correlated by SQLAlchemy.
    opted_out = select(OptOut.id).where(
        OptOut.number == literal_column("contacts.number"), OptOut.opted_out.is_(True)
    )
    return upsert.returning(c.number, c.replies_paused_until, opted_out.exists())


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
    return any(sender in senders for sender, _ in opted_out_among(session, [number]))


def opted_out_among(session: Session, numbers: Collection[str]) -> set[tuple[str, str]]:
    """Return the (sender, number) pairs of these numbers that stand opted out in the ledger."""
    if not numbers:
        return set()
    found = session.connection().execute(_opted_out_of(), {"numbers": sorted(set(numbers))})
    return {(sender, number) for sender, number in found}


@functools.cache
def _opted_out_of() -> Executable:
    """The read of the senders some numbers opted out of (built once)."""
    return select(OptOut.sender, OptOut.number).where(
        OptOut.number.in_(bindparam("numbers", expanding=True)), OptOut.opted_out.is_(True)
    )


# Who may be answered at all ----------------------------------------------------------------


class Inbound(Protocol):
    """What the rules read of an inbound message (a stored Message, or one being stored)."""

    @property
    def contact_number(self) -> str:
        """Return the sender's number."""

    @property
    def our_number(self) -> str | None:
        """Return the number it was sent to."""

    @property
    def messaging_service_sid(self) -> str | None:
        """Return the Messaging Service it came through, if any."""


def opt_out_senders(message: Inbound) -> list[str]:
    """Return the ledger keys an opt-out to this message's sender is kept under."""
    return [s for s in (message.our_number, message.messaging_service_sid) if s]


def reason_not_to_answer(
    settings: Settings,
    message: Inbound,
    keyword: str | None,
    opted_out: bool,
    paused_until: datetime | None,
) -> str | None:
    """Return why nobody may answer this inbound message automatically, or None.

    Nobody answers a keyword (Twilio answers STOP, START and HELP itself), a sender that is
    not a phone number, one of our own numbers (a loop), a sender who opted out, or a
    conversation whose automatic replies are paused.
    """
    if keyword is not None:
        return f"keyword ({keyword})"
    number = message.contact_number
    if not has_e164_form(number):  # a short code or a sender's name
        return "sender is not an E.164 number"
    if number in {settings.default_from, message.our_number}:
        return "sender is one of our own numbers"
    if opted_out:
        return "sender opted out"
    if paused_until is not None and as_utc(paused_until) > utcnow():
        return "automatic replies are paused for this conversation"
    return None


def to_int(value: Any, default: int) -> int:
    """Return a form value as a whole number, or `default` when it is missing or not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
