"""Pull messages from Twilio's list, upsert them by sid, and answer what we missed.

An inbound message found this way (it arrived while the app was down) gets its answer only if
it is newer than the moment the current reply mode was switched on, and only once: the reply
job and the reply row both have unique keys, so a restart never re-answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message, utcnow
from twilio_chat.errors import N_, Upstream
from twilio_chat.messaging import InboundFields, advance_status, store_inbound, touch_contact
from twilio_chat.replies.config import mode_since
from twilio_chat.settings import Settings
from twilio_chat.twilio.gateway import RemoteMessage, TwilioError, TwilioGateway


@dataclass
class SyncResult:
    """What a sync did."""

    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    replies_enqueued: int = 0
    messages: list[RemoteMessage] = field(default_factory=list)


def upsert(db: Database, settings: Settings, remote: RemoteMessage, result: SyncResult) -> None:
    """Store or update one message from Twilio's list, in its own transaction."""
    with db.session() as session:
        local = session.scalar(select(Message).where(Message.sid == remote.sid))
        if local is not None:
            changed = advance_status(local, remote.status, remote.error_code)
            if remote.error_code and local.error_code is None:
                local.error_code = remote.error_code
            result.updated += int(changed)
            return
        when = remote.date_sent or remote.date_created or utcnow()
        if remote.direction == "inbound":
            mode = mode_since(session)
            answer = mode is not None and when > mode.since
            outcome = store_inbound(
                session,
                settings,
                InboundFields(
                    sid=remote.sid,
                    sender=remote.from_ or "",
                    our_number=remote.to or "",
                    service_sid=remote.messaging_service_sid,
                    body=remote.body,
                    media=[],
                    num_segments=remote.num_segments,
                    account_sid=remote.account_sid,
                    received_at=when,
                ),
                answer=answer,
            )
            result.inserted += int(outcome.created)
            result.replies_enqueued += int(outcome.reply_enqueued)
            return
        message = Message(
            sid=remote.sid,
            account_sid=remote.account_sid,
            direction="outbound",
            our_number=remote.from_,
            messaging_service_sid=remote.messaging_service_sid,
            contact_number=remote.to or "",
            body=remote.body,
            media=[],
            status=remote.status,
            error_code=remote.error_code,
            error_message=remote.error_message,
            num_segments=remote.num_segments,
            source="twilio",
            created_at=when,
            sent_at=remote.date_sent,
        )
        session.add(message)
        session.flush()
        touch_contact(session, message, unread=False)
        result.inserted += 1


def sync(
    db: Database,
    gateway: TwilioGateway,
    settings: Settings,
    *,
    to: str | None = None,
    from_: str | None = None,
    date_sent: datetime | None = None,
    date_sent_before: datetime | None = None,
    date_sent_after: datetime | None = None,
    limit: int | None = None,
) -> SyncResult:
    """Page through Twilio's message list with these filters and upsert every message."""
    result = SyncResult()
    try:
        for remote in gateway.iter_messages(
            to=to,
            from_=from_,
            date_sent=date_sent,
            date_sent_before=date_sent_before,
            date_sent_after=date_sent_after,
            limit=limit,
            page_size=min(limit or 200, 1000),
        ):
            result.fetched += 1
            result.messages.append(remote)
            upsert(db, settings, remote, result)
    except TwilioError as exc:
        raise Upstream(
            N_("Twilio refused: %(reason)s"), exc.code, exc.status, reason=exc.message
        ) from None
    return result
