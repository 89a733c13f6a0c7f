"""JSON shapes of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twilio_chat.db.models import Message, StatusEvent
from twilio_chat.inbox.conversations import ConversationSummary
from twilio_chat.twilio.errors import describe_error


def iso(value: datetime | None) -> str | None:
    """Format a timestamp as ISO 8601 (UTC) or None."""
    return value.isoformat() if value else None


def message_json(m: Message) -> dict[str, Any]:
    """Serialize one stored message."""
    ours = m.our_number or m.messaging_service_sid
    inbound = m.direction == "inbound"
    return {
        "id": m.id,
        "sid": m.sid,
        "direction": m.direction,
        "from": m.contact_number if inbound else ours,
        "to": ours if inbound else m.contact_number,
        "participant": m.contact_number,
        "our_number": m.our_number,
        "messaging_service_sid": m.messaging_service_sid,
        "body": m.body,
        "media": m.media or [],
        "status": m.status,
        "error_code": m.error_code,
        "error_message": (m.error_message or describe_error(m.error_code))
        if m.error_code
        else m.error_message,
        "num_segments": m.num_segments,
        "source": m.source,
        "reply_to_sid": m.reply_to_sid,
        "redacted": m.redacted,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "sent_at": iso(m.sent_at),
    }


def event_json(e: StatusEvent) -> dict[str, Any]:
    """Serialize one status callback."""
    return {
        "status": e.status,
        "error_code": e.error_code,
        "received_at": iso(e.received_at),
    }


def conversation_json(c: ConversationSummary) -> dict[str, Any]:
    """Serialize one conversation summary."""
    return {
        "participant": c.contact.number,
        "name": c.contact.name,
        "unread_count": c.contact.unread_count,
        "opted_out": c.opted_out,
        "replies_paused": c.paused,
        "replies_paused_until": iso(c.contact.replies_paused_until),
        "last_message": message_json(c.last_message) if c.last_message else None,
        "last_message_at": iso(c.contact.last_message_at),
    }
