"""Sending: validate a request, write the outbound row, call Twilio once, record what it said."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Contact, Message, StatusEvent, utcnow
from twilio_chat.errors import N_, InvalidInput, NotFound, OptedOut, Upstream
from twilio_chat.messaging.shared import (
    MAX_BODY,
    MAX_MEDIA,
    advance_status,
    count_on_conversation,
    get_or_create_contact,
    is_opted_out,
    set_opt_out,
)
from twilio_chat.settings import Settings, is_e164
from twilio_chat.telemetry.metrics import SENDS
from twilio_chat.twilio.gateway import RemoteMessage, TwilioError, TwilioGateway
from twilio_chat.twilio.segments import count_segments

log = logging.getLogger(__name__)
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")  # a Twilio sid: two letters, 32 hex digits


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
        earlier = session.scalar(select(Message).where(Message.reply_to_sid == req.reply_to_sid))
        if earlier is not None:
            return earlier, False
    now = utcnow()
    message = Message(**_outbound_row(req, sender, now))
    session.add(message)
    session.flush()  # its id, for the conversation's summary and the status callback's URL
    count_on_conversation(session, req.to, message.id, now, unread=False)
    if req.source in HUMAN_SOURCES and settings.ai_human_pause_minutes:
        # A person took over: automatic replies pause in this conversation.
        contact = get_or_create_contact(session, req.to)
        contact.replies_paused_until = now + timedelta(minutes=settings.ai_human_pause_minutes)
    return message, True


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
        log.warning("send to %s refused by Twilio: %s (%s)", req.to, exc.message, exc.code)
        _record_failure(db, message_id, sender, req.to, exc, keep_pending=not req.final_try)
        raise Upstream(
            N_("Twilio refused the message: %(reason)s"), exc.code, exc.status, reason=exc.message
        ) from None
    SENDS.labels(remote.status, "").inc()
    message = _record_sent(db, message_id, remote)
    log.info("sent %s to %s: %s", message.sid, req.to, message.status)
    return message


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


def _attach_pending_events(session: Session, message: Message) -> None:
    """Match status callbacks that arrived before we knew the message's sid."""
    events = session.scalars(
        select(StatusEvent)
        .where(StatusEvent.message_sid == message.sid, StatusEvent.message_id.is_(None))
        .order_by(StatusEvent.id)
    ).all()
    for event in events:
        event.message_id = message.id
        advance_status(message, event.status, event.error_code)


RETRYABLE = ("failed", "undelivered")


def retry(
    db: Database, gateway: TwilioGateway, settings: Settings, sid: str, source: str
) -> Message:
    """Send a failed message again, as a new message with the same text and media, and return it.

    NotFound for a sid we do not store; InvalidInput (field "sid") unless it is one of our own
    that failed. The new message goes through every rule a send does (an opt-out included).
    """
    with db.read() as session:
        old = session.scalar(select(Message).where(Message.sid == sid))
        if old is None:
            raise NotFound(N_("There is no message %(sid)s."), "sid", sid=sid)
        if old.direction != "outbound" or old.status not in RETRYABLE:
            raise InvalidInput(N_("Only a message that failed can be sent again."), "sid")
        request = SendRequest(
            to=old.contact_number,
            body=old.body or "",
            media_urls=[item["url"] for item in old.media or [] if item.get("url")],
            messaging_service_sid=old.messaging_service_sid,
            source=source,
        )
    return send(db, gateway, settings, request)
