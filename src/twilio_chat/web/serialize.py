"""The REST API's answers, built as the models of `web.schemas` declare them."""

from __future__ import annotations

from collections.abc import Sequence

from flask import jsonify
from pydantic import BaseModel
from werkzeug.wrappers import Response

from twilio_chat.db.models import AuditEvent, Message, StatusEvent
from twilio_chat.inbox.conversations import ConversationSummary
from twilio_chat.twilio.errors import describe_error
from twilio_chat.twilio.gateway import RemoteMessage
from twilio_chat.web.schemas.answers import (
    AuditEventOut,
    ConversationOut,
    MediaItem,
    MessageOut,
    RemoteMessageOut,
    StatusEventOut,
    StoredMessage,
)


def answer(model: BaseModel, status: int = 200) -> Response:
    """Return a model as the JSON answer, with its fields' API names."""
    response = jsonify(model.model_dump(mode="json", by_alias=True))
    response.status_code = status
    return response


def _message_fields(m: Message) -> dict[str, object]:
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
        "media": [MediaItem.model_validate(item) for item in m.media or []],
        "status": m.status,
        "error_code": m.error_code,
        "error_message": (m.error_message or describe_error(m.error_code))
        if m.error_code
        else m.error_message,
        "num_segments": m.num_segments,
        "source": m.source,
        "reply_to_sid": m.reply_to_sid,
        "redacted": m.redacted,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "sent_at": m.sent_at,
    }


def message_out(m: Message) -> MessageOut:
    """Describe one stored message."""
    return MessageOut.model_validate(_message_fields(m))


def message_json(m: Message) -> dict[str, object]:
    """Serialize one stored message (as MessageOut)."""
    return message_out(m).model_dump(mode="json", by_alias=True)


def stored_message(m: Message, events: Sequence[StatusEvent]) -> StoredMessage:
    """Describe one stored message with its status callbacks."""
    return StoredMessage.model_validate(
        {**_message_fields(m), "events": [event_out(e) for e in events]}
    )


def event_out(e: StatusEvent) -> StatusEventOut:
    """Describe one status callback."""
    return StatusEventOut(status=e.status, error_code=e.error_code, received_at=e.received_at)


def remote_message_out(r: RemoteMessage) -> RemoteMessageOut:
    """Describe a message as Twilio has it."""
    return RemoteMessageOut.model_validate(
        {
            "sid": r.sid,
            "messaging_service_sid": r.messaging_service_sid,
            "from": r.from_,
            "to": r.to,
            "body": r.body,
            "status": r.status,
            "direction": r.direction,
            "num_segments": r.num_segments,
            "num_media": r.num_media,
            "error_code": r.error_code,
            "error_message": r.error_message,
            "date_created": r.date_created,
            "date_sent": r.date_sent,
        }
    )


def conversation_out(c: ConversationSummary) -> ConversationOut:
    """Describe one conversation summary."""
    return ConversationOut(
        participant=c.contact.number,
        name=c.contact.name,
        unread_count=c.contact.unread_count,
        opted_out=c.opted_out,
        replies_paused=c.paused,
        replies_paused_until=c.contact.replies_paused_until,
        last_message=message_out(c.last_message) if c.last_message else None,
        last_message_at=c.contact.last_message_at,
    )


def audit_event_out(e: AuditEvent) -> AuditEventOut:
    """Describe one audit log entry."""
    return AuditEventOut(
        id=e.id,
        at=e.at,
        actor=e.actor,
        action=e.action,
        target=e.target,
        detail=e.detail,
        ip=e.ip,
    )
