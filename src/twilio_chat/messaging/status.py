"""Delivery status callbacks: move a message's status forward, never back."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message, StatusEvent, utcnow
from twilio_chat.messaging.shared import advance_status, to_int


def callback_status(form: Mapping[str, str]) -> str:
    """Return the status a callback reports (MessageStatus, or the older SmsStatus)."""
    return (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()


def record_status(
    db: Database, form: Mapping[str, str], message_id_hint: int | None = None
) -> bool:
    """Keep a status callback as an event and advance its message; tell if the message is known.

    The message is found by its sid, or by `message_id_hint` (the `mid` the app put in the
    callback URL) when the callback came before the send's answer was recorded. A callback
    repeated with the same sid and status (Twilio retried it, or the spool replayed it) adds
    nothing. The message's row is locked while it moves, so two callbacks handled at once on
    PostgreSQL never move it backwards.
    """
    sid = form["MessageSid"]
    status = callback_status(form)
    error_code = to_int(form.get("ErrorCode"), 0) or None
    with db.session() as session:
        message = session.scalar(select(Message).where(Message.sid == sid).with_for_update())
        if message is None and message_id_hint is not None:
            message = session.scalar(
                select(Message).where(Message.id == message_id_hint).with_for_update()
            )
            if message is not None and message.sid not in (None, sid):
                message = None  # the hint names another message
            elif message is not None:
                message.sid = sid
        repeated = session.scalar(
            select(StatusEvent.id)
            .where(StatusEvent.message_sid == sid, StatusEvent.status == status)
            .limit(1)
        )
        if repeated is None:
            session.add(
                StatusEvent(
                    message_id=message.id if message is not None else None,
                    message_sid=sid,
                    status=status,
                    error_code=error_code,
                    payload=dict(form),
                    received_at=utcnow(),
                )
            )
            if message is not None and advance_status(message, status, error_code):
                message.updated_at = utcnow()
        return message is not None
