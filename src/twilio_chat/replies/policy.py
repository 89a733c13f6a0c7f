"""Who answers an inbound message, and with what: decided here and nowhere else.

Nobody, when: a keyword, opted out, not E.164, our own number, paused, the loop guard, or the
mode is off. Otherwise the mode (replies.config): AI (only the AI target number's texts when
one is set), the fixed auto-reply (at most once per conversation within its window, and only
outside business hours when so set), or a chat engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from twilio_chat.db.models import Contact, Message, utcnow
from twilio_chat.messaging import is_opted_out, keyword_of, opt_out_senders, reason_not_to_answer
from twilio_chat.replies import hours
from twilio_chat.replies.config import (
    AI,
    AUTO_REPLY,
    OFF,
    AISettings,
    current_mode,
    get_ai,
    get_auto_reply,
)
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
    mode = current_mode(session, settings)
    if mode == OFF:
        return Decision("none", "automatic replies are off")
    if mode == AI:
        ai = get_ai(session, settings)
        if ai.target_number and ai.target_number != message.contact_number:
            return Decision("none", "AI answers only its target number")
        return Decision("ai", "AI is on", ai=ai)
    if mode == AUTO_REPLY:
        return _auto_reply(session, message)
    try:
        engine = build_chat_engine(mode)
    except ValueError:
        return Decision("none", f"chat engine {mode} is not installed")
    text = engine.reply(message.body)
    if not text:
        return Decision("none", f"the {mode} engine has no answer")
    return Decision("engine", f"chat engine {mode}", text=text)


def _auto_reply(session: Session, message: Message) -> Decision:
    """The fixed auto-reply, unless it answered this conversation lately or the shop is open."""
    auto = get_auto_reply(session)
    if not auto.message:
        return Decision("none", "the auto-reply has no message")
    if auto.window_hours:
        since = utcnow() - timedelta(hours=auto.window_hours)
        answered = session.scalar(
            select(Message.id)
            .where(
                Message.contact_number == message.contact_number,
                Message.direction == "outbound",
                Message.source == "auto_reply",
                Message.created_at >= since,
            )
            .limit(1)
        )
        if answered is not None:
            return Decision("none", f"auto-reply sent within the last {auto.window_hours} h")
    if auto.outside_hours_only and hours.is_open(auto.business_hours, utcnow()):
        return Decision("none", "within business hours")
    return Decision("auto_reply", "auto-reply is on", text=auto.message)
