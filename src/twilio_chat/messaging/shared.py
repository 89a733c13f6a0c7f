"""What inbound texts, status callbacks and sends share: the tables, the keywords, the status
order, the conversations' summaries and the opt-out ledger."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, case, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from twilio_chat.db.engine import CountedStatement, DriverStatement, per_driver, upsert_into
from twilio_chat.db.models import Contact, Message, OptOut, StatusEvent, utcnow
from twilio_chat.twilio.errors import describe_error
from twilio_chat.twilio.keywords import HELP_KEYWORDS, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS

# The tables, for the hot path's Core statements (no ORM unit of work per webhook).
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


def touch_contact(session: Session, message: Message, unread: bool) -> None:
    """Update the conversation summary for a newly stored message."""
    contact = get_or_create_contact(session, message.contact_number)
    if contact.last_message_at is None or message.created_at >= contact.last_message_at:
        contact.last_message_id = message.id
        contact.last_message_at = message.created_at
    if unread:
        contact.unread_count = (contact.unread_count or 0) + 1


CONTACT_KEYS = ["number", "unread_count", "last_message_id", "last_message_at", "created_at"]


def contact_upsert(dialect: Dialect, rows: list[dict[str, Any]] | None = None) -> ClauseElement:
    """Build the upsert of conversations' summaries (CONTACT_KEYS), one row each or `rows`.

    Each row counts its new messages as unread and, unless they are older than the
    conversation's last one (a spooled webhook stored late), sets its last message.
    """
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
def summary_statement(dialect: Dialect) -> DriverStatement:
    """Return one conversation's summary upsert, answering its reply pause (once per driver)."""
    upsert = cast(Any, contact_upsert(dialect)).returning(CONTACTS.c.replies_paused_until)
    return DriverStatement(upsert, dialect, CONTACT_KEYS)


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
    rows = _ledger_statement(conn.dialect).run(
        conn, [{"number": number, "sender": s} for s in senders]
    )
    return any(opted for (opted,) in rows)


@per_driver
def _ledger_statement(dialect: Dialect) -> CountedStatement:
    """Whether a number opted out of any of n senders (compiled once per driver and count)."""
    o = OPT_OUTS.c

    def opted_out(n: int) -> ClauseElement:
        senders = [bindparam(f"sender_{i}", type_=o.sender.type) for i in range(n)]
        number = bindparam("number_0", type_=o.number.type)
        return select(o.opted_out).where(o.sender.in_(senders), o.number == number)

    return CountedStatement(dialect, opted_out)


def to_int(value: Any, default: int) -> int:
    """Return a form value as a whole number, or `default` when it is missing or not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
