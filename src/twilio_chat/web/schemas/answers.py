"""The answers: each field the API returns, exactly (an unknown field is a broken contract)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
)

from twilio_chat.web.schemas.base import Answer, Timestamp

# Answers ----------------------------------------------------------------------------------


class ErrorDetail(Answer):
    """What went wrong, in the request's language, and the field at fault."""

    code: str | int = Field(description="Ours, or Twilio's error code on 502")
    message: str
    field: str | None


class ErrorAnswer(Answer):
    """Every error the API answers."""

    error: ErrorDetail


class MediaItem(Answer):
    """A picture, audio or video of an MMS."""

    url: str
    content_type: str


class MessageOut(Answer):
    """A stored message."""

    id: int
    sid: str | None
    direction: Literal["inbound", "outbound"]
    from_: str | None = Field(alias="from")
    to: str | None
    participant: str
    our_number: str | None
    messaging_service_sid: str | None
    body: str
    media: list[MediaItem]
    status: str
    error_code: int | None
    error_message: str | None
    num_segments: int
    source: str | None
    reply_to_sid: str | None
    redacted: bool
    created_at: Timestamp
    updated_at: Timestamp
    sent_at: Timestamp | None


class StatusEventOut(Answer):
    """A status callback Twilio sent for a message."""

    status: str
    error_code: int | None
    received_at: Timestamp


class StoredMessage(MessageOut):
    """A stored message with its status callbacks, oldest first."""

    events: list[StatusEventOut]


class RemoteMessageOut(Answer):
    """A message as Twilio describes it."""

    sid: str
    messaging_service_sid: str | None
    from_: str | None = Field(alias="from")
    to: str | None
    body: str
    status: str
    direction: str
    num_segments: int
    num_media: int
    error_code: int | None
    error_message: str | None
    date_created: Timestamp | None
    date_sent: Timestamp | None


class MessageAnswer(Answer):
    """One message just sent."""

    message: MessageOut


class MessageDetail(Answer):
    """One message: ours with its status callbacks, or Twilio's record of it."""

    message: StoredMessage | RemoteMessageOut
    stored: bool = Field(description="True: from our store; false: Twilio's record")


class MessagePage(Answer):
    """A page of stored messages, newest first."""

    messages: list[MessageOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class StoredCounts(Answer):
    """What a sync wrote."""

    inserted: int
    updated: int
    replies_enqueued: int


class RemoteMessageList(Answer):
    """Twilio's messages, newest first, and what of them was stored here."""

    messages: list[RemoteMessageOut]
    stored: StoredCounts


class Stats(Answer):
    """The dashboard's statistics."""

    inbound_today: int = Field(description="Since midnight UTC")
    outbound_today: int = Field(description="Since midnight UTC")
    inbound_7d: int
    outbound_7d: int
    delivered_7d: int = Field(description="Delivered or read")
    failed_7d: int = Field(description="Undelivered or failed")
    delivery_rate: float | None = Field(
        description="Delivered over settled outbound texts in 7 days; null with none settled"
    )
    opted_out: int
    jobs_waiting: int


class StatsAnswer(Answer):
    """The dashboard's statistics."""

    stats: Stats


class RedactAnswer(Answer):
    """A message's body erased at Twilio and here."""

    redacted: bool
    sid: str
    message: MessageOut | None = Field(description="Ours, or null when we do not store it")


class DeleteAnswer(Answer):
    """A message deleted at Twilio and here."""

    deleted: bool
    sid: str


class ConversationOut(Answer):
    """A conversation with one number."""

    participant: str
    name: str | None
    unread_count: int
    opted_out: bool
    replies_paused: bool
    replies_paused_until: Timestamp | None
    last_message: MessageOut | None
    last_message_at: Timestamp | None


class ConversationPage(Answer):
    """A page of conversations, latest activity first."""

    conversations: list[ConversationOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class Thread(Answer):
    """A conversation and a page of its messages, oldest first."""

    conversation: ConversationOut
    messages: list[MessageOut]
    next_cursor: int | None = Field(description="`before` of older messages; null at the start")


class ContactAnswer(Answer):
    """A contact's name."""

    participant: str
    name: str | None


class PauseAnswer(Answer):
    """Until when automatic replies are paused (null: they are not)."""

    participant: str
    replies_paused_until: Timestamp | None


class SimulateAnswer(Answer):
    """The simulated text, and how the app's webhook answered it."""

    sid: str
    from_: str = Field(alias="from")
    to: str
    body: str
    webhook_status: int


class AuditEventOut(Answer):
    """Who did what, when."""

    id: int
    at: Timestamp
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    ip: str | None


class AuditPage(Answer):
    """A page of the audit log, newest first."""

    events: list[AuditEventOut]
    next_cursor: int | None = Field(description="`before` of the next page; null at the end")


class EventsAnswer(Answer):
    """New or changed messages since the cursor, and the cursor to ask with next."""

    cursor: str
    messages: list[MessageOut]


ReplyMode = Annotated[
    str, Field(description="off, auto_reply, ai, or a chat engine's name (echo, keywords, …)")
]


class OpeningHoursOut(Answer):
    """One day's opening hours."""

    start: str
    end: str


class BusinessHoursOut(Answer):
    """A weekly schedule in a time zone; a day left out is closed."""

    timezone: str
    days: dict[str, OpeningHoursOut]


class AutoReplyConfig(Answer):
    """The fixed auto-reply, when it may answer, and which mode answers now."""

    enabled: bool
    message: str
    max_length: int
    window_hours: int
    outside_hours_only: bool
    business_hours: BusinessHoursOut | None
    ai_enabled: bool
    active_mode: ReplyMode


class Automation(Answer):
    """Who answers texts automatically now, since when, and what one may choose."""

    mode: ReplyMode
    chosen: bool = Field(description="false: nobody chose yet; the mode follows the settings")
    since: Timestamp | None
    modes: list[str]


class AIConfig(Answer):
    """The AI config: the key only as a hint; where each value came from."""

    enabled: bool
    api_key_set: bool
    api_key_hint: str | None
    model: str
    temperature: float
    system_prompt: str
    target_number: str | None
    history_limit: int
    max_segments: int
    base_url: str | None
    fallback_text: str | None
    sources: dict[str, Literal["environment", "default", "stored"]]
    auto_reply_enabled: bool
    active_mode: ReplyMode


class AITestAnswer(Answer):
    """The model's answer to the test; nothing was sent."""

    ok: bool
    model: str
    answer: str
