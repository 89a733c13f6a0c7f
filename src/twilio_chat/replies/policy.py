"""Who answers an inbound message, and with what: decided here and nowhere else.

Exactly one of, in this order: nobody (keyword, opted out, not E.164, our own number, paused,
loop guard); AI when enabled (and the sender matches AI_TARGET_NUMBER if set); the fixed
auto-reply when enabled; otherwise the CHAT_MODE engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from twilio_chat.db.models import Contact, Message, utcnow
from twilio_chat.messaging import is_opted_out, keyword_of, opt_out_senders, reason_not_to_answer
from twilio_chat.replies.config import AISettings, get_ai, get_auto_reply
from twilio_chat.replies.engines import build_chat_engine
from twilio_chat.settings import Settings

AUTOMATIC_SOURCES = ("auto_reply", "ai", "engine")


@dataclass(frozen=True)
class Decision:
    """Who answers: mode is none, ai, auto_reply or engine; text for the fixed modes."""

    mode: str
    reason: str
    text: str | None = None
    ai: AISettings | None = None


def nobody_reason(
    session: Session, settings: Settings, message: Message, keyword: str | None
) -> str | None:
    """Return why nobody may answer this inbound message now, or None when someone must."""
    number = message.contact_number
    opted = is_opted_out(session, opt_out_senders(message), number)
    paused = session.scalar(select(Contact.replies_paused_until).where(Contact.number == number))
    return reason_not_to_answer(settings, message, keyword, opted, paused)


def _loop_guard_hit(session: Session, settings: Settings, number: str) -> bool:
    """Tell whether this conversation had its hour's share of automatic replies already."""
    count = session.scalar(
        select(func.count(Message.id)).where(
            Message.contact_number == number,
            Message.direction == "outbound",
            Message.source.in_(AUTOMATIC_SOURCES),
            Message.created_at >= utcnow() - timedelta(hours=1),
        )
    )
    return (count or 0) >= settings.auto_reply_max_per_hour


def decide(session: Session, settings: Settings, message: Message) -> Decision:
    """Decide who answers this inbound message, and with what text for the fixed modes."""
    reason = nobody_reason(session, settings, message, keyword_of(message.body))
    if reason is not None:
        return Decision("none", reason)
    if _loop_guard_hit(session, settings, message.contact_number):
        return Decision(
            "none", f"loop guard: {settings.auto_reply_max_per_hour} automatic replies this hour"
        )
    ai = get_ai(session, settings)
    if ai.enabled and (not ai.target_number or ai.target_number == message.contact_number):
        return Decision("ai", "AI is enabled", ai=ai)
    auto_reply = get_auto_reply(session)
    if auto_reply.enabled and auto_reply.message:
        return Decision("auto_reply", "auto-reply is enabled", text=auto_reply.message)
    text = build_chat_engine(settings.chat_mode).reply(message.body)
    if not text:
        return Decision("none", f"the {settings.chat_mode} engine has no answer")
    return Decision("engine", f"chat engine {settings.chat_mode}", text=text)
