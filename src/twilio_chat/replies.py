"""Who answers an inbound message, and with what: decided here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .chat_logic import build_chat_engine
from .models import AutoReplyConfig, Contact, Message, OptOut, utcnow
from .settings import Settings, is_e164


@dataclass(frozen=True)
class Reply:
    """An automatic answer: its text and which mode produced it."""

    text: str
    source: str  # auto_reply | engine


def nobody_reason(
    session: Session, settings: Settings, message: Message, keyword: str | None
) -> str | None:
    """Return why nobody may answer this inbound message, or None when someone must."""
    if keyword is not None:
        return f"keyword ({keyword})"
    number = message.contact_number
    if not is_e164(number):
        return "sender is not an E.164 number"
    if number in {settings.default_from, message.our_number}:
        return "sender is one of our own numbers"
    senders = [s for s in (message.our_number, message.messaging_service_sid) if s]
    opted = session.scalar(
        select(OptOut.id).where(
            OptOut.number == number, OptOut.sender.in_(senders), OptOut.opted_out.is_(True)
        )
    )
    if opted is not None:
        return "sender opted out"
    paused = session.scalar(select(Contact.replies_paused_until).where(Contact.number == number))
    if paused is not None and paused > utcnow():
        return "automatic replies are paused for this conversation"
    return None


def should_answer(
    session: Session, settings: Settings, message: Message, keyword: str | None
) -> bool:
    """Tell whether someone must answer this inbound message (so a reply job is written)."""
    return nobody_reason(session, settings, message, keyword) is None


def choose_reply(session: Session, settings: Settings, message: Message) -> Reply | None:
    """Pick the answer: the fixed auto-reply when enabled, else the CHAT_MODE engine."""
    from .messaging import keyword_of  # local: messaging imports this module

    if nobody_reason(session, settings, message, keyword_of(message.body)) is not None:
        return None
    auto = session.get(AutoReplyConfig, 1)
    if auto is not None and auto.enabled and auto.message:
        return Reply(auto.message, "auto_reply")
    text = build_chat_engine(settings.chat_mode).reply(message.body)
    return Reply(text, "engine") if text else None
