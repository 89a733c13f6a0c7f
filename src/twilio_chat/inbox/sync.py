"""Pull messages from Twilio's list, upsert them by sid, and answer what we missed.

Catch-up answers a conversation at most once: of the texts it missed while the app was down,
only the newest gets a reply job, and only if it is newer than the moment the current reply
mode was switched on and than every inbound text already stored in that conversation (one that
arrived since has had its own answer). Never twice: the reply job and the reply row both have
unique keys, so a restart never re-answers. The messages are stored oldest first, each at the
time Twilio sent it, so the threads (ordered by time) show them where they belong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from twilio_chat.db.engine import Database
from twilio_chat.db.models import Message, utcnow
from twilio_chat.errors import N_, Upstream
from twilio_chat.messaging import (
    InboundFields,
    advance_status,
    count_on_conversation,
    store_inbound,
)
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


def _sent_at(remote: RemoteMessage, now: datetime) -> datetime:
    """Return when a message of Twilio's list was sent (or created; else `now`): its time here."""
    return remote.date_sent or remote.date_created or now


def newest_per_conversation(remotes: Sequence[RemoteMessage], now: datetime) -> set[str]:
    """Return the sids of the newest inbound text of each conversation (by sender) in a list."""
    newest: dict[str, RemoteMessage] = {}
    for remote in remotes:
        if remote.direction != "inbound":
            continue
        key = remote.from_ or ""
        seen = newest.get(key)
        if seen is None or (_sent_at(remote, now), remote.sid) > (_sent_at(seen, now), seen.sid):
            newest[key] = remote
    return {remote.sid for remote in newest.values()}


def upsert(
    db: Database,
    settings: Settings,
    remote: RemoteMessage,
    result: SyncResult,
    may_answer: bool = True,
) -> None:
    """Store or update one message from Twilio's list, in its own transaction.

    `may_answer`: an inbound text new to us may get a reply job (only the newest of its
    conversation in a sync does); it does if it is also newer than the reply mode and than
    every inbound text of the conversation stored already.
    """
    with db.session() as session:
        local = session.scalar(select(Message).where(Message.sid == remote.sid))
        if local is not None:
            changed = advance_status(local, remote.status, remote.error_code)
            if remote.error_code and local.error_code is None:
                local.error_code = remote.error_code
            result.updated += int(changed)
            return
        when = _sent_at(remote, utcnow())
        if remote.direction == "inbound":
            mode = mode_since(session)
            answer = may_answer and mode is not None and when > mode.since
            if answer:
                latest = session.scalar(
                    select(func.max(Message.created_at)).where(
                        Message.contact_number == (remote.from_ or ""),
                        Message.direction == "inbound",
                    )
                )
                answer = latest is None or when > latest
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
        count_on_conversation(session, message.contact_number, message.id, when, unread=False)
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
    """Page through Twilio's message list with these filters and upsert every message.

    The whole list is read first (newest first, as Twilio gives it), then stored oldest first.
    When Twilio fails part-way, what it gave is stored before the error is raised: its list
    begins with the newest messages, the ones a catch-up answers.
    """
    result = SyncResult()
    failure: TwilioError | None = None
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
    except TwilioError as exc:
        failure = exc
    now = utcnow()
    newest = newest_per_conversation(result.messages, now)
    for remote in sorted(result.messages, key=lambda m: (_sent_at(m, now), m.sid)):
        upsert(db, settings, remote, result, may_answer=remote.sid in newest)
    if failure is not None:
        raise Upstream(
            N_("Twilio refused: %(reason)s"), failure.code, failure.status, reason=failure.message
        )
    return result
